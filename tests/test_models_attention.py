"""Attention: fused kernel vs reference formula vs float64 NumPy, and the Attention module with RoPE."""

import contextlib

import mlx.core as mx
import numpy as np
import pytest
from test_models_reference import np_attention, np_attention_core, to_numpy

from hjepa_mlx.models.attention import Attention, fused_attention, reference_attention


def _qkv(b=2, h=3, nq=7, nk=7, hd=16, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.standard_normal((b, h, n, hd)) for n in (nq, nk, nk)]


@pytest.mark.parametrize("nq, nk", [(7, 7), (5, 9)])
def test_fused_equals_reference(nq, nk):
    q, k, v = (mx.array(t.astype(np.float32)) for t in _qkv(nq=nq, nk=nk, scale=2.0))
    a = fused_attention(q, k, v, 0.25)
    b = reference_attention(q, k, v, 0.25)
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fn", [fused_attention, reference_attention])
@pytest.mark.parametrize("kernels_on", [True, False])
def test_attention_matches_float64_numpy(fn, kernels_on):
    """Both paths, with the C++ softmax (the CPU default) and with MLX's own."""
    from hjepa_mlx import kernels
    q, k, v = _qkv(seed=1, scale=1.5)
    with kernels.disabled() if not kernels_on else contextlib.nullcontext():
        out = fn(*(mx.array(t.astype(np.float32)) for t in (q, k, v)), 16 ** -0.5)
    np.testing.assert_allclose(np.array(out), np_attention_core(q, k, v, 16 ** -0.5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fn", [fused_attention, reference_attention])
@pytest.mark.parametrize("kernels_on", [True, False])
def test_masked_attention_matches_float64_numpy_on_the_allowed_keys(fn, kernels_on):
    """An additive mask (the shared-context predictor's): blocked keys get exactly zero weight, i.e. the
    result is float64 attention over each query's allowed keys alone."""
    from hjepa_mlx import kernels
    q, k, v = _qkv(nq=6, nk=6, seed=5, scale=1.5)
    allowed = np.random.default_rng(6).random((6, 6)) < 0.5
    allowed[:, 0] = True                                   # every query sees at least one key
    bias = mx.array(np.where(allowed, 0.0, -1e9).astype(np.float32))
    with kernels.disabled() if not kernels_on else contextlib.nullcontext():
        out = np.array(fn(*(mx.array(t.astype(np.float32)) for t in (q, k, v)), 0.25, bias))
    for i in range(6):
        keep = allowed[i]
        expected = np_attention_core(q[:, :, i:i + 1], k[:, :, keep], v[:, :, keep], 0.25)
        np.testing.assert_allclose(out[:, :, i:i + 1], expected, atol=1e-5, rtol=0)


def test_fused_and_reference_gradients_agree():
    """The two paths, and the reference path with MLX's own softmax (the C++ softmax's vjp against MLX's)."""
    from hjepa_mlx import kernels
    q, k, v = (mx.array(t.astype(np.float32)) for t in _qkv(seed=2))
    w = mx.array(np.random.default_rng(3).standard_normal(q.shape).astype(np.float32))

    def grads(f):
        return mx.grad(lambda a, b, c: (f(a, b, c, 0.25) * w).sum(), argnums=(0, 1, 2))(q, k, v)

    fused, ref = grads(fused_attention), grads(reference_attention)
    with kernels.disabled():
        ref_mlx = grads(reference_attention)
    for g_fused, g_ref, g_mlx in zip(fused, ref, ref_mlx):
        np.testing.assert_allclose(np.array(g_fused), np.array(g_ref), atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.array(g_ref), np.array(g_mlx), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("rope", [False, True])
def test_attention_module_matches_numpy(fused, rope):
    mx.random.seed(0)
    attn = Attention(24, 3, qkv_bias=True, fused=fused, rope_theta=100.0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 6, 24))
    idx = rng.integers(0, 16, size=(2, 6))
    positions = (idx // 4, idx % 4) if rope else None
    out = attn(mx.array(x.astype(np.float32)),
               None if positions is None else tuple(mx.array(p.astype(np.int32)) for p in positions))
    ref = np_attention(x, to_numpy(attn.parameters()), 3, positions, 100.0)
    np.testing.assert_allclose(np.array(out), ref, atol=1e-5, rtol=1e-5)


def test_attention_module_paths_agree():
    mx.random.seed(1)
    fused = Attention(32, 4, fused=True)
    ref = Attention(32, 4, fused=False)
    ref.update(fused.parameters())
    x = mx.random.normal((2, 9, 32))
    positions = (mx.array(np.arange(18).reshape(2, 9) // 5), mx.array(np.arange(18).reshape(2, 9) % 5))
    np.testing.assert_allclose(np.array(fused(x, positions)), np.array(ref(x, positions)), atol=1e-5, rtol=0)


def test_attention_weights_match_numpy_and_reproduce_the_output():
    """Attention.weights (used by log_attention) is the softmax the forward pass uses."""
    import mlx.core as mx
    import numpy as np

    from hjepa_mlx.models.attention import Attention

    attn = Attention(8, 2, fused=False)
    x = mx.array(np.random.default_rng(3).standard_normal((1, 5, 8)).astype(np.float32))
    w = np.array(attn.weights(x), dtype=np.float64)                       # (1, 2, 5, 5)
    p = attn.parameters()
    qkv = np.array(x, np.float64)[0] @ np.array(p["qkv"]["weight"], np.float64).T + np.array(p["qkv"]["bias"])
    q, k, v = (qkv[:, i * 8:(i + 1) * 8].reshape(5, 2, 4).transpose(1, 0, 2) for i in range(3))
    s = q @ k.transpose(0, 2, 1) / 2.0
    ref = np.exp(s - s.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(w[0], ref, atol=1e-5)
    out = (w[0] @ v).transpose(1, 0, 2).reshape(5, 8) @ np.array(p["proj"]["weight"], np.float64).T + np.array(p["proj"]["bias"])
    np.testing.assert_allclose(np.array(attn(x))[0], out, atol=1e-5)
