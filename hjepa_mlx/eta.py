"""The run's clock: train-step time kept apart from compilation and from everything else (validation, k-NN,
collapse checks, checkpoints, pictures), and the ETA built from both.

- The first step of a process includes compiling the train step: it is left out of every rate, and
  `compile_s` (first step minus a steady one) is said once.
- img/s is the steady-state rate over the recent steps (`window`), so it matches benchmarks/throughput.py.
- ETA = steps left x steady s/step + for every other activity still to come (how many: `remaining`) its
  last measured duration; one not measured yet is estimated from its share of the train step's FLOPs
  (`forward_costs`), e.g. validating 256 images ~ 256 forward passes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass


class RunClock:
    """images_per_step: images of one optimizer step; window: steady steps the rates average over."""

    def __init__(self, images_per_step: int, *, window: int = 50):
        self.images_per_step = images_per_step
        self.window = window
        self.step_times: list[float] = []      # every step of this process, the compiling first one included
        self.activities: dict[str, list[float]] = {}

    def step(self, seconds: float) -> None:
        self.step_times.append(seconds)

    @property
    def steady(self) -> list[float]:
        return self.step_times[1:][-self.window:]

    @property
    def compile_s(self) -> float | None:
        """The first step's extra time over the second (None before the second step)."""
        if len(self.step_times) < 2:
            return None
        return max(self.step_times[0] - self.step_times[1], 0.0)

    @property
    def step_s(self) -> float | None:
        """Mean seconds per steady step over the last `window` steps (None before the second step)."""
        return sum(self.steady) / len(self.steady) if self.steady else None

    def images_per_s(self) -> float | None:
        s = self.step_s
        return self.images_per_step / s if s else None

    @contextmanager
    def timing(self, kind: str):
        """Time the enclosed activity (not a train step) under `kind`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.activities.setdefault(kind, []).append(time.perf_counter() - start)

    def expected(self, kind: str, fallback: float = 0.0) -> float:
        """The last measured duration of `kind` (later ones no longer compile), else `fallback`."""
        done = self.activities.get(kind)
        return done[-1] if done else fallback

    def eta(self, steps_left: int, remaining: dict[str, int], fallback: dict[str, float] | None = None) -> float | None:
        """Seconds to the end of the run (None before a steady step has been timed)."""
        s = self.step_s
        if s is None:
            return None
        fallback = fallback or {}
        return steps_left * s + sum(n * self.expected(kind, fallback.get(kind, 0.0) * s)
                                    for kind, n in remaining.items())


@dataclass(frozen=True)
class Schedule:
    """When the run's other activities happen (0: never)."""
    epochs: int
    steps_per_epoch: int
    validate_every: int = 0     # epochs (the last epoch always)
    knn_every: int = 0          # epochs (the last epoch always, when on)
    save_every: int = 0         # epochs (the last epoch always)
    collapse_every: int = 0     # steps
    plot_every: int = 0         # steps (and once at the end)
    image_every: int = 0        # steps

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def _epoch_ends(s: Schedule, every: int, step_done: int) -> int:
    if every <= 0:
        return 0
    return sum(1 for e in range(s.epochs)
               if (e + 1) * s.steps_per_epoch >= step_done and ((e + 1) % every == 0 or e + 1 == s.epochs))


def _multiples(every: int, step_done: int, total: int) -> int:
    if every <= 0:
        return 0
    return max(total // every - (step_done - 1) // every, 0) if step_done >= 1 else total // every


def remaining(s: Schedule, step_done: int) -> dict[str, int]:
    """How many of each activity are still to come after `step_done` steps (the ones due at `step_done`
    itself included: they run after the step's progress line)."""
    return {"validation": _epoch_ends(s, s.validate_every, step_done),
            "knn": _epoch_ends(s, s.knn_every, step_done),
            "checkpoint": _epoch_ends(s, s.save_every, step_done),
            "collapse": _multiples(s.collapse_every, step_done, s.total_steps),
            "plots": _multiples(s.plot_every, step_done, s.total_steps) + (1 if s.plot_every else 0),
            "images": _multiples(s.image_every, step_done, s.total_steps)}


def forward_costs(*, images_per_step: int, train_flops: float, target_forward_flops: float,
                  eval_forward_flops: float, validation_images: int, knn_images: int, probe_images: int) -> dict:
    """Fallback durations of the activities, in units of one train step: images x forward FLOPs per image
    over the FLOPs of one train step. Used only until each activity has been timed once."""
    step_flops = images_per_step * train_flops
    return {"validation": validation_images * eval_forward_flops / step_flops,
            "knn": knn_images * target_forward_flops / step_flops,
            "collapse": probe_images * target_forward_flops / step_flops}
