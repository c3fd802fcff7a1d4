"""AdamW, its decay mask, global-norm clipping, finite checks and tree selection, against float64 NumPy
references written here and against `mlx.optimizers.AdamW` where the two mean the same thing."""

from __future__ import annotations

import contextlib
import math

import mlx.core as mx
import mlx.optimizers
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from hjepa_mlx import optim

B1, B2 = 0.9, 0.95


def tiny_params(seed=0):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: mx.array(rng.standard_normal(shape).astype(np.float32))
    return {"blocks": [{"norm1": {"weight": f32(4), "bias": f32(4)},
                        "attn": {"qkv": {"weight": f32(12, 4), "bias": f32(12)}},
                        "ls1": {"gamma": f32(4)}}],
            "mask_token": f32(1, 1, 4),
            "patch_embed": {"proj": {"weight": f32(4, 2, 2, 3)}}}


def np_adamw(params: dict, grads_per_step: list[dict], lrs, wds, mask: dict, eps=1e-8) -> dict:
    """float64 AdamW (decoupled weight decay, bias correction), flat dicts of arrays."""
    p = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, (grads, lr, wd) in enumerate(zip(grads_per_step, lrs, wds), start=1):
        for k in p:
            g = grads[k]
            m[k] = B1 * m[k] + (1 - B1) * g
            v[k] = B2 * v[k] + (1 - B2) * g * g
            update = (m[k] / (1 - B1 ** t)) / (np.sqrt(v[k] / (1 - B2 ** t)) + eps)
            if mask[k]:
                update = update + wd * p[k]
            p[k] = p[k] - lr * update
    return p


def test_decay_mask_rules():
    mask = dict(tree_flatten(optim.decay_mask(tiny_params())))
    assert mask == {"blocks.0.norm1.weight": False, "blocks.0.norm1.bias": False,
                    "blocks.0.attn.qkv.weight": True, "blocks.0.attn.qkv.bias": False,
                    "blocks.0.ls1.gamma": False,
                    "mask_token": False,                  # 3-D, excluded by name
                    "patch_embed.proj.weight": True}      # conv kernel decays
    assert not optim.decays("fpn.norm.weight", mx.zeros((3, 3)))   # anything under a norm layer
    assert not optim.decays("pos_embed", mx.zeros((1, 16, 4)))
    assert not optim.decays("blocks.0.ls1.gamma", mx.zeros((1, 4)))     # excluded by name, whatever its shape
    assert optim.decays("head.weight", mx.zeros((3, 3)))


def test_adamw_matches_float64_numpy_over_several_steps_with_changing_lr_and_wd():
    params = tiny_params(1)
    mask = optim.decay_mask(params)
    opt = optim.adamw_init(params)
    rng = np.random.default_rng(7)
    flat0 = dict(tree_flatten(params))
    grads_np, lrs, wds = [], [1e-2, 5e-3, 2e-2, 1e-3, 1e-2], [0.05, 0.1, 0.0, 0.4, 0.04]
    for lr, wd in zip(lrs, wds):
        g = {k: rng.standard_normal(v.shape) for k, v in flat0.items()}
        grads_np.append(g)
        grads = _unflatten_like(params, {k: mx.array(x.astype(np.float32)) for k, x in g.items()})
        params, opt = optim.adamw_update(params, grads, opt, lr=mx.array(lr), weight_decay=mx.array(wd),
                                         betas=(B1, B2), decay_mask=mask)
    want = np_adamw(flat0, grads_np, lrs, wds, dict(tree_flatten(mask)))
    for k, got in tree_flatten(params):
        assert got.dtype == mx.float32
        np.testing.assert_allclose(np.array(got), want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert opt["count"].item() == len(lrs) and opt["count"].dtype == mx.int32
    # decay made a difference where it applies (the test would not notice a mask that is ignored)
    no_decay = np_adamw(flat0, grads_np, lrs, wds, {k: False for k in flat0})
    assert np.abs(no_decay["blocks.0.attn.qkv.weight"] - want["blocks.0.attn.qkv.weight"]).max() > 1e-4


def _unflatten_like(template, flat: dict):
    keys = iter([k for k, _ in tree_flatten(template)])
    return tree_map(lambda _: flat[next(keys)], template)


def test_adamw_agrees_with_mlx_optimizers_adamw():
    """mlx.optimizers.AdamW(bias_correction=True) decays every parameter, so compare on a mask of all True."""
    params = tiny_params(2)
    reference = mlx.optimizers.AdamW(learning_rate=3e-3, betas=[B1, B2], eps=1e-8, weight_decay=0.1,
                                     bias_correction=True)
    ref_params = tree_map(lambda x: x, params)
    reference.init(ref_params)
    mask = tree_map(lambda _: True, params)
    opt = optim.adamw_init(params)
    rng = np.random.default_rng(3)
    for _ in range(4):
        grads = tree_map(lambda p: mx.array(rng.standard_normal(p.shape).astype(np.float32)), params)
        params, opt = optim.adamw_update(params, grads, opt, lr=mx.array(3e-3), weight_decay=mx.array(0.1),
                                         betas=(B1, B2), decay_mask=mask)
        ref_params = reference.apply_gradients(grads, ref_params)
    for (k, a), (_, b) in zip(tree_flatten(params), tree_flatten(ref_params)):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-7, err_msg=k)


