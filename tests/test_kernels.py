"""The C++ CPU kernels (hjepa_mlx._kernels via hjepa_mlx.kernels) against float64 NumPy, against MLX's
own ops, under mx.grad / mx.compile, on awkward shapes, and the fallback to MLX's ops."""

import math
import os
import platform
import shutil
import subprocess
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from hjepa_mlx import kernels as K

needs_ext = pytest.mark.skipif(not K.available(), reason=f"C++ kernels unavailable: {K.describe()}")

_ERFC = np.vectorize(math.erfc)


def _isas():
    """Every kernel build this CPU can run (the portable one always)."""
    if not K.available():
        return ["none"]
    out = []
    for isa in ("baseline", "avx2+fma", "avx512"):
        if K._EXT.select_isa(isa):
            out.append(isa)
    K._EXT.select_isa("auto")
    return out


@pytest.fixture(params=_isas())
def isa(request):
    if request.param == "none":
        pytest.skip(f"C++ kernels unavailable: {K.describe()}")
    assert K._EXT.select_isa(request.param)
    yield request.param
    K._EXT.select_isa("auto")


def _f32(a):
    return mx.array(np.asarray(a, dtype=np.float32))


def _np(a):
    return np.array(a).astype(np.float64)


# ---------------------------------------------------------------- float64 references

def ref_cdf(x):
    return 0.5 * _ERFC(-x / math.sqrt(2.0))


