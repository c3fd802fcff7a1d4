"""When to save inside an epoch (`checkpoint.save_every_steps`, `checkpoint.save_every_minutes`), so a
kill loses minutes of work, not an epoch.

A save changes nothing in the state, so where the saves fall never changes the run's result; a resume
from any of them continues bit-identically (the loader restarts the epoch at the saved batch). The
last batch of an epoch is left to the end-of-epoch save, which comes right after it with the
validation numbers (so a resume never logs the epoch's evaluation twice).
"""

from __future__ import annotations

import time


class MidEpochSaves:
    """due(step, last_batch_of_epoch) -> whether to save now; counts time from creation / the last save."""

    def __init__(self, every_steps: int, every_minutes: float, clock=time.monotonic):
        self.every_steps, self.every_seconds = every_steps, every_minutes * 60.0
        self.clock = clock
        self.last = clock()

    def due(self, step: int, last_batch_of_epoch: bool) -> bool:
        if last_batch_of_epoch:
            return False
        by_steps = self.every_steps > 0 and step % self.every_steps == 0
        by_time = self.every_seconds > 0 and self.clock() - self.last >= self.every_seconds
        if by_steps or by_time:
            self.mark_saved()
            return True
        return False

    def mark_saved(self) -> None:
        """Restart the clock (after any save, the end-of-epoch one included)."""
        self.last = self.clock()
