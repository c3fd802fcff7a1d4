"""Measure a config's train step on the machine at hand (`--dry-run`): build the model at the config's real
shapes, compile, time a few steps on synthetic inputs, record peak memory.

A step whose full batch would take longer than `max_seconds` to time (overnight_safe: ~35 s per step on
2 CPU cores) is timed at two smaller batch sizes b1 < b2 instead and extrapolated along the line
t(b) = a + c*b through both (a: the per-step cost that does not grow with the batch, e.g. AdamW and the
EMA over all parameters); peak memory likewise, but the result is a lower bound: the peak is the larger of
the optimizer update's (fixed) and the activations' (growing with b), a convex function of b, and a line
through two points of a convex function lies below it beyond them. At small batches the update's peak
dominates (overnight_safe: 0.778 GB at batch 2, 0.783 at 4, 1.405 measured at 16 vs 0.812 extrapolated,
benchmarks/calibration.py), so the estimate says "at least". With accumulation the step runs k micro-batches, so one
optimizer step costs k * t(batch_size) (the per-step part is counted k times: a slight over-estimate).
Data loading is not part of the measurement (inputs are synthetic, of the right shapes).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from hjepa_mlx.config import Config


@dataclass(frozen=True)
class Calibration:
    compile_s: float             # first call minus a steady step, at the largest batch timed
    step_s: float                # seconds per optimizer step at the config's batch and accumulation
    peak_memory_bytes: float     # at the config's batch (extrapolated like step_s when not measured)
    batch_sizes: tuple           # micro-batch sizes timed
    micro_step_s: tuple          # median seconds of one micro-batch step at each of batch_sizes
    steps_timed: int             # timed steps per batch size (after the compiling call)
    extrapolated: bool
    wall_s: float                # the whole calibration, model building included

    @property
    def source(self) -> str:
        sizes = " and ".join(str(b) for b in self.batch_sizes)
        how = ", extrapolated linearly to the config's batch" if self.extrapolated else ""
        return f"{self.steps_timed} timed step(s) at batch {sizes}{how}; synthetic inputs, data loading not included"


def extrapolate(b1: int, t1: float, b2: int, t2: float, b: int) -> float:
    """The value at b of the line through (b1, t1) and (b2, t2)."""
    slope = (t2 - t1) / (b2 - b1)
    return t1 + slope * (b - b1)


class StepTimer:
    """The config's model and train step (accumulation 1), timed on synthetic micro-batches of any size."""

    def __init__(self, config: Config, plan, say=print):
        from hjepa_mlx.build import build_mask_plan, build_model, step_settings
        from hjepa_mlx.config.plan import make_plan
        from hjepa_mlx.state import init_state
        from hjepa_mlx.step import make_train_step

        if plan.total_steps is None:   # size known only once the files are read: any size times the same step
            plan = make_plan(config, dataset_sizes={d.name: 10_000 for d in plan.datasets})
        self.plan, self.say, self.size = plan, say, plan.image_size
        self.mask_plan = build_mask_plan(config, plan)
        say(f"calibrating: building the model at image {self.size}, batch {plan.batch_size} ...")
        model = build_model(config, plan, quiet=True)
        self.state = init_state(model)
        settings = dataclasses.replace(step_settings(config, plan), accumulation_steps=1)
        self.step_fn, _ = make_train_step(model, settings)
        self.rng = np.random.default_rng(0)
        self.batches = {}

    def _batch(self, b: int) -> dict:
        from hjepa_mlx.batch import Batch, device_batch
        from hjepa_mlx.masks import sample_masks

        if b not in self.batches:
            images = [self.rng.standard_normal((b, self.size, self.size, 3), dtype=np.float32) for _ in range(2)]
            host = Batch(images=images[0], images_view2=images[1], labels=np.zeros(b, np.int32),
                         dataset_ids=np.zeros(b, np.int32), masks=sample_masks(self.mask_plan, b, 0, 0, 0))
            self.batches[b] = device_batch([host], self.plan.two_views)
            mx.eval(self.batches[b])
        return self.batches[b]

    def once(self, b: int) -> float:
        """Seconds of one train step on a micro-batch of b images (the first call at b compiles)."""
        batch = self._batch(b)
        t = time.perf_counter()
        self.state, metrics = self.step_fn(self.state, batch)
        mx.eval(self.state, metrics)
        return time.perf_counter() - t

    def time_batch(self, b: int, steps: int) -> tuple[float, float, float]:
        """(first call incl. compilation, median of `steps` steady steps, peak bytes) at micro-batch b."""
        self._batch(b)
        mx.reset_peak_memory()
        self.say(f"calibrating: compiling the train step at batch {b} and timing {steps} step(s) ...")
        first = self.once(b)
        times = [self.once(b) for _ in range(steps)]
        return first, statistics.median(times), float(mx.get_peak_memory())


def calibrate(config: Config, plan, *, steps: int = 3, max_seconds: float = 75.0, say=print) -> Calibration:
    """Time the config's train step. `steps`: timed steps per batch size; `max_seconds`: the time the timed
    steps may take before smaller batches and extrapolation are used instead of the full batch."""
    start = time.perf_counter()
    full, k = plan.batch_size, plan.accumulation_steps
    timer = StepTimer(config, plan, say)
    time_batch = lambda b: timer.time_batch(b, steps)  # noqa: E731

    b1 = full if full <= 2 else max(2, full // 8)
    first, t1, m1 = time_batch(b1)
    points = [(b1, first, t1, m1)]
    if b1 < full:
        spent = time.perf_counter() - start
        compile_guess = max(first - t1, 0.0)
        per_image = t1 / b1
        if compile_guess + (steps + 1) * per_image * full <= max_seconds - spent:
            b2 = full
        else:
            b2 = min(2 * b1, full)
            while 2 * b2 < full and compile_guess + (steps + 1) * per_image * 2 * b2 <= max_seconds - spent:
                b2 *= 2
        first2, t2, m2 = time_batch(b2)
        points.append((b2, first2, t2, m2))
    last_b, last_first, last_t, last_m = points[-1]
    if last_b == full:
        micro, peak, extrapolated = last_t, last_m, False
    else:
        (pb1, _, pt1, pm1), (pb2, _, pt2, pm2) = points
        micro = extrapolate(pb1, pt1, pb2, pt2, full)
        peak = extrapolate(pb1, pm1, pb2, pm2, full)
        extrapolated = True
    return Calibration(compile_s=max(last_first - last_t, 0.0), step_s=k * micro, peak_memory_bytes=peak,
                       batch_sizes=tuple(p[0] for p in points), micro_step_s=tuple(p[2] for p in points),
                       steps_timed=steps, extrapolated=extrapolated, wall_s=time.perf_counter() - start)