def ref_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def ref_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    xhat = (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return xhat if w is None else xhat * w + b, xhat


def ref_layer_norm_grads(x, w, dy, eps):
    _, xhat = ref_layer_norm(x, None, None, eps)
    rstd = 1.0 / np.sqrt(x.var(-1, keepdims=True) + eps)
    g = dy if w is None else dy * w
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = dy.reshape(-1, dy.shape[-1])
    return dx, (rows * xhat.reshape(rows.shape)).sum(0), rows.sum(0)


# ---------------------------------------------------------------- GELU

def _gelu_inputs():
    rng = np.random.default_rng(0)
    return np.concatenate([np.linspace(-12, 12, 4001), 3 * rng.standard_normal(3000),
                           [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8]]).astype(np.float32)


def test_gelu_values_within_1e6_relative(isa):
    x = _gelu_inputs()
    y = _np(K._EXT.gelu(_f32(x)))
    xd = x.astype(np.float64)
    ref = xd * ref_cdf(xd)
    np.testing.assert_array_less(np.abs(y - ref), 1e-6 * np.abs(ref) + 1e-37)


def test_gelu_tails_and_specials(isa):
    x = np.array([-30.0, -14.0, 13.0, 40.0, 1e30, np.inf, -np.inf, np.nan], np.float32)
    y = _np(K._EXT.gelu(_f32(x)))
    assert np.all(np.abs(y[:2]) < 1e-36)                    # true values ~1e-44 and below
    np.testing.assert_array_equal(y[2:6], x[2:6])          # Phi rounds to 1
    assert np.isnan(y[6]) and np.isnan(y[7])               # -inf * 0 and NaN, as x * Phi(x) in MLX


def test_gelu_gradient_matches_analytic_float64(isa):
    x = _gelu_inputs()
    c = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    for fn in (mx.grad(lambda a: (K.gelu(a) * _f32(c)).sum()),
               mx.compile(mx.grad(lambda a: (K.gelu(a) * _f32(c)).sum()))):
        g = _np(fn(_f32(x)))
        xd = x.astype(np.float64)
        cdf, xpdf = ref_cdf(xd), xd * ref_pdf(xd)
        ref = c * (cdf + xpdf)
        # Relative to the two terms' size: GELU' crosses zero near x = -0.75 where they cancel.
        np.testing.assert_array_less(np.abs(g - ref), 1e-6 * np.abs(c) * (np.abs(cdf) + np.abs(xpdf)) + 1e-37)


@needs_ext
def test_gelu_jvp_equals_vjp_elementwise():
    x, t = _f32(np.linspace(-4, 4, 101)), _f32(np.linspace(1, 2, 101))
    (jv,) = mx.jvp(K._EXT.gelu, [x], [t])[1]
    (vj,) = mx.vjp(K._EXT.gelu, [x], [t])[1]
    np.testing.assert_array_equal(np.array(jv), np.array(vj))


@needs_ext
def test_gelu_equals_mlx_on_threaded_odd_shapes_and_views():
    # 257 x 301 = 77,357 elements: split over the pool in uneven parts.
    x = mx.random.normal((257, 301), key=mx.random.key(2)) * 3
    for a in (x, x.T, x[::2, 1::3]):
        dense = mx.array(np.array(a))
        np.testing.assert_array_equal(np.array(K._EXT.gelu(a)), np.array(K._EXT.gelu(dense)))
        # MLX's own GELU loses ~2e-7 absolute to cancellation in 1 + erf(x / sqrt 2) for x < 0.
        np.testing.assert_allclose(np.array(K._EXT.gelu(a)), np.array(nn.gelu(a)), rtol=2e-6, atol=1e-6)
    # The gradient of a sum arrives as a broadcast (stride-0) cotangent.
    g = mx.grad(lambda a: K._EXT.gelu(a).sum())(x.T)
    with K.disabled():
        g_ref = mx.grad(lambda a: K.gelu(a).sum())(x.T)
    np.testing.assert_allclose(np.array(g), np.array(g_ref), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- softmax

@pytest.mark.parametrize("shape", [(7, 13), (3, 5, 197), (1001, 197), (4, 1)])
def test_softmax_values_and_gradient_match_float64(isa, shape):
    rng = np.random.default_rng(3)
    x = (4 * rng.standard_normal(shape)).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y_ref = ref_softmax(x.astype(np.float64))
    y = _np(K.softmax(_f32(x)))
    # Relative error budget: 2e-6, plus the rounding of x - max in float32 (as MLX's softmax has it),
    # which costs up to 6e-8 * |x - max| relative in exp.
    rel = 2e-6 + 6e-8 * (x.max(-1, keepdims=True) - x)
    np.testing.assert_array_less(np.abs(y - y_ref), rel * y_ref + 1e-30)
    dot = (dy * y_ref).sum(-1, keepdims=True)
    dx_ref = y_ref * (dy - dot)
    def vjp(a, c):
        return mx.vjp(K.softmax, [a], [c])[1][0]

    for run in (vjp, mx.compile(vjp)):
        dx = _np(run(_f32(x), _f32(dy)))
        # <dy, y> is a float32 sum: its error scales with sum |dy| y, not with its (possibly cancelled) value.
        dot_scale = (np.abs(dy) * y_ref).sum(-1, keepdims=True)
        np.testing.assert_array_less(np.abs(dx - dx_ref), rel * y_ref * (np.abs(dy) + dot_scale) + 1e-30)


@needs_ext
def test_softmax_on_views_and_masked_entries():
    x = mx.random.normal((197, 64), key=mx.random.key(4))
    for a in (x.T, x[:, ::3], mx.broadcast_to(x[:1], (5, 64))):
        np.testing.assert_allclose(np.array(K._EXT.softmax(a)), np.array(mx.softmax(a, axis=-1)), rtol=2e-6, atol=1e-9)
    m = mx.array([[0.0, -np.inf, 1.0]])
    np.testing.assert_allclose(np.array(K._EXT.softmax(m)), np.array(mx.softmax(m, axis=-1)), rtol=1e-6)


@needs_ext
def test_softmax_jvp():
    x, t = mx.random.normal((3, 11), key=mx.random.key(5)), mx.random.normal((3, 11), key=mx.random.key(6))
    (jv,) = mx.jvp(K._EXT.softmax, [x], [t])[1]
    (ref,) = mx.jvp(lambda a: mx.softmax(a, axis=-1), [x], [t])[1]
    np.testing.assert_allclose(np.array(jv), np.array(ref), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- LayerNorm

@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(5, 37), (2, 3, 384), (1001, 97)])
def test_layer_norm_values_and_gradients_match_float64(isa, affine, shape):
    rng = np.random.default_rng(7)
    d = shape[-1]
    x = (3 + 2 * rng.standard_normal(shape)).astype(np.float32)   # a mean offset, as real activations have
    dy = rng.standard_normal(shape).astype(np.float32)
    w = (1 + 0.5 * rng.standard_normal(d)).astype(np.float32) if affine else None
    b = (0.5 * rng.standard_normal(d)).astype(np.float32) if affine else None
    eps = 1e-6
    xd, wd, bd = x.astype(np.float64), None if w is None else w.astype(np.float64), None if b is None else b.astype(np.float64)
    y_ref, xhat = ref_layer_norm(xd, wd, bd, eps)
    args = [_f32(x)] + ([_f32(w), _f32(b)] if affine else [])

    def fn(*a):
        return K.layer_norm(a[0], a[1] if affine else None, a[2] if affine else None, eps)

    y = _np(fn(*args))
    # Error budget relative to what float32 subtracts: x and the mean, both scaled by 1/std.
    rstd = 1.0 / np.sqrt(xd.var(-1, keepdims=True) + eps)
    x_scale = (np.abs(xd) + np.abs(xd.mean(-1, keepdims=True))) * rstd
    scale = x_scale * (1 if w is None else np.abs(wd)) + (0 if b is None else np.abs(bd))
    np.testing.assert_array_less(np.abs(y - y_ref), 2e-6 * scale)
    dx_ref, dw_ref, db_ref = ref_layer_norm_grads(xd, wd, dy.astype(np.float64), eps)
    for run in (lambda *a: mx.vjp(fn, list(a), [_f32(dy)])[1],
                mx.compile(lambda *a: mx.vjp(fn, list(a), [_f32(dy)])[1])):
        grads = [_np(g) for g in run(*args)]
        rows = dy.reshape(-1, d).astype(np.float64)
        g = np.abs(dy) * (1 if w is None else np.abs(wd))
        # dx = rstd * (g - mean(g) - xhat * mean(g xhat)): budget relative to the terms' magnitudes.
        g_scale = rstd * (g + g.mean(-1, keepdims=True) + x_scale * (g * x_scale).mean(-1, keepdims=True))
        np.testing.assert_array_less(np.abs(grads[0] - dx_ref), 4e-6 * g_scale)
        if affine:
            abs_rows = np.abs(rows)
            np.testing.assert_array_less(np.abs(grads[1] - dw_ref),
                                         2e-6 * (abs_rows * x_scale.reshape(rows.shape)).sum(0))
            np.testing.assert_array_less(np.abs(grads[2] - db_ref), 2e-6 * abs_rows.sum(0))


@needs_ext
def test_layer_norm_weight_gradients_are_the_same_bits_every_time():
    """The weight / bias gradients sum per-part partials: added in part order, not in the order threads
    happened to start the parts (which made two identical runs differ in the 7th digit). Two streams
    evaluated together make the pool run some calls threaded and some serially."""
    rng = np.random.default_rng(3)
    x, dy = (_f32(rng.standard_normal((4096, 384)).astype(np.float32)) for _ in range(2))
    w, b = _f32(np.ones(384, np.float32)), _f32(np.zeros(384, np.float32))
    grads = mx.grad(lambda w, b: (K.layer_norm(x, w, b, 1e-6) * dy).sum(), argnums=(0, 1))
    side = mx.new_stream(mx.cpu)
    results = []
    for _ in range(12):
        with mx.stream(side):
            other = grads(w, b)
        mine = grads(w, b)
        mx.eval(mine, other)
        results += [tuple(np.array(g) for g in mine), tuple(np.array(g) for g in other)]
    for dw, db in results[1:]:
        np.testing.assert_array_equal(dw, results[0][0])
        np.testing.assert_array_equal(db, results[0][1])


@needs_ext
def test_layer_norm_equals_mlx_on_views():
    x = mx.random.normal((96, 40), key=mx.random.key(8))
    w, b = mx.random.normal((96,), key=mx.random.key(9)), mx.random.normal((96,), key=mx.random.key(10))
    for a in (x.T, x.T[::2]):
        np.testing.assert_allclose(np.array(K._EXT.layer_norm(a, w, b, 1e-5)),
                                   np.array(mx.fast.layer_norm(a, w, b, 1e-5)), rtol=1e-5, atol=2e-6)


def test_layer_norm_module_keeps_nn_layernorm_parameters():
    ln = K.LayerNorm(8, eps=1e-6)
    assert isinstance(ln, nn.LayerNorm) and set(ln.parameters()) == {"weight", "bias"}
    x = mx.random.normal((3, 8), key=mx.random.key(11))
    with K.disabled():
        ref = ln(x)
    np.testing.assert_allclose(np.array(ln(x)), np.array(ref), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- bias

@needs_ext
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (3, 37, 19), (4, 97, 384), (2049, 33)])
def test_bias_add_and_its_gradient_match_float64(isa, shape):
    rng = np.random.default_rng(sum(shape))
    x, b, dy = rng.standard_normal(shape), rng.standard_normal(shape[-1]), rng.standard_normal(shape)
    (out,), (gx, gb) = mx.vjp(lambda a, c: K._EXT.bias_add(a, c), [_f32(x), _f32(b)], [_f32(dy)])
    np.testing.assert_allclose(_np(out), x + b, rtol=0, atol=1e-6 * np.abs(x + b).max())
    np.testing.assert_array_equal(np.array(gx), np.array(_f32(dy)))       # the cotangent passes through
    ref = dy.reshape(-1, shape[-1]).sum(0)
    np.testing.assert_allclose(_np(gb), ref, rtol=0, atol=2e-6 * np.abs(dy).sum(tuple(range(len(shape) - 1))).max())


