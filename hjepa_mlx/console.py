"""The training console: one progress line that rewrites itself in place on a terminal (plain lines when
the output is a file or a pipe), permanent lines printed above it, and a status text for what is going on
between steps (compiling, validating, k-NN, saving a checkpoint).

No library draws it: a carriage return and "erase to end of line" (ANSI `ESC [ K`) are all a terminal
needs, and the line is cut to the terminal's width so it never wraps (a wrapped line cannot be rewritten).
"""

from __future__ import annotations

import math
import shutil
import sys

from hjepa_mlx.budget import format_duration

_CLEAR = "\r\033[K"

# The regularisers a step may report beside the prediction loss (unweighted terms; see losses/total.py).
REGULARISERS = (("vicreg_invariance", "inv"), ("vicreg_variance", "var"), ("vicreg_covariance", "cov"),
                ("contrastive_loss", "nt-xent"))


class Console:
    """stream: where to write (default stdout); tty: rewrite in place (default: stream.isatty())."""

    def __init__(self, stream=None, *, tty: bool | None = None):
        self.stream = stream or sys.stdout
        self.tty = bool(self.stream.isatty()) if tty is None else tty
        self._live = ""

    def _width(self) -> int:
        return max(shutil.get_terminal_size((120, 24)).columns - 1, 20)

    def line(self, text: str) -> None:
        """A permanent line (above the live line on a terminal)."""
        if self.tty and self._live:
            self.stream.write(_CLEAR + text + "\n" + self._live[: self._width()])
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def live(self, text: str) -> None:
        """Replace the live line (terminal only; elsewhere nothing is written)."""
        if not self.tty:
            return
        self._live = text
        self.stream.write(_CLEAR + text[: self._width()])
        self.stream.flush()

    def status(self, text: str) -> None:
        """What is happening now: the live line on a terminal, a plain line elsewhere."""
        if self.tty:
            self.live(text)
        else:
            self.line(text)

    def close(self) -> None:
        """End the live line (so the shell prompt starts on a new line)."""
        if self.tty and self._live:
            self.stream.write(_CLEAR + self._live[: self._width()] + "\n")
            self.stream.flush()
        self._live = ""


def _f(x, fmt: str) -> str:
    return "nan" if x is None or not math.isfinite(x) else format(x, fmt)


def progress_text(*, epoch: int, epochs: int, step_in_epoch: int, steps_per_epoch: int, step: int, total_steps: int,
                  scalars: dict, images_per_s: float | None, eta_s: float | None, peak_memory_gb: float | None) -> str:
    """'ep 2/3 step 30/48 [ 54%] | 31.2 img/s | ETA 3.6 min | pred 0.4565 | vicreg 21.83 (inv 0.0625 var 0.7993
    cov 0.2905) | lr 3.96e-04 | peak 0.10 GB'. epoch 0-based; scalars: the step's metrics (Python floats)."""
    parts = [f"ep {epoch + 1}/{epochs} step {step_in_epoch}/{steps_per_epoch} [{step / max(total_steps, 1):4.0%}]",
             f"{_f(images_per_s, '.1f')} img/s" if images_per_s else "timing...",
             f"ETA {format_duration(eta_s)}" if eta_s is not None else "ETA after the first steps",
             f"pred {_f(scalars.get('loss_prediction'), '.4f')}"]
    terms = [f"{short} {_f(scalars[name], '.4g')}" for name, short in REGULARISERS[:3] if name in scalars]
    if terms:
        parts.append(f"vicreg {_f(scalars.get('vicreg_loss'), '.4g')} ({' '.join(terms)})")
    if "contrastive_loss" in scalars:
        parts.append(f"nt-xent {_f(scalars['contrastive_loss'], '.4g')}")
    parts.append(f"lr {_f(scalars.get('lr'), '.2e')}")
    if peak_memory_gb is not None:
        parts.append(f"peak {peak_memory_gb:.2f} GB")
    return " | ".join(parts)
