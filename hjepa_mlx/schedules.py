"""Schedules as pure functions of the step (an mx.array inside the compiled step; ints work too).

lr: linear warmup from warmup_lr_ratio*lr at step 0 to lr at warmup_steps, then cosine (or linear) to
min_lr_ratio*lr at total_steps, constant after. Weight decay: constant, or cosine from start to end over
the run (I-JEPA 0.04 -> 0.4). EMA momentum: linear from `start` to `end` over `warmup_steps`
(model.ema.momentum_warmup_epochs), then held at `end`; with warmup_steps = 0 it ramps over the whole
run, as I-JEPA does.
"""

from __future__ import annotations

import math

import mlx.core as mx


def _frac(step, start, length):
    step = mx.array(step, dtype=mx.float32)
    return mx.clip((step - start) / max(length, 1), 0.0, 1.0)


def lr_at(step, *, base_lr, warmup_steps, total_steps, warmup_lr_ratio, min_lr_ratio, schedule="cosine"):
    start_lr, final_lr = warmup_lr_ratio * base_lr, min_lr_ratio * base_lr
    warm = start_lr + (base_lr - start_lr) * _frac(step, 0, warmup_steps)
    t = _frac(step, warmup_steps, total_steps - warmup_steps)
    if schedule == "cosine":
        decay = final_lr + (base_lr - final_lr) * 0.5 * (1.0 + mx.cos(math.pi * t))
    elif schedule == "linear":
        decay = base_lr + (final_lr - base_lr) * t
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}")
    return mx.where(mx.array(step) < warmup_steps, warm, decay) if warmup_steps > 0 else decay


def weight_decay_at(step, *, start, end=None, total_steps):
    if end is None:
        return mx.array(float(start))
    t = _frac(step, 0, total_steps)
    return end + (start - end) * 0.5 * (1.0 + mx.cos(math.pi * t))


def ema_momentum_at(step, *, start, end, warmup_steps, total_steps):
    length = warmup_steps if warmup_steps > 0 else total_steps
    return start + (end - start) * _frac(step, 0, length)
