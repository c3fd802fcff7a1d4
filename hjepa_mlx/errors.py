"""The one exception type for mistakes a user can fix (bad config, missing data, corrupt file).

Entry points catch it, print its message on one line to stderr (no traceback) and exit with code 2.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that says what is wrong and what to do."""


def one_line(exc: BaseException) -> str:
    """The message on one line: a value quoted from hostile input may hold newlines."""
    return " ".join(str(exc).splitlines())


def run_for_user(action) -> int:
    """A command's exit code: run `action()` (after the BLAS line); 0 when it returns, 2 with its message
    on one stderr line (no traceback) when it raises UserError."""
    import sys

    from hjepa_mlx import blas

    try:
        print(blas.describe())
        action()
        return 0
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
