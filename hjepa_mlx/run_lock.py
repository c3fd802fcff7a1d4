"""One process per run directory: an exclusive `flock` on `<run_dir>/.lock` held for the whole run.

Two trainers writing one directory interleave metrics and overwrite each other's checkpoints, so the
second one is refused with a message naming the owner's PID. The kernel drops a flock when its
process dies (kill -9 included), so a lock file left behind is never an obstacle: its PID is read,
found dead and reported ("stale lock ... taken over"), and the new run proceeds.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from hjepa_mlx.errors import UserError

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by someone else
        return True
    return True


def _read_owner(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


class RunLock:
    """Context manager: `with RunLock(run_dir): ...` holds the run directory or raises UserError."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.stale_note: str | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise UserError(f"{self.path.parent} is in use by another training process ({owner or 'pid unknown'});"
                            f" wait for it to finish or stop it, or pass --output-dir NEW_DIR (nothing was "
                            f"changed)") from None
        except OSError as exc:   # a filesystem without flock support
            os.close(fd)
            raise UserError(f"cannot lock {self.path} ({exc}); put the run directory on a local disk") from None
        previous = _read_owner(fd)
        pid = previous.split()[1] if previous.startswith("pid ") and len(previous.split()) > 1 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            self.stale_note = (f"run lock: a stale lock from pid {pid} (no longer running; killed or crashed) "
                               f"was found in {self.path.parent} and taken over")
            print(self.stale_note)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)     # a clean exit leaves no owner to report as stale
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
