"""Float64 NumPy references for the model tests (written from the formulas, sharing no code with the
package), plus the checks that make the references themselves trustworthy.

Other `test_models_*` files import these functions (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map

_erf = np.vectorize(math.erf)


def to_numpy(tree):
    """A pytree of MLX arrays -> the same tree of float64 NumPy arrays."""
    return tree_map(lambda a: np.array(a.astype(mx.float32), dtype=np.float64), tree)


def np_layer_norm(x, weight=None, bias=None, eps=1e-6):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y if weight is None else y * weight + bias


def np_gelu(x):
    """Exact GELU: x * Phi(x)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def np_linear(x, p):
    y = x @ p["weight"].T
    return y + p["bias"] if "bias" in p else y


def np_softmax(s):
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


def np_attention_core(q, k, v, scale):
    """q (B, H, Nq, hd), k, v (B, H, Nk, hd) -> softmax(q k^T scale) v."""
    return np_softmax(np.einsum("bhqd,bhkd->bhqk", q, k) * scale) @ v


def np_rope(x, rows, cols, theta):
    """Axial 2-D RoPE by explicit loops: x (B, N, H, hd); pair (2j, 2j+1) of the first half of the channels
    turns by row * theta^(-2j / (hd/2)), of the second half by col * theta^(-2j / (hd/2))."""
    b, n, h, hd = x.shape
    half = hd // 2
    out = x.copy()
    for bi in range(b):
        for ti in range(n):
            for offset, pos in ((0, rows[bi, ti]), (half, cols[bi, ti])):
                for j in range(half // 2):
                    angle = pos * theta ** (-2.0 * j / half)
                    c, s = math.cos(angle), math.sin(angle)
                    a = x[bi, ti, :, offset + 2 * j]
                    bb = x[bi, ti, :, offset + 2 * j + 1]
                    out[bi, ti, :, offset + 2 * j] = a * c - bb * s
                    out[bi, ti, :, offset + 2 * j + 1] = a * s + bb * c
    return out


def np_attention(x, p, num_heads, positions=None, theta=10000.0):
    """The Attention module: x (B, N, D), p its parameters; positions (rows, cols) for RoPE or None."""
    b, n, d = x.shape
    hd = d // num_heads
    qkv = np_linear(x, p["qkv"]).reshape(b, n, 3, num_heads, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if positions is not None:
        q, k = np_rope(q, *positions, theta), np_rope(k, *positions, theta)
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
    out = np_attention_core(q, k, v, hd ** -0.5).transpose(0, 2, 1, 3).reshape(b, n, d)
    return np_linear(out, p["proj"])


def np_block(x, p, num_heads, positions=None, theta=10000.0):
    """Pre-norm block with optional LayerScale (present when p has 'ls1')."""
    a = np_attention(np_layer_norm(x, p["norm1"]["weight"], p["norm1"]["bias"]), p["attn"], num_heads,
                     positions, theta)
    x = x + (a * p["ls1"]["gamma"] if "ls1" in p else a)
    h = np_layer_norm(x, p["norm2"]["weight"], p["norm2"]["bias"])
    m = np_linear(np_gelu(np_linear(h, p["mlp"]["fc1"])), p["mlp"]["fc2"])
    return x + (m * p["ls2"]["gamma"] if "ls2" in p else m)


def np_patch_embed(images, p, patch):
    """Conv with kernel = stride = patch as a matmul on flattened patches. images (B, H, W, C) NHWC,
    weight (D, patch, patch, C) as MLX stores it -> (B, N, D) in raster order."""
    b, hh, ww, c = images.shape
    gh, gw = hh // patch, ww // patch
    patches = images.reshape(b, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    w = p["weight"].reshape(p["weight"].shape[0], -1)
    return patches @ w.T + p["bias"]


def np_sincos_2d_ijepa(dim, grid_h, grid_w):
    """I-JEPA's get_2d_sincos_pos_embed, transcribed (meshgrid(w, h): the first half encodes the column)."""
    def one_d(d, pos):
        omega = np.arange(d // 2, dtype=np.float64)
        omega /= d / 2.0
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    grid = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    return np.concatenate([one_d(dim // 2, grid[0]), one_d(dim // 2, grid[1])], axis=1)


def np_encoder(images, params, patch, num_heads, pos_table, indices=None, grid_w=None, rope_theta=None):
    """The ViT encoder: patch embed + fixed table, gather, blocks (RoPE at the gathered grid cells when
    rope_theta is given), final LayerNorm."""
    x = np_patch_embed(images, params["patch_embed"]["proj"], patch) + pos_table
    if indices is None:
        indices = np.broadcast_to(np.arange(x.shape[1]), x.shape[:2])
    x = np.take_along_axis(x, indices[..., None], axis=1)
    positions = (indices // grid_w, indices % grid_w) if rope_theta is not None else None
    for bp in params["blocks"]:
        x = np_block(x, bp, num_heads, positions, rope_theta or 10000.0)
    return np_layer_norm(x, params["norm"]["weight"], params["norm"]["bias"])


# ---------------------------------------------------------------- the references' own checks

def test_np_layer_norm_standardises():
    x = np.random.default_rng(0).standard_normal((3, 16)) * 5 + 2
    y = np_layer_norm(x, eps=0.0)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1.0, atol=1e-12)


def test_np_gelu_known_values():
    # GELU(x) = x * Phi(x); Phi(1) = 0.841344746..., Phi(-1) = 1 - Phi(1).
    np.testing.assert_allclose(np_gelu(np.array([0.0, 1.0, -1.0])),
                               [0.0, 0.8413447460685429, -0.15865525393145707], rtol=1e-12)


def test_np_rope_is_a_rotation_by_the_stated_angle():
    x = np.zeros((1, 1, 1, 8))
    x[..., 2] = 1.0                                                  # pair j=1 of the first half
    out = np_rope(x, np.array([[3]]), np.array([[5]]), theta=100.0)
    angle = 3 * 100.0 ** (-2.0 * 1 / 4)
    np.testing.assert_allclose(out[0, 0, 0, 2:4], [math.cos(angle), math.sin(angle)], rtol=1e-12)
    np.testing.assert_allclose(np.delete(out[0, 0, 0], [2, 3]), 0.0)


def test_np_patch_embed_matches_a_direct_convolution_sum():
    rng = np.random.default_rng(1)
    images = rng.standard_normal((1, 4, 6, 2))
    p = {"weight": rng.standard_normal((3, 2, 2, 2)), "bias": rng.standard_normal(3)}
    out = np_patch_embed(images, p, 2)
    # token (row 1, col 2) = index 1 * 3 + 2; its patch is images[:, 2:4, 4:6]
    direct = np.einsum("hwc,dhwc->d", images[0, 2:4, 4:6], p["weight"]) + p["bias"]
    np.testing.assert_allclose(out[0, 5], direct, rtol=1e-12)
