"""LR, weight-decay and EMA-momentum schedules against float64 NumPy formulas written here: values at
every step, exact endpoints, monotone ramps, and one trace when the step is a compiled array input."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx import schedules

BASE, WARM, TOTAL, R0, RMIN = 1e-3, 10, 100, 0.001, 0.01
LR_KW = dict(base_lr=BASE, warmup_steps=WARM, total_steps=TOTAL, warmup_lr_ratio=R0, min_lr_ratio=RMIN)
STEPS = np.arange(0, TOTAL + 25)


def np_lr(step, kind, base=BASE, warm=WARM, total=TOTAL, r0=R0, rmin=RMIN):
    if step < warm:
        return base * r0 + (base - base * r0) * step / warm
    if kind == "constant":
        return base
    t = min(max((step - warm) / (total - warm), 0.0), 1.0)
    w = 0.5 * (1 - math.cos(math.pi * t)) if kind == "cosine" else t
    return base + (base * rmin - base) * w


def values(fn, steps=STEPS, **kw) -> np.ndarray:
    """fn evaluated on a vector of int32 steps in one call (the functions are elementwise)."""
    return np.array(fn(mx.array(steps.astype(np.int32)), **kw), dtype=np.float64)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_lr_matches_numpy_at_every_step(kind):
    got = values(schedules.lr_at, schedule=kind, **LR_KW)
    want = np.array([np_lr(s, kind) for s in STEPS])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_lr_endpoints_are_exact_and_ramps_monotone(kind):
    got = values(schedules.lr_at, schedule=kind, **LR_KW)
    f32 = lambda x: float(np.float32(x))
    assert got[0] == f32(R0 * BASE)            # warmup starts low, not at full lr
    assert got[WARM] == f32(BASE)              # peak exactly when warmup ends
    assert np.all(got[:WARM] < f32(BASE))      # no step at full lr before that
    assert np.all(got[TOTAL:] == f32(RMIN * BASE))   # final value from total_steps on
    assert np.all(np.diff(got[:WARM + 1]) > 0)
    assert np.all(np.diff(got[WARM:]) <= 0)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_lr_keeps_relative_precision_and_monotonicity_over_a_long_run(kind):
    """300k steps: float32 keeps ~1e-6 relative error even in the last steps of the decay, where the
    LR is 100x below its peak (a naive base + (final - base)*w loses ~1e-5 there)."""
    total, warm, base = 300_000, 7_000, 3e-4
    steps = np.arange(total + 10)
    got = values(schedules.lr_at, steps, base_lr=base, warmup_steps=warm, total_steps=total,
                 warmup_lr_ratio=R0, min_lr_ratio=RMIN, schedule=kind)
    t = np.clip((steps - warm) / (total - warm), 0, 1)
    w = 0.5 * (1 - np.cos(np.pi * t)) if kind == "cosine" else t
    want = np.where(steps < warm, base * R0 + (base - base * R0) * steps / warm, base + (base * RMIN - base) * w)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    assert np.all(np.diff(got[:warm + 1]) > 0) and np.all(np.diff(got[warm:]) <= 0)


def test_lr_without_warmup_and_scalar_inputs():
    kw = {**LR_KW, "warmup_steps": 0}
    assert schedules.lr_at(0, **kw).item() == np.float32(BASE)
    # Python ints, int32 arrays and 0-d arrays agree
    for s in (0, 3, 55, 100, 1000):
        a = schedules.lr_at(s, **LR_KW).item()
        assert a == schedules.lr_at(mx.array(s, dtype=mx.int32), **LR_KW).item()
        assert a == pytest.approx(np_lr(s, "cosine"), rel=2e-6)
    assert schedules.lr_at(7, **LR_KW).dtype == mx.float32


def test_lr_rejects_unknown_schedule_and_bad_lengths():
    with pytest.raises(ValueError, match="step"):
        schedules.lr_at(0, **{**LR_KW, "schedule": "step"})
    with pytest.raises(ValueError, match="total_steps"):
        schedules.lr_at(0, **{**LR_KW, "total_steps": 0})
    with pytest.raises(ValueError, match="warmup_steps"):
        schedules.lr_at(0, **{**LR_KW, "warmup_steps": -1})


def test_schedules_trace_once_under_compile():
    traces = []

    def scalars(step):
        traces.append(1)
        return (schedules.lr_at(step, **LR_KW),
                schedules.weight_decay_at(step, start=0.04, end=0.4, total_steps=TOTAL),
                schedules.ema_momentum_at(step, start=0.996, end=1.0, warmup_steps=0, total_steps=TOTAL))

    compiled = mx.compile(scalars)
    for s in (0, 5, 10, 60, 100, 130):
        step = mx.array(s, dtype=mx.int32)
        got = [x.item() for x in compiled(step)]
        want = [x.item() for x in scalars(step)]
        assert got == pytest.approx(want, rel=1e-6)
    assert len(traces) == 1 + 6   # one trace for the compiled function, plus the 6 eager reference calls


def np_wd(step, start, end, total):
    t = min(step / total, 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))


def test_weight_decay_constant_and_cosine():
    const = values(schedules.weight_decay_at, start=0.05, total_steps=TOTAL)
    assert np.all(const == np.float32(0.05))
    got = values(schedules.weight_decay_at, start=0.04, end=0.4, total_steps=TOTAL)
    np.testing.assert_allclose(got, [np_wd(s, 0.04, 0.4, TOTAL) for s in STEPS], rtol=2e-6)
    assert got[0] == np.float32(0.04) and np.all(got[TOTAL:] == np.float32(0.4))
    assert np.all(np.diff(got) >= 0) and got[TOTAL // 2] < got[TOTAL - 1]
    down = values(schedules.weight_decay_at, start=0.4, end=0.04, total_steps=TOTAL)   # decreasing works too
    assert down[0] == np.float32(0.4) and down[-1] == np.float32(0.04) and np.all(np.diff(down) <= 0)


def np_momentum(step, start, end, warm, total):
    if step <= warm:
        return start
    return start + (end - start) * min((step - warm) / (total - warm), 1.0)


@pytest.mark.parametrize("warm", [0, 20])
def test_ema_momentum_held_then_linear_to_the_last_step(warm):
    got = values(schedules.ema_momentum_at, start=0.996, end=1.0, warmup_steps=warm, total_steps=TOTAL)
    np.testing.assert_allclose(got, [np_momentum(s, 0.996, 1.0, warm, TOTAL) for s in STEPS], rtol=0, atol=1e-7)
    assert np.all(got[:warm + 1] == np.float32(0.996))
    assert np.all(got[:TOTAL] < 1.0)               # the target moves on every step of the run ...
    assert np.all(got[TOTAL:] == 1.0)              # ... and 1.0 (the identity update) only after it
    assert np.all(np.diff(got) >= 0)


def test_ema_momentum_hand_table():
    """Seed-style schedule worked by hand: 0.996 held for 10 of 40 steps, then +0.004/30 per step to 1.0."""
    table = {0: 0.996, 10: 0.996, 11: 0.996 + 0.004 / 30, 25: 0.998, 39: 1.0 - 0.004 / 30, 40: 1.0}
    for step, want in table.items():
        got = schedules.ema_momentum_at(step, start=0.996, end=1.0, warmup_steps=10, total_steps=40).item()
        assert got == pytest.approx(want, abs=1e-7), step


def test_ema_momentum_warmup_longer_than_run_holds_start():
    got = values(schedules.ema_momentum_at, start=0.99, end=1.0, warmup_steps=10 * TOTAL, total_steps=TOTAL)
    assert np.all(got[:TOTAL] == np.float32(0.99))


def test_ema_rate_is_one_minus_momentum_with_relative_precision():
    """The rate 1 - momentum, as its own ramp: positive on every step of a long seed-sized run (where the
    float32 momentum rounds to 1.0) and within float32 relative precision of the float64 formula."""
    total, warm = 434_475, 96_550
    steps = np.array([0, warm, warm + 1, total // 2, total - 2, total - 1, total])
    got = values(schedules.ema_rate_at, steps, start=0.996, end=1.0, warmup_steps=warm, total_steps=total)
    want = np.array([1.0 - np_momentum(int(s), 0.996, 1.0, warm, total) for s in steps])
    np.testing.assert_allclose(got[:-1], want[:-1], rtol=1e-5)
    assert np.all(got[:-1] > 0) and got[-1] == 0.0
    assert got[-2] == pytest.approx(0.004 / (total - warm), rel=1e-5)
