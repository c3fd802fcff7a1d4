"""AdamW, decay mask, clipping, finite checks and schedules against float64 NumPy references."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx import optim, schedules

RNG = np.random.default_rng(2)


def test_adamw_matches_numpy_over_several_steps():
    params = {"w": mx.array(RNG.standard_normal((3, 4)).astype(np.float32)),
              "bias": mx.array(RNG.standard_normal(4).astype(np.float32))}
    mask = optim.decay_mask(params)
    assert mask == {"w": True, "bias": False}
    opt = optim.adamw_init(params)
    ref = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v = {k: np.zeros_like(v) for k, v in ref.items()}
    lr, wd, b1, b2 = 1e-2, 0.05, 0.9, 0.95
    for t in range(1, 5):
        grads = {k: RNG.standard_normal(ref[k].shape) for k in ref}
        params, opt = optim.adamw_update(params, {k: mx.array(g.astype(np.float32)) for k, g in grads.items()},
                                         opt, lr=mx.array(lr), weight_decay=mx.array(wd), betas=(b1, b2),
                                         decay_mask=mask)
        for k in ref:
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
            update = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + 1e-8)
            if mask[k]:
                update = update + wd * ref[k]
            ref[k] = ref[k] - lr * update
    for k in ref:
        np.testing.assert_allclose(np.array(params[k]), ref[k], rtol=1e-5, atol=1e-6)
    assert int(opt["count"].item()) == 4


def test_decay_mask_excludes_norms_biases_gammas_and_mask_token():
    params = {"blocks": [{"norm1": {"weight": mx.ones((4,)), "bias": mx.zeros((4,))},
                          "attn": {"qkv": {"weight": mx.ones((12, 4)), "bias": mx.zeros((12,))}},
                          "ls1": {"gamma": mx.ones((4,))}}],
              "mask_token": mx.zeros((4,)), "patch_embed": {"proj": {"weight": mx.ones((4, 2, 2, 3))}}}
    mask = optim.decay_mask(params)
    assert mask["blocks"][0]["attn"]["qkv"]["weight"] and mask["patch_embed"]["proj"]["weight"]
    assert not any([mask["blocks"][0]["norm1"]["weight"], mask["blocks"][0]["attn"]["qkv"]["bias"],
                    mask["blocks"][0]["ls1"]["gamma"], mask["mask_token"]])


def test_clip_by_global_norm_matches_numpy():
    g = {"a": RNG.standard_normal((3, 3)), "b": RNG.standard_normal(5)}
    norm = math.sqrt(sum((x ** 2).sum() for x in g.values()))
    clipped, n = optim.clip_by_global_norm({k: mx.array(v.astype(np.float32)) for k, v in g.items()}, 1.0)
    assert n.item() == pytest.approx(norm, rel=1e-5)
    for k in g:
        np.testing.assert_allclose(np.array(clipped[k]), g[k] / (norm + 1e-6), rtol=1e-5)
    same, _ = optim.clip_by_global_norm({"a": mx.array([0.1])}, 1.0)
    assert same["a"].item() == pytest.approx(0.1)


def test_all_finite_and_select_tree():
    good, bad = {"a": mx.array([1.0, 2.0])}, {"a": mx.array([1.0, float("nan")])}
    assert optim.all_finite(good).item() and not optim.all_finite(bad).item()
    assert optim.all_finite({"a": mx.array([float("inf")])}).item() is False
    np.testing.assert_array_equal(np.array(optim.select_tree(mx.array(False), bad, good)["a"]), [1.0, 2.0])


def np_lr(step, base, warm, total, r0, rmin, kind):
    if step < warm:
        return base * r0 + (base - base * r0) * step / warm
    t = min(max((step - warm) / max(total - warm, 1), 0), 1)
    if kind == "cosine":
        return base * rmin + (base - base * rmin) * 0.5 * (1 + math.cos(math.pi * t))
    return base + (base * rmin - base) * t


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_lr_schedule_matches_numpy(kind):
    kw = dict(base_lr=1e-3, warmup_steps=10, total_steps=100, warmup_lr_ratio=0.001, min_lr_ratio=0.01, schedule=kind)
    for step in [0, 1, 5, 9, 10, 11, 50, 99, 100, 150]:
        got = schedules.lr_at(mx.array(step), **kw).item()
        assert got == pytest.approx(np_lr(step, 1e-3, 10, 100, 0.001, 0.01, kind), rel=1e-5)
    assert schedules.lr_at(mx.array(0), **kw).item() == pytest.approx(1e-6)   # warmup starts low, not at full lr


def test_momentum_and_weight_decay_schedules():
    kw = dict(start=0.996, end=1.0, total_steps=100)
    assert schedules.ema_momentum_at(mx.array(0), warmup_steps=20, **kw).item() == pytest.approx(0.996)
    assert schedules.ema_momentum_at(mx.array(10), warmup_steps=20, **kw).item() == pytest.approx(0.998)
    assert schedules.ema_momentum_at(mx.array(50), warmup_steps=20, **kw).item() == pytest.approx(1.0)
    assert schedules.ema_momentum_at(mx.array(50), warmup_steps=0, **kw).item() == pytest.approx(0.998)
    assert schedules.weight_decay_at(mx.array(7), start=0.04, total_steps=100).item() == pytest.approx(0.04)
    assert schedules.weight_decay_at(mx.array(100), start=0.04, end=0.4, total_steps=100).item() == pytest.approx(0.4)
    values = [schedules.weight_decay_at(mx.array(s), start=0.04, end=0.4, total_steps=100).item() for s in range(0, 101, 10)]
    assert all(a <= b + 1e-9 for a, b in zip(values, values[1:]))
