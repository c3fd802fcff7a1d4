"""Model numerics against float64 NumPy references and stated properties."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from hjepa_mlx.models.attention import Attention, reference_attention
from hjepa_mlx.models.ema import ema_update
from hjepa_mlx.models.hierarchy import FPN, hierarchy_levels, level_grid, pool_to_level, target_features
from hjepa_mlx.models.posemb import apply_rope, rope_angles, sincos_2d
from hjepa_mlx.models.predictor import Predictor
from hjepa_mlx.models.specs import parse_encoder_name
from hjepa_mlx.models.vit import Block, LayerScale, PatchEmbed, ViTEncoder

RNG = np.random.default_rng(0)


def f64(x):
    return np.array(x, dtype=np.float64)


def np_layer_norm(x, w=None, b=None, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y if w is None else y * w + b


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---- position tables and RoPE

def test_sincos_table_matches_ijepa_formula():
    d, h, w = 16, 3, 5
    table = f64(sincos_2d(d, h, w))
    q = d // 4
    omega = 1.0 / 10000 ** (np.arange(q) / q)
    for idx in range(h * w):
        r, c = divmod(idx, w)
        expect = np.concatenate([np.sin(r * omega), np.cos(r * omega), np.sin(c * omega), np.cos(c * omega)])
        np.testing.assert_allclose(table[idx], expect, atol=1e-6)


def np_rope(x, rows, cols, theta):
    hd = x.shape[-1]
    q = hd // 4
    freqs = 1.0 / theta ** (np.arange(q) / q)
    ang = np.concatenate([rows[:, None] * freqs, cols[:, None] * freqs], axis=1)   # (N, hd/2)
    out = x.copy()
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out[..., 0::2] = x0 * np.cos(ang) - x1 * np.sin(ang)
    out[..., 1::2] = x0 * np.sin(ang) + x1 * np.cos(ang)
    return out


def test_rope_matches_numpy_and_preserves_norms():
    x = RNG.standard_normal((1, 2, 6, 8))
    rows, cols = np.array([0, 1, 2, 3, 0, 5]), np.array([4, 0, 2, 1, 3, 5])
    ang = rope_angles(8, mx.array(rows)[None], mx.array(cols)[None], 100.0)[:, None]
    out = f64(apply_rope(mx.array(x.astype(np.float32)), ang))
    np.testing.assert_allclose(out, np_rope(x, rows, cols, 100.0), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    q, k = RNG.standard_normal((1, 1, 1, 8)), RNG.standard_normal((1, 1, 1, 8))

    def score(p, p2):
        a = rope_angles(8, mx.array([[p[0]]]), mx.array([[p[1]]]), 10000.0)[:, None]
        b = rope_angles(8, mx.array([[p2[0]]]), mx.array([[p2[1]]]), 10000.0)[:, None]
        rq = f64(apply_rope(mx.array(q.astype(np.float32)), a))
        rk = f64(apply_rope(mx.array(k.astype(np.float32)), b))
        return float((rq * rk).sum())

    assert score((1, 2), (3, 5)) == pytest.approx(score((4, 0), (6, 3)), abs=1e-4)
    assert score((0, 0), (2, 2)) == pytest.approx(score((7, 7), (9, 9)), abs=1e-4)
    assert abs(score((0, 0), (2, 2)) - score((0, 0), (2, 3))) > 1e-3   # and it does depend on it


# ---- attention

def test_fused_and_reference_attention_agree_and_match_numpy():
    q, k, v = (RNG.standard_normal((2, 3, 7, 8)) for _ in range(3))
    scale = 8 ** -0.5
    mq, mk, mv = (mx.array(a.astype(np.float32)) for a in (q, k, v))
    fused = f64(mx.fast.scaled_dot_product_attention(mq, mk, mv, scale=scale))
    ref = f64(reference_attention(mq, mk, mv, scale))
    expect = np_softmax(q @ k.swapaxes(-1, -2) * scale) @ v
    assert np.abs(fused - ref).max() <= 1e-5
    np.testing.assert_allclose(ref, expect, atol=1e-5)


def test_attention_module_paths_agree():
    fused, ref = Attention(24, 3, fused=True), Attention(24, 3, fused=False)
    ref.update(fused.parameters())
    x = mx.array(RNG.standard_normal((2, 5, 24)).astype(np.float32))
    assert np.abs(f64(fused(x)) - f64(ref(x))).max() <= 1e-5


# ---- patch embedding, LayerScale, block

def test_patch_embedding_matches_numpy():
    pe = PatchEmbed(4, 6)
    img = RNG.standard_normal((1, 8, 12, 3)).astype(np.float32)
    out = f64(pe(mx.array(img)))
    w, b = f64(pe.proj.weight), f64(pe.proj.bias)       # (D, p, p, C)
    expect = []
    for r in range(2):
        for c in range(3):
            patch = img[0, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4].astype(np.float64)
            expect.append(np.einsum("dijc,ijc->d", w, patch) + b)
    np.testing.assert_allclose(out[0], np.array(expect), atol=1e-5)


def test_layerscale_scales_each_channel():
    ls = LayerScale(4, 1e-5)
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(f64(ls(mx.array(x))), x * 1e-5, rtol=1e-6)


def np_block(x, p, heads, layerscale=None):
    def lin(z, q):
        return z @ f64(q["weight"]).T + f64(q["bias"])
    b, n, d = x.shape
    hd = d // heads
    h = np_layer_norm(x, f64(p["norm1"]["weight"]), f64(p["norm1"]["bias"]))
    qkv = lin(h, p["attn"]["qkv"]).reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    att = np_softmax(qkv[0] @ qkv[1].swapaxes(-1, -2) * hd ** -0.5) @ qkv[2]
    a = lin(att.transpose(0, 2, 1, 3).reshape(b, n, d), p["attn"]["proj"])
    if layerscale:
        a = a * f64(p["ls1"]["gamma"])
    x = x + a
    h = np_layer_norm(x, f64(p["norm2"]["weight"]), f64(p["norm2"]["bias"]))
    h = lin(h, p["mlp"]["fc1"])
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
    m = lin(h, p["mlp"]["fc2"])
    if layerscale:
        m = m * f64(p["ls2"]["gamma"])
    return x + m


@pytest.mark.parametrize("layerscale", [False, True])
def test_block_matches_numpy(layerscale):
    block = Block(12, 3, use_layerscale=layerscale, layerscale_init=0.5)
    x = RNG.standard_normal((2, 5, 12))
    out = f64(block(mx.array(x.astype(np.float32))))
    np.testing.assert_allclose(out, np_block(x, block.parameters(), 3, layerscale), atol=1e-4)


def test_block_gradient_matches_finite_differences():
    block = Block(8, 2)
    x = mx.array(RNG.standard_normal((1, 3, 8)).astype(np.float32))

    def loss(w):
        block.update({"mlp": {"fc1": {"weight": w}}})
        return (block(x) ** 2).sum()

    w0 = block.mlp.fc1.weight
    grad = f64(mx.grad(loss)(w0))
    eps = 1e-2
    for idx in [(0, 0), (3, 5), (7, 2)]:
        e = np.zeros(w0.shape, dtype=np.float32)
        e[idx] = eps
        num = (loss(w0 + mx.array(e)).item() - loss(w0 - mx.array(e)).item()) / (2 * eps)
        assert grad[idx] == pytest.approx(num, rel=2e-2, abs=2e-3)
    block.update({"mlp": {"fc1": {"weight": w0}}})


# ---- encoder on gathered indices

def tiny_encoder(**kw):
    return ViTEncoder(patch_size=4, image_size=16, embed_dim=12, depth=2, num_heads=3, **kw)


def test_encoder_drops_masked_tokens_and_is_permutation_equivariant():
    enc = tiny_encoder()
    img = mx.array(RNG.standard_normal((2, 16, 16, 3)).astype(np.float32))
    idx = np.array([[0, 3, 5, 9], [15, 2, 7, 8]], dtype=np.int32)
    out = f64(enc(img, mx.array(idx)))
    assert out.shape == (2, 4, 12)
    perm = np.array([2, 0, 3, 1])
    out_perm = f64(enc(img, mx.array(idx[:, perm])))
    np.testing.assert_allclose(out_perm, out[:, perm], atol=1e-5)
    # the masked tokens are absent, not zeroed: changing a dropped patch's pixels changes nothing
    img2 = np.array(img)
    img2[0, 0:4, 4:8] += 5.0      # patch 1 (row 0, col 1) is not among image 0's indices
    np.testing.assert_allclose(f64(enc(mx.array(img2), mx.array(idx)))[0], out[0], atol=1e-5)


def test_recomputation_gives_same_loss_and_gradients():
    plain, ckpt = tiny_encoder(), tiny_encoder(use_checkpoint=True)
    ckpt.update(plain.parameters())
    img = mx.array(RNG.standard_normal((2, 16, 16, 3)).astype(np.float32))
    idx = mx.array(np.array([[0, 3, 5, 9], [1, 2, 7, 8]], dtype=np.int32))

    def loss_of(model):
        def f(params):
            model.update(params)
            return (model(img, idx) ** 2).mean()
        return mx.value_and_grad(f)

    (l1, g1), (l2, g2) = loss_of(plain)(plain.trainable_parameters()), loss_of(ckpt)(ckpt.trainable_parameters())
    assert abs(l1.item() - l2.item()) <= 1e-6
    for (k, a), (_, b) in zip(tree_flatten(g1), tree_flatten(g2)):
        assert np.abs(f64(a) - f64(b)).max() <= 1e-6, k


# ---- predictor and hierarchy

def test_predictor_output_shape_and_block_independence():
    pred = Predictor(grid=(4, 4), encoder_dim=12, predictor_dim=6, depth=1, num_heads=2)
    ctx = mx.array(RNG.standard_normal((2, 5, 12)).astype(np.float32))
    cidx = mx.array(np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]], dtype=np.int32))
    tidx = np.array([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [4, 11]]], dtype=np.int32)
    out = f64(pred(ctx, cidx, mx.array(tidx)))
    assert out.shape == (2, 3, 2, 12)
    # block 0's prediction does not depend on what block 2 asks for
    tidx2 = tidx.copy()
    tidx2[:, 2] = [[1, 2], [6, 7]]
    np.testing.assert_allclose(f64(pred(ctx, cidx, mx.array(tidx2)))[:, 0], out[:, 0], atol=1e-5)


def test_pool_to_level_matches_numpy_2d_pooling_with_ragged_edges():
    h = w = 5
    level = 1
    hl, wl = level_grid((h, w), level)
    assert (hl, wl) == (3, 3)
    target = np.array([[[0, 1, 5, 6, 4, 9, 24]]])                     # (1, 1, 7) patch indices
    cells = ((target // w) >> level) * wl + ((target % w) >> level)
    x = RNG.standard_normal((1, 1, 7, 3))
    pooled, weight = pool_to_level(mx.array(x.astype(np.float32)), mx.array(cells.astype(np.int32)), hl * wl)
    expect = np.zeros((hl * wl, 3))
    count = np.zeros(hl * wl)
    for j, p in enumerate(target[0, 0]):
        r, c = divmod(int(p), w)
        cell = (r // 2) * wl + c // 2
        expect[cell] += x[0, 0, j]
        count[cell] += 1
    expect[count > 0] /= count[count > 0, None]
    np.testing.assert_allclose(f64(pooled)[0, 0], expect, atol=1e-6)
    np.testing.assert_array_equal(f64(weight)[0, 0], (count > 0).astype(float))
    assert count[0] == 4 and count[2] == 2 and count[8] == 1       # a full cell, an edge cell, the corner


def test_hierarchy_levels_shapes_and_normalisation():
    grid = (4, 4)
    tidx = np.array([[[0, 1, 4, 5], [10, 11, 14, 15]]], dtype=np.int32)
    levels_idx = [mx.array(tidx)] + [mx.array((((tidx // 4) >> l) * math.ceil(4 / 2 ** l)
                                               + ((tidx % 4) >> l)).astype(np.int32)) for l in (1, 2)]
    p = mx.array(RNG.standard_normal((1, 2, 4, 6)).astype(np.float32))
    t = mx.array(RNG.standard_normal((1, 2, 4, 6)).astype(np.float32))
    out = hierarchy_levels(p, t, levels_idx, grid, True)
    assert [o[0].shape for o in out] == [(1, 2, 4, 6), (1, 2, 4, 6), (1, 2, 1, 6)]
    for pl, tl, wl in out:
        np.testing.assert_allclose(np.linalg.norm(f64(pl), axis=-1)[f64(wl) > 0], 1.0, atol=1e-5)
    # level 1: each block is exactly one 2x2 cell, so its pooled target is the block mean (then L2-normed)
    mean = f64(t)[0, 0].mean(0)
    cell0 = int(levels_idx[1][0, 0, 0].item())
    np.testing.assert_allclose(f64(out[1][1])[0, 0, cell0], mean / np.linalg.norm(mean), atol=1e-5)


def test_target_features_have_no_parameters_after_the_encoder():
    enc = tiny_encoder()
    img = mx.array(RNG.standard_normal((1, 16, 16, 3)).astype(np.float32))
    out = f64(target_features(enc, img))
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(-1), 1.0, atol=1e-3)


@pytest.mark.parametrize("fusion", ["add", "concat"])
def test_fpn_shapes_and_values(fusion):
    fpn = FPN(num_levels=2, in_dim=4, feature_dim=3, fusion=fusion)
    g0 = RNG.standard_normal((1, 1, 3, 3, 4))
    g1 = RNG.standard_normal((1, 1, 2, 2, 4))
    out = fpn([mx.array(g0.astype(np.float32)), mx.array(g1.astype(np.float32))])
    assert [o.shape for o in out] == [(1, 1, 3, 3, 4), (1, 1, 2, 2, 4)]
    p = fpn.parameters()
    lin = lambda z, q: z @ f64(q["weight"]).T + f64(q["bias"])
    top = lin(g1, p["lateral"][1])
    up = np.repeat(np.repeat(top, 2, axis=2), 2, axis=3)[:, :, :3, :3]
    lat = lin(g0, p["lateral"][0])
    fused = lat + up if fusion == "add" else lin(np.concatenate([lat, up], -1), p["fuse"][0])
    np.testing.assert_allclose(f64(out[0]), lin(fused, p["output"][0]), atol=1e-5)
    np.testing.assert_allclose(f64(out[1]), lin(top, p["output"][1]), atol=1e-5)


# ---- EMA, parameter counts

def test_ema_update():
    t = {"a": mx.array([1.0, 2.0]), "b": {"c": mx.array([[3.0]])}}
    o = {"a": mx.array([3.0, 6.0]), "b": {"c": mx.array([[5.0]])}}
    same = lambda x, y: all(np.allclose(f64(a), f64(b)) for (_, a), (_, b) in zip(tree_flatten(x), tree_flatten(y)))
    assert same(ema_update(t, o, 1.0), t)
    assert same(ema_update(t, o, 0.0), o)
    assert same(ema_update(t, o, 0.5), tree_map(lambda a, b: (a + b) / 2, t, o))


@pytest.mark.parametrize("name,timm_count", [("vit_tiny_patch16_224", 5_524_416),
                                             ("vit_small_patch16_224", 21_665_664),
                                             ("vit_base_patch16_224", 85_798_656)])
def test_parameter_counts_match_timm(name, timm_count):
    """timm's count includes a class token (D) and a learned 197 x D position embedding; ours has
    neither (no class token; fixed sin-cos positions), so ours = timm - D - 197 * D."""
    s = parse_encoder_name(name)
    enc = ViTEncoder(patch_size=s.patch_size, image_size=s.image_size, embed_dim=s.embed_dim, depth=s.depth,
                     num_heads=s.num_heads)
    ours = sum(v.size for _, v in tree_flatten(enc.parameters()))
    assert ours == timm_count - s.embed_dim - 197 * s.embed_dim
