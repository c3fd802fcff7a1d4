"""Per-step schedules (learning rate, weight decay, EMA momentum) as pure functions of the step.

Inside the compiled train step `step` is the int32 `state["step"]` array, so every value is computed in
the graph and the step is traced once per run (a Python float argument would retrace on every new
value). Python ints work too (tests, logging). All results are float32 scalar arrays.

Shapes of the three schedules (step counts optimizer steps; `total_steps` is the whole run):

- lr: linear warmup from `warmup_lr_ratio*base_lr` at step 0 to `base_lr` at `warmup_steps` (no step
  runs at full LR before warmup ends), then cosine / linear decay to `min_lr_ratio*base_lr` at
  `total_steps`, held there after; `constant` holds `base_lr` after warmup. (I-JEPA: start_lr -> lr ->
  final_lr.)
- weight decay: constant `start`, or, when `end` is given, cosine from `start` at step 0 to `end` at
  `total_steps` (I-JEPA raises it 0.04 -> 0.4), held after.
- EMA momentum: held at `start` for `warmup_steps` (config `model.ema.momentum_warmup_epochs`, the
  original H-JEPA's meaning), then linear to `end`, reached at `total_steps` (the step after the run's
  last), so the target keeps moving until the end: every executed step has momentum < `end` when
  start < end. `warmup_steps == 0` is I-JEPA's schedule, linear start -> end over the whole run.
  (An earlier version ramped over the warm-up and then held `end`: at 1.0 the target froze for ~80 % of
  the seed configs' steps.)

Endpoints are exact (the float32 of the requested value), every ramp is monotone, and values keep
float32 relative precision even near a small endpoint (see `_ramp`). The cosine is written
sin^2(pi*x/2), equal to (1 - cos(pi*x))/2. Step counts up to 2**24 are exact in the float32 arithmetic
used here.
"""

from __future__ import annotations

import math

import mlx.core as mx

LR_SCHEDULES = ("cosine", "linear", "constant")


def _as_step(step) -> mx.array:
    """The step as a float32 scalar array, from an mx.array (traced or not) or a Python/NumPy int."""
    if isinstance(step, mx.array):
        return step.astype(mx.float32)
    return mx.array(float(step), dtype=mx.float32)


def _fractions(step: mx.array, start: int, length: int) -> tuple[mx.array, mx.array]:
    """(done, left): the fractions of [start, start + length] behind and ahead of `step`, both clipped
    to [0, 1]. Each comes from an exact integer difference, so each is accurate near 0 (computing
    left as 1 - done would lose ~1e-7 absolute, a 1e-5 relative error in a decay's last steps)."""
    if length <= 0:
        done = mx.where(step >= start, 1.0, 0.0).astype(mx.float32)
        return done, 1.0 - done
    done = mx.clip((step - start) / float(length), 0.0, 1.0)
    left = mx.clip((start + length - step) / float(length), 0.0, 1.0)
    return done, left


def _ramp(a: float, b: float, step: mx.array, start: int, length: int, shape: str) -> mx.array:
    """a before `start`, b after `start + length`, linear or half-cosine in between.

    Written as lo + (hi - lo)*f with f the fraction measured from the smaller endpoint, so both terms
    are >= 0 and the value keeps its float32 relative precision near either end; monotone in `step`;
    exact at both ends.
    """
    done, left = _fractions(step, start, length)
    shaped = (lambda x: x) if shape == "linear" else (lambda x: mx.square(mx.sin(0.5 * math.pi * x)))
    lo, hi = min(a, b), max(a, b)
    f = shaped(done) if a <= b else shaped(left)
    value = mx.clip(lo + (hi - lo) * f, lo, hi)
    value = mx.where(done <= 0.0, mx.array(a, dtype=mx.float32), value)
    return mx.where(done >= 1.0, mx.array(b, dtype=mx.float32), value)


def _check_steps(warmup_steps: int, total_steps: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")


def lr_at(step, *, base_lr: float, warmup_steps: int, total_steps: int, warmup_lr_ratio: float,
          min_lr_ratio: float, schedule: str = "cosine") -> mx.array:
    """Learning rate at optimizer step `step` (0-based).

    step: int32 scalar array (inside the compiled step) or int. base_lr: peak LR. warmup_steps: steps of
    linear warmup (0: none). total_steps: steps in the run; the decay reaches its end here.
    warmup_lr_ratio: LR at step 0 as a fraction of base_lr. min_lr_ratio: final LR as a fraction of
    base_lr. schedule: 'cosine' | 'linear' | 'constant' (the shape after warmup).
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {LR_SCHEDULES}")
    _check_steps(warmup_steps, total_steps)
    s = _as_step(step)
    start_lr, final_lr = warmup_lr_ratio * base_lr, min_lr_ratio * base_lr
    if schedule == "constant":
        after = mx.full(s.shape, base_lr, dtype=mx.float32)
    else:
        after = _ramp(base_lr, final_lr, s, warmup_steps, total_steps - warmup_steps, schedule)
    if warmup_steps == 0:
        return after
    warm = _ramp(start_lr, base_lr, s, 0, warmup_steps, "linear")
    return mx.where(s < warmup_steps, warm, after)


def weight_decay_at(step, *, start: float, end: float | None = None, total_steps: int) -> mx.array:
    """Weight decay at `step`: `start` throughout when `end` is None, else cosine start -> end over
    `total_steps` (held at `end` after). step: int32 scalar array or int."""
    _check_steps(0, total_steps)
    if end is None:
        return mx.array(start, dtype=mx.float32)
    return _ramp(start, end, _as_step(step), 0, total_steps, "cosine")


def ema_momentum_at(step, *, start: float, end: float, warmup_steps: int, total_steps: int) -> mx.array:
    """EMA momentum of the target encoder at `step`: `start` for the first `warmup_steps` steps, then linear
    to `end` at `total_steps` (held after). A warm-up that covers the whole run holds `start` throughout.
    step: int32 scalar array or int."""
    _check_steps(warmup_steps, total_steps)
    warm = min(warmup_steps, total_steps)
    return _ramp(start, end, _as_step(step), warm, total_steps - warm, "linear")


def ema_rate_at(step, *, start: float, end: float, warmup_steps: int, total_steps: int) -> mx.array:
    """1 - `ema_momentum_at(...)`, computed as its own ramp (1 - start -> 1 - end) so that it keeps float32
    relative precision where the momentum is within an ulp of 1 (e.g. 1.2e-8 at the last of 434,475 steps
    of 0.996 -> 1.0, where the float32 momentum would read exactly 1.0). step: int32 scalar array or int."""
    _check_steps(warmup_steps, total_steps)
    warm = min(warmup_steps, total_steps)
    return _ramp(1.0 - start, 1.0 - end, _as_step(step), warm, total_steps - warm, "linear")