@needs_ext
def test_bias_add_jvp_in_either_argument():
    x = mx.random.normal((5, 3, 4), key=mx.random.key(36))
    b = mx.random.normal((4,), key=mx.random.key(37))
    tx, tb = mx.ones_like(x), mx.arange(4, dtype=mx.float32)
    for primals, tangents, expected in (((x, b), (tx, tb), np.array(tx) + np.array(tb)),
                                        ((x, b), (mx.zeros_like(x), tb), np.broadcast_to(np.array(tb), x.shape))):
        _, (out,) = mx.jvp(lambda a, c: K._EXT.bias_add(a, c), list(primals), list(tangents))
        np.testing.assert_array_equal(np.array(out), expected)
    _, (only_b,) = mx.jvp(lambda c: K._EXT.bias_add(x, c), [b], [tb])
    np.testing.assert_array_equal(np.array(only_b), np.broadcast_to(np.array(tb), x.shape))


@needs_ext
def test_bias_add_reuses_only_a_dead_input():
    """The output may take the input's buffer only when nothing else reads the input afterwards."""
    x = mx.random.normal((64, 48), key=mx.random.key(31))
    b = mx.random.normal((48,), key=mx.random.key(32))
    y = x * 2.0                                   # an intermediate that stays alive
    out = K._EXT.bias_add(y, b)
    mx.eval(out)
    np.testing.assert_array_equal(np.array(y), np.array(x) * 2.0)
    np.testing.assert_allclose(np.array(out), np.array(x) * 2.0 + np.array(b), rtol=1e-6)
    dead = K._EXT.bias_add(x * 2.0, b)            # the temporary dies into the kernel
    np.testing.assert_array_equal(np.array(dead), np.array(out))