def test_adamw_keeps_low_precision_parameter_dtypes():
    params = {"w": mx.ones((2, 2), dtype=mx.bfloat16)}
    new, opt = optim.adamw_update(params, {"w": mx.ones((2, 2), dtype=mx.bfloat16)}, optim.adamw_init(params),
                                  lr=mx.array(0.1), weight_decay=mx.array(0.0), betas=(B1, B2),
                                  decay_mask={"w": True})
    assert new["w"].dtype == mx.bfloat16
    assert np.allclose(np.array(new["w"].astype(mx.float32)), 0.9, atol=1e-2)   # first step moves by ~lr


def np_clip(grads: dict, max_norm: float):
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return {k: g * scale for k, g in grads.items()}, norm


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_by_global_norm_matches_numpy(max_norm):
    rng = np.random.default_rng(4)
    g = {"a": rng.standard_normal((3, 3)), "b": [rng.standard_normal(5)]}
    flat = {"a": g["a"], "b": g["b"][0]}
    want, want_norm = np_clip(flat, max_norm)
    clipped, norm = optim.clip_by_global_norm(tree_map(lambda x: mx.array(x.astype(np.float32)), g), max_norm)
    assert norm.item() == pytest.approx(want_norm, rel=1e-6)
    np.testing.assert_allclose(np.array(clipped["a"]), want["a"], rtol=1e-6)
    np.testing.assert_allclose(np.array(clipped["b"][0]), want["b"], rtol=1e-6)
    if max_norm < want_norm:   # clipped: the result has the requested norm
        assert optim.global_norm(clipped).item() == pytest.approx(max_norm, rel=1e-5)


@pytest.mark.parametrize("off", [None, 0, 0.0, -1.0])
def test_clip_off_returns_grads_unchanged_with_their_norm(off):
    g = {"a": mx.array([30.0, 40.0])}
    same, norm = optim.clip_by_global_norm(g, off)
    assert same["a"].tolist() == [30.0, 40.0] and norm.item() == pytest.approx(50.0)


def test_clip_keeps_dtype_and_global_norm_of_empty_tree():
    g = {"a": mx.full((4,), 10.0, dtype=mx.bfloat16)}
    clipped, norm = optim.clip_by_global_norm(g, 1.0)
    assert clipped["a"].dtype == mx.bfloat16 and norm.dtype == mx.float32
    assert norm.item() == pytest.approx(20.0)
    assert optim.global_norm({}).item() == 0.0


