"""Hierarchy pooling on the 2-D patch grid, targets without affine layer norm, and the FPN, vs NumPy."""

import math

import mlx.core as mx
import numpy as np
import pytest
from test_models_reference import np_layer_norm, np_linear, to_numpy

from hjepa_mlx.models.hierarchy import FPN, hierarchy_levels, level_grid, pool_to_level, target_features
from hjepa_mlx.models.vit import ViTEncoder


def _cells(idx, grid_w, level):
    """The sampler's contract, from the patch indices: cell = (row >> l) * Wl + (col >> l)."""
    wl = math.ceil(grid_w / 2 ** level)
    return (idx // grid_w >> level) * wl + (idx % grid_w >> level)


def np_pool_loop(x, idx, grid, level):
    """Mean of each block's members per 2^l x 2^l cell, by explicit loops over the 2-D grid."""
    b, m, k, d = x.shape
    h, w = grid
    s = 2 ** level
    hl, wl = math.ceil(h / s), math.ceil(w / s)
    pooled = np.zeros((b, m, hl * wl, d))
    weight = np.zeros((b, m, hl * wl))
    for bi in range(b):
        for mi in range(m):
            for ci in range(hl):
                for cj in range(wl):
                    members = [j for j in range(k)
                               if ci * s <= idx[bi, mi, j] // w < (ci + 1) * s
                               and cj * s <= idx[bi, mi, j] % w < (cj + 1) * s]
                    if members:
                        pooled[bi, mi, ci * wl + cj] = x[bi, mi, members].mean(axis=0)
                        weight[bi, mi, ci * wl + cj] = 1.0
    return pooled, weight


@pytest.mark.parametrize("grid, level", [((14, 14), 2), ((14, 14), 1), ((5, 7), 1), ((5, 7), 2), ((4, 4), 0)])
def test_pool_to_level_matches_a_2d_pooling_loop(grid, level):
    rng = np.random.default_rng(level)
    n = grid[0] * grid[1]
    idx = np.stack([[rng.choice(n, 9, replace=False) for _ in range(3)] for _ in range(2)])  # (2, 3, 9)
    x = rng.standard_normal((2, 3, 9, 5))
    hl, wl = level_grid(grid, level)
    pooled, weight = pool_to_level(mx.array(x.astype(np.float32)), mx.array(_cells(idx, grid[1], level)), hl * wl)
    ref_pooled, ref_weight = np_pool_loop(x, idx, grid, level)
    np.testing.assert_allclose(np.array(pooled), ref_pooled, atol=1e-6, rtol=1e-6)
    np.testing.assert_array_equal(np.array(weight), ref_weight)


def test_whole_grid_block_gives_2d_average_pooling_with_ragged_edges():
    """A block holding every patch of a 14 x 14 grid: level 2 = 4 x 4 average pooling whose last row and
    column of cells average 2 (not 4) patches - exact, no zero padding."""
    rng = np.random.default_rng(7)
    h = w = 14
    image = rng.standard_normal((h, w, 3))
    idx = rng.permutation(h * w)[None, None]                      # any order
    x = image.reshape(h * w, 3)[idx]                              # (1, 1, 196, 3)
    pooled, weight = pool_to_level(mx.array(x.astype(np.float32)), mx.array(_cells(idx, w, 2)), 16)
    expected = np.zeros((4, 4, 3))
    for i in range(4):
        for j in range(4):
            expected[i, j] = image[4 * i:4 * i + 4, 4 * j:4 * j + 4].mean(axis=(0, 1))
    np.testing.assert_allclose(np.array(pooled).reshape(4, 4, 3), expected, atol=1e-6)
    np.testing.assert_allclose(expected[3, 3], image[12:, 12:].mean(axis=(0, 1)))   # the 2 x 2 corner
    assert np.array(weight).min() == 1.0


def test_predictions_and_targets_average_the_same_patches():
    rng = np.random.default_rng(8)
    idx = np.array([[[0, 1, 7, 8, 9]]])                           # on a 7 x 7 grid
    pred = rng.standard_normal((1, 1, 5, 4))
    level_idx = [mx.array(_cells(idx, 7, level)) for level in range(3)]
    levels = hierarchy_levels(mx.array(pred.astype(np.float32)), mx.array(2 * pred.astype(np.float32)),
                              level_idx, (7, 7), normalize_embeddings=False)
    for p, t, w in levels:
        np.testing.assert_allclose(np.array(t), 2 * np.array(p), atol=1e-6)
    p1, _, w1 = levels[1]
    # level 1 (4 x 4 cells): patches 0, 1, 7, 8 share cell 0; patch 9 = (row 1, col 2) is alone in cell 1
    np.testing.assert_allclose(np.array(p1)[0, 0, 0], pred[0, 0, :4].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(np.array(p1)[0, 0, 1], pred[0, 0, 4], atol=1e-6)
    assert np.array(w1)[0, 0].tolist() == [1, 1] + [0] * 14


def test_normalize_embeddings_gives_unit_vectors_and_targets_carry_no_gradient():
    rng = np.random.default_rng(9)
    idx = np.stack([rng.choice(16, 5, replace=False) for _ in range(2)])[None]
    pred = mx.array(rng.standard_normal((1, 2, 5, 6)).astype(np.float32))
    target = mx.array(rng.standard_normal((1, 2, 5, 6)).astype(np.float32))
    level_idx = [mx.array(_cells(idx, 4, level)) for level in range(2)]
    for p, t, w in hierarchy_levels(pred, target, level_idx, (4, 4), normalize_embeddings=True):
        norms = np.linalg.norm(np.array(t), axis=-1)
        np.testing.assert_allclose(norms[np.array(w) > 0], 1.0, rtol=1e-5)

    def total(tg):
        return sum((t * w[..., None]).sum() for _, t, w in hierarchy_levels(pred, tg, level_idx, (4, 4), True))
    assert float(mx.abs(mx.grad(total)(target)).max()) == 0.0


def test_target_features_is_layer_norm_without_affine_parameters():
    mx.random.seed(0)
    enc = ViTEncoder(patch_size=4, image_size=8, embed_dim=16, depth=1, num_heads=2)
    images = mx.array(np.random.default_rng(10).standard_normal((2, 8, 8, 3)).astype(np.float32))
    tokens = np.array(enc(images), dtype=np.float64)
    out = target_features(enc, images)
    np.testing.assert_allclose(np.array(out), np_layer_norm(tokens, eps=1e-6), atol=1e-5)


def np_fpn(grids, p, fusion):
    """Top-down FPN by loops over fine cells: each takes its parent's (r >> 1, c >> 1) coarse feature."""
    levels = len(grids)
    feats = [None] * levels
    feats[-1] = np_linear(grids[-1], p["lateral"][-1])
    for level in range(levels - 2, -1, -1):
        lat = np_linear(grids[level], p["lateral"][level])
        coarse = feats[level + 1]
        up = np.zeros(lat.shape[:-1] + (coarse.shape[-1],))
        for r in range(lat.shape[2]):
            for c in range(lat.shape[3]):
                up[:, :, r, c] = coarse[:, :, r // 2, c // 2]
        feats[level] = lat + up if fusion == "add" else np_linear(np.concatenate([lat, up], -1), p["fuse"][level])
    return [np_linear(f, p["output"][level]) for level, f in enumerate(feats)]


@pytest.mark.parametrize("fusion", ["add", "concat"])
@pytest.mark.parametrize("feature_dim", [None, 3])
def test_fpn_matches_numpy_on_a_ragged_pyramid(fusion, feature_dim):
    mx.random.seed(11)
    fpn = FPN(3, 4, feature_dim, fusion)
    rng = np.random.default_rng(12)
    grid = (5, 7)
    grids = [rng.standard_normal((2, 1, *level_grid(grid, level), 4)) for level in range(3)]  # 5x7, 3x4, 2x2
    out = fpn([mx.array(g.astype(np.float32)) for g in grids])
    ref = np_fpn(grids, to_numpy(fpn.parameters()), fusion)
    for o, r, g in zip(out, ref, grids):
        assert o.shape == g.shape
        np.testing.assert_allclose(np.array(o), r, atol=1e-5, rtol=1e-5)


def test_fpn_rejects_an_unknown_fusion():
    with pytest.raises(ValueError, match="'add' or 'concat'"):
        FPN(2, 4, fusion="sum")


def test_fpn_empty_cells_do_not_leak_into_filled_cells():
    """Values at empty cells (weight 0) must not change the FPN output at filled cells."""
    mx.random.seed(13)
    fpn = FPN(2, 4, fusion="add")
    grid = (4, 4)
    idx = np.array([[[0, 1, 4, 5]]])                              # the top-left 2 x 2: level-1 cell 0
    pred = mx.array(np.random.default_rng(14).standard_normal((1, 1, 4, 4)).astype(np.float32))
    level_idx = [mx.array(_cells(idx, 4, level)) for level in range(2)]
    levels = hierarchy_levels(pred, pred, level_idx, grid, normalize_embeddings=False, fpn=fpn)
    base = [np.array(p) for p, _, _ in levels]
    # recompute with garbage written into the empty cells of the pooled inputs
    pooled = [pool_to_level(pred, c, int(np.prod(level_grid(grid, l))))[0] for l, c in enumerate(level_idx)]
    noisy = []
    for level, (pl, (_, _, w)) in enumerate(zip(pooled, levels)):
        pl = np.array(pl)
        pl[np.array(w) == 0] = 100.0
        noisy.append(mx.array(pl.reshape(1, 1, *level_grid(grid, level), 4)))
    out = [np.array(o).reshape(1, 1, -1, 4) for o in fpn(noisy)]
    for level, (_, _, w) in enumerate(levels):
        filled = np.array(w) > 0
        np.testing.assert_allclose(out[level][filled], base[level][filled], atol=1e-5)
        assert np.abs(out[level][~filled] - base[level][~filled]).max() > 1.0   # the garbage did arrive there
