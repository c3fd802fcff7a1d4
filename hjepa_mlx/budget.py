"""Time budgets: `--budget 8h` parsed, and the verdict "does this run fit, and if not, what would make it fit".

Pure arithmetic on a measured seconds-per-step (see calibrate.py / eta.py): no MLX here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hjepa_mlx.errors import UserError

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|m|s)")


def parse_duration(text: str) -> float:
    """'8h', '90m', '1h30m', '7.5h', '45min', '2d', '3600s' or a bare number of hours ('8') -> seconds.

    Raises UserError naming the accepted forms for anything else (e.g. 'banana', '0h', '-1h')."""
    s = str(text).strip().lower().replace(" ", "")
    seconds = None
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        seconds = float(s) * 3600.0
    elif s and _PART.sub("", s) == "":
        seconds = sum(float(v) * _UNITS[u] for v, u in _PART.findall(s))
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"--budget {text!r} is not a positive duration; write e.g. 8h, 90m, 1h30m, 7.5h, 2d "
                        f"(a bare number means hours)")
    return seconds


def format_duration(seconds: float) -> str:
    """Human scale: '42 s', '12.5 min', '7.4 h', '177.4 days' ('unknown' for nan/inf)."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_ratio(x: float) -> str:
    """'1.6x', '536x', '3,197x'."""
    return f"{x:.1f}x" if x < 100 else f"{x:,.0f}x"


@dataclass(frozen=True)
class Verdict:
    fits: bool
    text: str                 # one line: the verdict and, when it does not fit, the fix
    max_epochs: int | None    # the most epochs that fit at the configured steps per epoch (None: fits)
    speedup_needed: float     # total time / budget (<= 1 when it fits)


def fit_verdict(*, budget_s: float, step_s: float, steps_per_epoch: int, epochs: int,
                overhead_s: float = 0.0) -> Verdict:
    """Does `epochs` x `steps_per_epoch` steps at `step_s` seconds each, plus `overhead_s` of anything
    else (compilation, evaluation), fit in `budget_s`? When not: the most epochs that fit, else the most
    steps per epoch, and the speed-up that would make the run as configured fit."""
    need = epochs * steps_per_epoch * step_s + overhead_s
    ratio = need / budget_s
    if need <= budget_s:
        return Verdict(True, f"fits: {format_duration(need)} of {format_duration(budget_s)} "
                             f"({ratio:.0%}), {format_duration(budget_s - need)} to spare", None, ratio)
    per_epoch = steps_per_epoch * step_s
    usable = budget_s - overhead_s
    max_epochs = int(usable // per_epoch) if usable > 0 else 0
    head = (f"does not fit: needs {format_duration(need)}, {format_ratio(ratio)} the budget of "
            f"{format_duration(budget_s)}; "
            f"it fits with ")
    if max_epochs >= 1:
        fix = (f"training.epochs <= {max_epochs} (--set training.epochs={max_epochs}; warm-up epochs keep their "
               f"length) or with {format_ratio(ratio)} the speed")
    else:
        per_epoch_steps = int(max(usable, 0) // (step_s * epochs))
        if per_epoch_steps >= 1:
            fix = (f"training.steps_per_epoch <= {per_epoch_steps:,} (of {steps_per_epoch:,}; "
                   f"--set training.steps_per_epoch={per_epoch_steps}) or with {format_ratio(ratio)} the speed "
                   f"(not even one epoch of {format_duration(per_epoch)} fits)")
        else:
            fix = f"{format_ratio(ratio)} the speed (not even one step per epoch fits {epochs} epochs)"
    return Verdict(False, head + fix, max_epochs, ratio)