def test_non_finite_gradients_are_detected_before_and_after_clipping():
    good = {"a": mx.array([1.0, 2.0]), "b": [mx.array([3], dtype=mx.int32)]}
    assert optim.all_finite(good).item() is True
    assert optim.all_finite({}).item() is True
    for bad in (float("nan"), float("inf"), -float("inf")):
        tree = {"a": mx.array([1.0, 2.0]), "b": [mx.array([0.0, bad])]}
        assert optim.all_finite(tree).item() is False
        clipped, norm = optim.clip_by_global_norm(tree, 1.0)
        assert not math.isfinite(norm.item()) and optim.all_finite(clipped).item() is False


def test_select_tree_skips_a_bad_update_inside_one_compiled_trace():
    traces = []

    def step(params, grads):
        traces.append(1)
        new = {"w": params["w"] - 0.1 * grads["w"], "n": [params["n"][0] + 1]}   # int leaves stay int
        return optim.select_tree(optim.all_finite(grads), new, params)

    compiled = mx.compile(step)
    params = {"w": mx.array([1.0, 2.0]), "n": [mx.array(3, dtype=mx.int32)]}
    out = compiled(params, {"w": mx.array([1.0, 1.0])})
    assert np.allclose(np.array(out["w"]), [0.9, 1.9]) and out["n"][0].item() == 4
    assert out["n"][0].dtype == mx.int32
    out = compiled(params, {"w": mx.array([1.0, float("nan")])})
    assert out["w"].tolist() == [1.0, 2.0] and out["n"][0].item() == 3   # the old values, bit for bit
    assert len(traces) == 1


def test_every_optimizer_the_schema_accepts_has_an_update_rule():
    import dataclasses
    import typing

    from hjepa_mlx.config.schema import TrainingConfig
    from hjepa_mlx.optim import OPTIMIZERS
    field = next(f for f in dataclasses.fields(TrainingConfig) if f.name == "optimizer")
    assert set(typing.get_args(typing.get_type_hints(TrainingConfig)[field.name])) == set(OPTIMIZERS)


@pytest.mark.parametrize("clip", [None, 0.5])
def test_adamw_kernel_path_equals_mlx_ops_bit_for_bit(clip):
    """On the CPU kernels each parameter's update is one C++ pass; it must be the MLX formula's float32
    arithmetic exactly, over several steps, with clipping, weight decay on some leaves and a skipped step."""
    from hjepa_mlx import kernels

    if not kernels.available():
        pytest.skip(f"C++ kernels unavailable: {kernels.describe()}")
    rng = np.random.default_rng(7)
    params = {"blocks": [{"weight": mx.array(rng.standard_normal((33, 20)).astype(np.float32)),
                          "bias": mx.array(rng.standard_normal(33).astype(np.float32))}],
              "mask_token": mx.array(rng.standard_normal((1, 20)).astype(np.float32))}
    mask = optim.decay_mask(params)

    def run(use_kernels):
        p, opt = params, optim.adamw_init(params)
        with contextlib.nullcontext() if use_kernels else kernels.disabled():
            for i in range(4):
                g = tree_map(lambda x: mx.array(rng_steps[i].standard_normal(x.shape).astype(np.float32)), params)
                norm = optim.global_norm(g)
                apply = mx.array(i != 2)                      # step 2 is skipped
                p, opt = optim.adamw_update(p, g, opt, lr=mx.array(1e-2), weight_decay=mx.array(0.05),
                                            betas=(0.9, 0.95), decay_mask=mask,
                                            grad_scale=optim.clip_scale(norm, clip), apply=apply)
                mx.eval(p, opt)
        return p, opt

    rng_steps = [np.random.default_rng(100 + i) for i in range(4)]
    fast = run(True)
    rng_steps = [np.random.default_rng(100 + i) for i in range(4)]
    ref = run(False)
    assert int(fast[1]["count"]) == int(ref[1]["count"]) == 3
    for (name, a), (_, b) in zip(tree_flatten(fast), tree_flatten(ref)):
        np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=name)