@needs_ext
def test_bias_gradient_is_the_same_bits_every_time():
    dy = mx.random.normal((3000, 70), key=mx.random.key(33))
    sums = [np.array(K._EXT.column_sum(dy)) for _ in range(3)]
    for s in sums[1:]:
        np.testing.assert_array_equal(s, sums[0])


def test_linear_and_patch_embedding_equal_mlx_modules_forward_and_gradients():
    """kernels.Linear keeps nn.Linear's parameters and math; PatchEmbed's conv + bias equals nn.Conv2d."""
    from mlx.utils import tree_flatten

    from hjepa_mlx.models.vit import PatchEmbed

    mx.random.seed(4)
    lin = K.Linear(24, 40)
    ref = nn.Linear(24, 40)
    ref.update(lin.parameters())
    x = mx.random.normal((3, 11, 24), key=mx.random.key(34))
    embed = PatchEmbed(4, 16)
    images = mx.random.normal((2, 16, 16, 3), key=mx.random.key(35))
    assert sorted(k for k, _ in tree_flatten(lin.parameters())) == ["bias", "weight"]
    for module, reference, data in ((lin, ref, x), (embed, None, images)):
        def loss(params, m=module):
            m.update(params)
            return (m(data) ** 2).sum()

        value, grads = mx.value_and_grad(loss)(module.parameters())

        def ref_loss(params, m=module, r=reference):
            if r is None:                  # the patch embedding: nn.Conv2d's own call, reshaped
                m.update(params)
                y = m.proj(data)
                return (y.reshape(y.shape[0], -1, y.shape[-1]) ** 2).sum()
            r.update(params)
            return (r(data) ** 2).sum()

        ref_value, ref_grads = mx.value_and_grad(ref_loss)(module.parameters())
        np.testing.assert_allclose(value.item(), ref_value.item(), rtol=1e-5)
        for (name, g), (_, g_ref) in zip(tree_flatten(grads), tree_flatten(ref_grads)):
            np.testing.assert_allclose(np.array(g), np.array(g_ref), rtol=1e-5, atol=1e-5, err_msg=name)


