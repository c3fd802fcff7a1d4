"""ViT pieces against float64 NumPy: patch embedding, LayerScale block, the encoder on gathered index sets;
properties of gathering; a finite-difference gradient check of one block."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map, tree_unflatten
from test_models_reference import np_block, np_encoder, np_patch_embed, np_sincos_2d_ijepa, to_numpy

from hjepa_mlx.errors import UserError
from hjepa_mlx.models.vit import Block, PatchEmbed, ViTEncoder

TINY = dict(patch_size=4, image_size=16, embed_dim=16, depth=2, num_heads=2)   # 4 x 4 grid, head dim 8


def _images(b=2, size=16, seed=0):
    return np.random.default_rng(seed).standard_normal((b, size, size, 3))


def test_patch_embed_matches_numpy():
    mx.random.seed(0)
    pe = PatchEmbed(4, 8)
    x = _images(b=2, size=12)
    out = pe(mx.array(x.astype(np.float32)))
    assert out.shape == (2, 9, 8)
    np.testing.assert_allclose(np.array(out), np_patch_embed(x, to_numpy(pe.parameters())["proj"], 4),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layerscale", [False, True])
def test_block_matches_numpy(layerscale):
    mx.random.seed(1)
    block = Block(16, 2, use_layerscale=layerscale, layerscale_init=0.3)
    params = block.parameters()
    if layerscale:   # per-channel values, so a wrong broadcast or a swapped ls1/ls2 shows
        params["ls1"]["gamma"] = mx.linspace(-1.0, 1.0, 16)
        params["ls2"]["gamma"] = mx.linspace(0.5, 2.0, 16)
        block.update(params)
    x = np.random.default_rng(2).standard_normal((2, 5, 16))
    out = block(mx.array(x.astype(np.float32)))
    np.testing.assert_allclose(np.array(out), np_block(x, to_numpy(block.parameters()), 2), atol=2e-5, rtol=1e-5)


def test_layerscale_starts_at_its_init_and_damps_the_branches():
    mx.random.seed(3)
    block = Block(16, 2, use_layerscale=True, layerscale_init=1e-5)
    assert np.all(np.array(block.ls1.gamma) == np.float32(1e-5))
    x = mx.random.normal((1, 4, 16))
    assert float(mx.abs(block(x) - x).max()) < 1e-3     # x + 1e-5 * F(x): nearly the identity


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_encoder_on_indices_matches_numpy(rope, fused):
    mx.random.seed(4)
    enc = ViTEncoder(**TINY, use_rope=rope, rope_theta=100.0, use_fused_attention=fused)
    x = _images(seed=5)
    idx = np.array([[0, 5, 6, 15, 9], [3, 2, 12, 1, 8]], dtype=np.int32)
    out = enc(mx.array(x.astype(np.float32)), mx.array(idx))
    assert out.shape == (2, 5, 16)
    ref = np_encoder(x, to_numpy(enc.parameters()), 4, 2, np_sincos_2d_ijepa(16, 4, 4), idx, grid_w=4,
                     rope_theta=100.0 if rope else None)
    np.testing.assert_allclose(np.array(out), ref, atol=5e-5, rtol=1e-4)


def test_encoder_without_the_absolute_table_matches_numpy():
    """absolute_positions=False: the float64 reference with a zero position table (RoPE still rotates q, k)."""
    mx.random.seed(4)
    enc = ViTEncoder(**TINY, use_rope=True, rope_theta=100.0, absolute_positions=False)
    x = _images(seed=5)
    idx = np.array([[0, 5, 6, 15, 9], [3, 2, 12, 1, 8]], dtype=np.int32)
    out = enc(mx.array(x.astype(np.float32)), mx.array(idx))
    ref = np_encoder(x, to_numpy(enc.parameters()), 4, 2, np.zeros((16, 16)), idx, grid_w=4, rope_theta=100.0)
    np.testing.assert_allclose(np.array(out), ref, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("absolute", [True, False])
def test_only_the_absolute_table_tells_equal_patches_apart(absolute):
    """A constant image has equal patches: with positions only through RoPE every token's output is the
    same (attention mixes equal values, whatever its weights); the absolute table makes them differ."""
    mx.random.seed(12)
    enc = ViTEncoder(**TINY, use_rope=True, absolute_positions=absolute)
    out = np.array(enc(mx.full((1, 16, 16, 3), 0.7)))[0]
    spread = np.abs(out - out[0]).max()
    assert (spread > 1e-2) if absolute else (spread < 1e-5), spread


def test_no_absolute_table_needs_rope():
    with pytest.raises(ValueError, match="needs RoPE"):
        ViTEncoder(**TINY, absolute_positions=False)


def test_encoder_without_indices_runs_on_all_patches():
    mx.random.seed(6)
    enc = ViTEncoder(**TINY, use_rope=True)
    x = mx.array(_images(seed=7).astype(np.float32))
    everything = mx.broadcast_to(mx.arange(16, dtype=mx.int32)[None], (2, 16))
    np.testing.assert_array_equal(np.array(enc(x)), np.array(enc(x, everything)))


@pytest.mark.parametrize("rope", [False, True])
def test_permuting_the_indices_permutes_the_outputs(rope):
    mx.random.seed(8)
    enc = ViTEncoder(**TINY, use_rope=rope)
    x = mx.array(_images(seed=9).astype(np.float32))
    idx = np.array([[1, 4, 7, 10, 13, 14]] * 2, dtype=np.int32)
    perm = np.array([5, 0, 3, 1, 4, 2])
    a = np.array(enc(x, mx.array(idx)))
    b = np.array(enc(x, mx.array(idx[:, perm])))
    np.testing.assert_allclose(b, a[:, perm], atol=1e-5, rtol=0)


def test_dropped_patches_do_not_influence_the_kept_tokens():
    mx.random.seed(10)
    enc = ViTEncoder(**TINY)
    x = _images(b=1, seed=11)
    idx = mx.array([[0, 1, 4, 5]], dtype=mx.int32)       # the top-left 2 x 2 patches
    y = x.copy()
    y[:, 8:, 8:] += 10.0                                   # change only the bottom-right patches
    a = enc(mx.array(x.astype(np.float32)), idx)
    b = enc(mx.array(y.astype(np.float32)), idx)
    np.testing.assert_array_equal(np.array(a), np.array(b))
    # while on all tokens they do (attention sees them)
    assert float(mx.abs(enc(mx.array(x.astype(np.float32)))[:, 0] - enc(mx.array(y.astype(np.float32)))[:, 0]).max()) > 1e-3


def test_position_table_is_a_constant_not_a_parameter():
    enc = ViTEncoder(**TINY)
    names = [k for k, _ in tree_flatten(enc.parameters())]
    assert not any("pos" in k for k in names)
    assert "patch_embed.proj.weight" in names


@pytest.mark.parametrize("kwargs, message", [
    (dict(TINY, image_size=18), "not divisible by the patch size"),
    (dict(TINY, embed_dim=18, num_heads=2), "divisible by 4"),
    (dict(TINY, embed_dim=24, num_heads=4, use_rope=True), "head width 6"),
])
def test_bad_shapes_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        ViTEncoder(**kwargs)


@pytest.mark.parametrize("layerscale", [False, True])
def test_block_gradient_matches_float64_central_differences(layerscale):
    """mx.grad of a tiny fp32 block (with RoPE) vs central differences of the float64 NumPy block.

    (Not MLX float64 differences: on the MLX CPU backend several float64 ops - exp, erf, layer norm -
    are only float32-accurate, which makes eps = 1e-6 differences meaningless.)"""
    mx.random.seed(12)
    block = Block(8, 2, use_layerscale=layerscale, layerscale_init=0.5)
    rng = np.random.default_rng(13)
    x0 = rng.standard_normal((1, 4, 8))
    w = rng.standard_normal((1, 4, 8))
    rows, cols = np.array([[0, 0, 1, 1]]), np.array([[0, 1, 0, 1]])

    def mlx_loss(params, x):
        block.update(params)
        return (block(x, (mx.array(rows), mx.array(cols))) * mx.array(w.astype(np.float32))).sum()

    g_params, g_x = mx.grad(mlx_loss, argnums=(0, 1))(block.parameters(), mx.array(x0.astype(np.float32)))
    g_params = dict(tree_flatten(to_numpy(g_params)))
    base = to_numpy(block.parameters())
    eps = 1e-6

    def np_loss(flat_params, x):
        return float((np_block(x, tree_unflatten(list(flat_params.items())), 2, (rows, cols)) * w).sum())

    def central(shift):
        return (shift(+eps) - shift(-eps)) / (2 * eps)

    flat = dict(tree_flatten(base))
    checks = []
    for i in [(0, 0, 0), (0, 2, 5), (0, 3, 7)]:
        def shift(d, i=i):
            x = x0.copy()
            x[i] += d
            return np_loss(flat, x)
        checks.append((f"x{i}", central(shift), np.array(g_x)[i]))
    names = ["attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "mlp.fc1.weight", "mlp.fc2.bias",
             "norm1.weight", "norm2.bias"] + (["ls1.gamma", "ls2.gamma"] if layerscale else [])
    for name in names:
        i = tuple(s // 2 for s in flat[name].shape)

        def shift(d, name=name, i=i):
            p = flat[name].copy()
            p[i] += d
            return np_loss({**flat, name: p}, x0)
        checks.append((name, central(shift), g_params[name][i]))
    for name, numeric, analytic in checks:
        assert abs(numeric) > 1e-4, name                 # a real dependence, so the comparison means something
        assert abs(numeric - analytic) < 2e-5 * max(1.0, abs(numeric)), (name, numeric, analytic)


def test_encoder_gives_the_same_result_compiled():
    mx.random.seed(14)
    enc = ViTEncoder(**TINY, use_rope=True)
    x = mx.array(_images(seed=15).astype(np.float32))
    idx = mx.array([[0, 3, 5, 9], [2, 7, 11, 15]], dtype=mx.int32)
    compiled = mx.compile(lambda a, i: enc(a, i))
    np.testing.assert_allclose(np.array(compiled(x, idx)), np.array(enc(x, idx)), atol=1e-5, rtol=0)


def test_parameters_stay_float32_for_bf16_compute():
    mx.random.seed(16)
    enc = ViTEncoder(**TINY)
    assert {v.dtype for _, v in tree_flatten(enc.parameters())} == {mx.float32}
    enc.update(tree_map(lambda p: p.astype(mx.bfloat16), enc.parameters()))
    out = enc(mx.array(_images(b=1, seed=17)).astype(mx.bfloat16), mx.array([[0, 1, 2]], dtype=mx.int32))
    assert out.dtype == mx.bfloat16 and bool(mx.isfinite(out.astype(mx.float32)).all())


def test_nn_value_and_grad_reaches_every_parameter():
    mx.random.seed(18)
    enc = ViTEncoder(**TINY, use_layerscale=True, use_rope=True)
    x = mx.array(_images(b=1, seed=19).astype(np.float32))
    _, grads = nn.value_and_grad(enc, lambda a: (enc(a, mx.array([[1, 2, 6]], dtype=mx.int32)) ** 2).sum())(x)
    for name, g in tree_flatten(grads):
        assert float(mx.abs(g).max()) > 0, name
