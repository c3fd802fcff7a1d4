"""Keep freed memory in the process on Linux, so MLX's CPU buffers do not page-fault on every step.

MLX's CPU backend has no buffer cache: every op's output is a fresh `malloc` and every dead array a
`free`. glibc serves allocations above its mmap threshold (128 KiB, adapting up to 32 MiB) with a new
`mmap` and returns them with `munmap`, so each large activation or gradient of every step is mapped, zeroed
by the kernel page by page on first touch (~4 us per 4 KiB page on the machines measured) and unmapped
again. On overnight_safe that is gigabytes of page faults per step. With `M_MMAP_MAX = 0` every
allocation comes from the heap, and with a trim threshold out of reach the heap keeps what was freed:
after the first step the same addresses are reused and nothing faults (README, "CPU notes": img/s with and
without).

`HJEPA_MALLOC=off` keeps glibc's defaults. Elsewhere (macOS, musl, Windows) nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass

ENV_VAR = "HJEPA_MALLOC"

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
TRIM_NEVER = 2 ** 31 - 1          # an int: mallopt takes one; 2 GiB of free heap top before trimming
TOP_PAD = 64 * 2 ** 20            # grow the heap 64 MiB at a time (fewer brk calls while it warms up)


@dataclass(frozen=True)
class AllocatorChoice:
    kept: bool        # True: freed memory stays in the process (mallopt applied)
    reason: str


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version           # glibc only: musl has no mallopt tunables to speak of
        return libc
    except (OSError, AttributeError):
        return None


def _apply() -> AllocatorChoice:
    setting = os.environ.get(ENV_VAR, "").strip().lower()
    if setting in {"off", "0", "false", "none"}:
        return AllocatorChoice(False, f"{ENV_VAR}={os.environ[ENV_VAR]}: glibc's defaults")
    libc = _glibc()
    if libc is None:
        return AllocatorChoice(False, "not glibc: the platform allocator's defaults")
    ok = all(libc.mallopt(param, value) == 1
             for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_NEVER), (M_TOP_PAD, TOP_PAD)))
    if not ok:
        return AllocatorChoice(False, "glibc refused mallopt; its defaults")
    return AllocatorChoice(True, "glibc malloc keeps freed buffers (no mmap per array, no trim)")


CHOICE: AllocatorChoice = _apply()


def describe() -> str:
    """One line: what the allocator does with MLX's freed CPU buffers."""
    return f"allocator: {CHOICE.reason}"