# ---------------------------------------------------------------- attention

def ref_attention(qkv, heads, scale, mask=None):
    """float64 softmax(scale q k^T + mask) v per head from qkv (B, N, 3, H, hd) -> (out (B, N, D), parts)."""
    b, n, d3 = qkv.shape
    q, k, v = qkv.reshape(b, n, 3, heads, d3 // 3 // heads).transpose(2, 0, 3, 1, 4)
    p = ref_softmax(scale * q @ k.transpose(0, 1, 3, 2) + (0.0 if mask is None else mask))
    return (p @ v).transpose(0, 2, 1, 3).reshape(b, n, d3 // 3), (q, k, v, p)


def ref_attention_grad(qkv, heads, scale, dout, mask=None):
    """float64 d(sum(out * dout))/dqkv, written out from the chain rule."""
    b, n, d3 = qkv.shape
    _, (q, k, v, p) = ref_attention(qkv, heads, scale, mask)
    g = dout.reshape(b, n, heads, -1).transpose(0, 2, 1, 3)
    dv = p.transpose(0, 1, 3, 2) @ g
    dp = g @ v.transpose(0, 1, 3, 2)
    ds = scale * p * (dp - (dp * p).sum(-1, keepdims=True))
    grads = np.stack([ds @ k, ds.transpose(0, 1, 3, 2) @ q, dv])          # (3, B, H, N, hd)
    return grads.transpose(1, 3, 0, 2, 4).reshape(b, n, d3)


def _block_mask(n, seed):
    allowed = np.random.default_rng(seed).random((n, n)) < 0.6
    np.fill_diagonal(allowed, True)                     # every query keeps a key
    return np.where(allowed, 0.0, -1e9)


@needs_ext
@pytest.mark.parametrize("b, n, heads, hd", [(2, 7, 2, 8), (3, 13, 3, 5), (1, 1, 1, 4), (4, 97, 2, 64),
                                             (2, 33, 1, 17)])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_values_and_gradients_match_float64(isa, b, n, heads, hd, masked):
    """Every tail of the 6 x 16 micro-kernel (token and head-width remainders), one token, a job split
    over the threads, with and without an additive mask."""
    rng = np.random.default_rng(n * 7 + hd)
    qkv = 1.5 * rng.standard_normal((b, n, 3 * heads * hd))
    dout = rng.standard_normal((b, n, heads * hd))
    mask = _block_mask(n, n) if masked else None
    scale = hd ** -0.5
    m = None if mask is None else _f32(mask)
    (out,), (grad,) = mx.vjp(lambda x: K.attention(x, heads, scale, m), [_f32(qkv)], [_f32(dout)])
    ref_out, _ = ref_attention(qkv, heads, scale, mask)
    ref_grad = ref_attention_grad(qkv, heads, scale, dout, mask)
    np.testing.assert_allclose(_np(out), ref_out, rtol=0, atol=2e-6 * np.abs(ref_out).max())
    np.testing.assert_allclose(_np(grad), ref_grad, rtol=0, atol=2e-6 * np.abs(ref_grad).max())


@needs_ext
def test_attention_under_compile_and_on_views_equals_eager():
    """A strided view (a slice of a wider projection) is read as its values; compiled == eager bits."""
    wide = mx.random.normal((2, 11, 40), key=mx.random.key(21))
    qkv = wide[:, :, 4:40]                                          # (2, 11, 36): 3 x 2 heads x 6
    dense = mx.array(np.array(qkv))
    eager = K.attention(qkv, 2, 0.4)
    np.testing.assert_array_equal(np.array(eager), np.array(K.attention(dense, 2, 0.4)))
    compiled = mx.compile(lambda x: K.attention(x, 2, 0.4))(qkv)
    np.testing.assert_array_equal(np.array(compiled), np.array(eager))
    grad = mx.grad(lambda x: (K.attention(x, 2, 0.4) ** 2).sum())
    np.testing.assert_array_equal(np.array(mx.compile(grad)(qkv)), np.array(grad(dense)))


@needs_ext
@pytest.mark.parametrize("bad", ["width", "mask"])
def test_attention_refuses_wrong_shapes(bad):
    qkv = mx.zeros((2, 5, 3 * 8))
    with pytest.raises(ValueError, match="attention"):
        if bad == "width":
            K.attention(mx.zeros((2, 5, 20)), 2, 1.0)
        else:
            K.attention(qkv, 2, 1.0, mx.zeros((5, 4)))


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_module_takes_the_kernel_and_equals_mlx_ops(monkeypatch, rope, masked):
    """Attention (the encoders' and predictor's) goes through the kernel on the CPU - RoPE'd q and k are
    packed back for it - with the values and parameter gradients of MLX's per-head ops."""
    from mlx.utils import tree_flatten

    from hjepa_mlx.models.attention import Attention

    if not K.available():
        pytest.skip(f"C++ kernels unavailable: {K.describe()}")
    calls = []
    real = K.attention
    monkeypatch.setattr(K, "attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    mx.random.seed(3)
    attn = Attention(24, 3, fused=False, rope_theta=100.0)
    x = mx.random.normal((2, 10, 24), key=mx.random.key(22))
    idx = np.arange(20).reshape(2, 10)
    positions = (mx.array(idx // 4), mx.array(idx % 4)) if rope else None
    mask = _f32(_block_mask(10, 4)) if masked else None

    def loss(params):
        attn.update(params)
        return (attn(x, positions, mask) ** 2).mean()

    value, grads = mx.value_and_grad(loss)(attn.parameters())
    assert calls, "the module did not call the attention kernel"
    with K.disabled():
        ref_value, ref_grads = mx.value_and_grad(loss)(attn.parameters())
    np.testing.assert_allclose(value.item(), ref_value.item(), rtol=1e-5)
    for (name, g), (_, g_ref) in zip(tree_flatten(grads), tree_flatten(ref_grads)):
        np.testing.assert_allclose(np.array(g), np.array(g_ref), rtol=1e-4, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------- the model: kernels == MLX ops

def test_vit_block_kernels_equal_mlx_ops_forward_and_gradients():
    from hjepa_mlx.models.vit import Block

    mx.random.seed(0)
    block = Block(48, 3, activation="gelu")
    x = mx.random.normal((2, 37, 48), key=mx.random.key(12))

    def loss(params, a):
        block.update(params)
        return (block(a) ** 2).mean()

    params = block.parameters()
    out = mx.compile(mx.value_and_grad(loss))(params, x)
    with K.disabled():
        ref = mx.compile(mx.value_and_grad(lambda p, a: loss(p, a)))(params, x)
    np.testing.assert_allclose(out[0].item(), ref[0].item(), rtol=1e-6)
    from mlx.utils import tree_flatten
    for (name, g), (_, g_ref) in zip(tree_flatten(out[1]), tree_flatten(ref[1])):
        np.testing.assert_allclose(np.array(g), np.array(g_ref), rtol=1e-4, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------- choosing and falling back

def test_kernels_build_where_a_compiler_exists():
    """On Linux x86_64 with a C++ compiler, `pip install` must have built the kernels (else they were
    silently lost); say why they did not load."""
    if not (sys.platform == "linux" and platform.machine() == "x86_64" and shutil.which("c++")):
        pytest.skip("no Linux x86_64 C++ toolchain here")
    if os.environ.get(K.ENV_VAR, "").lower() in {"off", "0", "false", "none"}:
        pytest.skip(f"{K.ENV_VAR} switches them off")
    assert K.available(), K.describe()


def test_wrappers_use_mlx_ops_when_not_applicable(monkeypatch):
    class Exploding:
        def __getattr__(self, name):
            raise AssertionError(f"C++ kernel {name} called")

    monkeypatch.setattr(K, "_EXT", Exploding())
    x = mx.random.normal((4, 6), key=mx.random.key(13))
    with K.disabled():                                              # switched off
        np.testing.assert_array_equal(np.array(K.gelu(x)), np.array(nn.gelu(x)))
        assert not K.attention_applies(x[None])
    half = x.astype(mx.float16)                                     # not float32
    np.testing.assert_array_equal(np.array(K.softmax(half)), np.array(mx.softmax(half, axis=-1)))
    assert not K.attention_applies(half)
    assert not K.attention_applies(x[None], mx.zeros((1, 1, 4, 4)))   # only an (N, N) mask
    w = mx.ones((6,))                                               # weight without bias
    np.testing.assert_array_equal(np.array(K.layer_norm(x, w, None, 1e-6)),
                                  np.array(mx.fast.layer_norm(x, w, None, 1e-6)))
    monkeypatch.setattr(K, "_device_is_cpu", lambda: False)         # a GPU: MLX's fused kernels
    assert not K.use_kernels_for(x)
    np.testing.assert_array_equal(np.array(K.gelu(x)), np.array(nn.gelu(x)))


def test_missing_extension_falls_back_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(K, "_EXT", None)
    monkeypatch.setattr(K, "_REASON", "test reason")
    monkeypatch.setitem(K._state, "warned", False)
    x = mx.random.normal((4, 6), key=mx.random.key(14))
    out = [K.gelu(x), K.softmax(x), K.layer_norm(x, None, None, 1e-6)]
    np.testing.assert_array_equal(np.array(out[0]), np.array(nn.gelu(x)))
    np.testing.assert_array_equal(np.array(out[1]), np.array(mx.softmax(x, axis=-1)))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("kernels:")]
    assert len(lines) == 1 and "test reason" in lines[0]
    assert "MLX's own ops" in K.describe()
    monkeypatch.setitem(K._state, "warned", False)            # a printed describe() line is the one line
    print(K.describe())
    K.gelu(x)
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("kernels:")]) == 1


@needs_ext
def test_version_mismatch_refuses_the_extension(monkeypatch):
    monkeypatch.setattr(K._EXT, "mlx_version", "0.0.0")
    ext, reason = K._load()
    assert ext is None and "built for MLX 0.0.0" in reason


def test_env_switch_off_in_a_fresh_process():
    code = ("import hjepa_mlx, mlx.core as mx, mlx.nn as nn\nfrom hjepa_mlx import kernels as K\n"
            "x = mx.arange(6, dtype=mx.float32) - 3\n"
            "assert mx.array_equal(K.gelu(x), nn.gelu(x)).item() and not K.available()\nK.softmax(x)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, K.ENV_VAR: "off"})
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("kernels:")]
    assert len(lines) == 1 and f"{K.ENV_VAR}=off" in lines[0], proc.stdout


@pytest.mark.parametrize("activation", ["gelu", "relu", "gelu_fast"])
def test_bias_activation_matches_float64_and_mlx(isa, activation):
    """The MLP's fused bias + activation: values and both gradients against float64, and against MLX's ops."""
    rng = np.random.default_rng(9)
    h, b, dy = 2 * rng.standard_normal((3, 41, 70)), rng.standard_normal(70), rng.standard_normal((3, 41, 70))
    z = h + b
    if activation == "gelu":
        ref_y, ref_d = z * ref_cdf(z), dy * (ref_cdf(z) + z * ref_pdf(z))
    elif activation == "relu":
        ref_y, ref_d = np.maximum(z, 0), dy * (z > 0)
    else:
        s = 1 / (1 + np.exp(-1.702 * z))
        ref_y, ref_d = z * s, dy * (s + 1.702 * z * s * (1 - s))
    (y,), (gh, gb) = mx.vjp(lambda a, c: K.bias_activation(a, c, activation), [_f32(h), _f32(b)], [_f32(dy)])
    tol = 2e-6 if activation != "gelu_fast" else 1e-5
    np.testing.assert_allclose(_np(y), ref_y, rtol=0, atol=tol * np.abs(ref_y).max())
    np.testing.assert_allclose(_np(gh), ref_d, rtol=0, atol=tol * np.abs(ref_d).max())
    np.testing.assert_allclose(_np(gb), ref_d.sum((0, 1)), rtol=0, atol=tol * np.abs(ref_d).sum((0, 1)).max())
    with K.disabled():
        (y_mlx,), (gh_mlx, gb_mlx) = mx.vjp(lambda a, c: K.bias_activation(a, c, activation), [_f32(h), _f32(b)],
                                            [_f32(dy)])
    np.testing.assert_allclose(np.array(y), np.array(y_mlx), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(gb), np.array(gb_mlx), rtol=1e-4, atol=1e-4)
