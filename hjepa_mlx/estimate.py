"""The measured estimate: seconds per step -> per-epoch and total time, finish time, memory, budget verdict.

`--dry-run` prints it from a calibration (calibrate.py); a real run prints the same block once its first
steady-state steps are timed (eta.py). For the seed configs the per-epoch minutes their documents
projected (never measured, for an M1 Max GPU) are printed beside the measured ones.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass

from hjepa_mlx.budget import fit_verdict, format_duration, format_ratio

# Per-epoch minutes the seed documents projected, by config file name (shared/seeds: "Time/epoch: 10-11
# minutes" for overnight_safe; "Time per epoch: ~9-10 minutes" conservative; "~10-12 minutes" aggressive).
SEED_PROJECTED_MIN_PER_EPOCH = {"overnight_safe": (10, 11), "overnight_training_conservative": (9, 10),
                                "overnight_training_aggressive": (10, 12)}


def machine_memory_bytes() -> float | None:
    """Physical memory of this machine (None when the OS does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class Measured:
    step_s: float                 # seconds per optimizer step
    compile_s: float | None       # None: not measured
    peak_memory_bytes: float | None
    source: str                   # how it was measured (one phrase)
    memory_lower_bound: bool = False   # peak extrapolated from small batches: a lower bound (see calibrate.py)
    overhead_s: float | None = None    # time besides the train steps for the budget verdict (default: compile_s)


def finish_time(seconds_from_now: float, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now()
    if not math.isfinite(seconds_from_now) or seconds_from_now > 3650 * 86400:
        return "not within ten years"
    end = now + dt.timedelta(seconds=seconds_from_now)
    return end.strftime("%H:%M today" if end.date() == now.date() else "%a %Y-%m-%d %H:%M")


def describe_estimate(m: Measured, plan, epochs: int, *, budget_s: float | None = None, seed_name: str | None = None,
                      now: dt.datetime | None = None, memory_total: float | None = None,
                      title: str = "estimate", finish: bool = True) -> str:
    """The estimate block. plan: `plan.Plan` (steps per epoch, images per step); epochs: training.epochs;
    budget_s: `--budget` in seconds; seed_name: the config file's stem (projected minutes when a seed)."""
    images = plan.batch_size * plan.accumulation_steps
    lines = [f"# {title} (measured on this machine: {m.source})"]
    if m.compile_s is not None:
        lines.append(f"compile       : {m.compile_s:.1f} s, once per run (not in the rates below)")
    lines.append(f"speed         : {m.step_s:.3g} s/step, {images / m.step_s:.3g} img/s (train steps only: validation, "
                 f"k-NN, collapse checks and checkpoints come on top)")
    if plan.steps_per_epoch is None:
        lines.append("per epoch     : known once the dataset is read")
    else:
        epoch_s = plan.steps_per_epoch * m.step_s
        claim = SEED_PROJECTED_MIN_PER_EPOCH.get(seed_name or "")
        versus = ""
        if claim:
            versus = (f"; the seed documents projected {claim[0]}-{claim[1]} min (M1 Max GPU, never measured): "
                      f"measured is {format_ratio(epoch_s / 60 / (sum(claim) / 2))} that")
        minutes = f" ({epoch_s / 60:,.1f} min)" if epoch_s >= 90 * 60 else ""
        lines.append(f"per epoch     : {plan.steps_per_epoch:,} steps = {format_duration(epoch_s)}{minutes}{versus}")
        total_s = plan.steps_per_epoch * epochs * m.step_s + (m.compile_s or 0.0)
        lines.append(f"total         : {epochs} epochs, {plan.steps_per_epoch * epochs:,} steps = "
                     f"{format_duration(total_s)}" + (f"; started now it would finish {finish_time(total_s, now)}"
                                                      if finish else ""))
    if m.peak_memory_bytes is not None:
        bound = "at least " if m.memory_lower_bound else ""
        mem = f"peak {bound}{m.peak_memory_bytes / 1e9:.2f} GB (mx.get_peak_memory)"
        if memory_total:
            share = m.peak_memory_bytes / memory_total
            mem += f" of {memory_total / 1e9:.1f} GB on this machine ({share:.0%})"
            if share > 0.9:
                mem += (": too close to the machine's memory; turn on training.use_gradient_checkpointing or "
                        "lower data.batch_size")
        lines.append(f"memory        : {mem}")
    if budget_s is not None and plan.steps_per_epoch is not None:
        v = fit_verdict(budget_s=budget_s, step_s=m.step_s, steps_per_epoch=plan.steps_per_epoch, epochs=epochs,
                        overhead_s=m.overhead_s if m.overhead_s is not None else (m.compile_s or 0.0))
        lines.append(f"budget        : {format_duration(budget_s)}: {v.text}")
    return "\n".join(lines)
