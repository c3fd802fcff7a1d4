"""Checkpoint series of a run directory: `checkpoints/`, then `checkpoints-fork1/`, `checkpoints-fork2/`, ...

A resume with `--resume-with-changes` (a changed batch size, lr, seed, ...) must not overwrite the
checkpoints of the run it came from, so it starts a new series beside them; `--resume auto`, evaluate
and export read the newest series. The original series and its `config.yaml` (kept as
`config-fork<N>-from.yaml`) stay as they were.
"""

from __future__ import annotations

import re
from pathlib import Path

BASE = "checkpoints"
_FORK = re.compile(r"^checkpoints-fork(\d+)$")


def _forks(run_dir: Path) -> list[tuple[int, Path]]:
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _FORK.match(p.name))]
    return sorted(found)


def current_series(run_dir: str | Path) -> Path:
    """The directory new checkpoints of this run go to and `--resume auto` reads: the newest fork that
    holds a checkpoint, else `checkpoints/`."""
    run_dir = Path(run_dir)
    for _, path in reversed(_forks(run_dir)):
        if any(path.glob("step_*.safetensors")):
            return path
    return run_dir / BASE


def next_series(run_dir: str | Path) -> Path:
    """A fresh fork directory name (not created)."""
    run_dir = Path(run_dir)
    forks = _forks(run_dir)
    return run_dir / f"{BASE}-fork{(forks[-1][0] if forks else 0) + 1}"
