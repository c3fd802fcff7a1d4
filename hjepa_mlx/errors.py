"""The one exception type for mistakes a user can fix (bad config, missing data, corrupt file).

Entry points catch it, print its message on one line to stderr (no traceback) and exit with code 2.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that says what is wrong and what to do."""
