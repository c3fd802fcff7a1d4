"""Mask sampler properties: exact fixed counts, disjoint context and targets, ranges, uniqueness,
determinism, block geometry and statistics, no positional bias (flip symmetry, with a check that the
test catches a biased sampler), per-level parent cells, local-crop grids, user errors.

`ijepa_reference_masks` (hjepa_mlx/mask_stats.py) is a NumPy port of I-JEPA's variable-size MaskCollator,
used to compare the masked fraction and to prove that the positional-bias check can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hjepa_mlx.errors import UserError
from hjepa_mlx.mask_stats import flip_asymmetry_z, ijepa_reference_masks, index_union
from hjepa_mlx.masks import _draw, plan_masks, sample_masks

SEED_MASKING = dict(num_masks=4, mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5), num_context_masks=1,
                    context_scale=(0.85, 1.0), min_keep=10, num_levels=3)
WIDE_MASKING = {**SEED_MASKING, "mask_scale": (0.15, 0.25), "aspect_ratio": (0.6, 1.5)}


def batches(plan, steps, batch=32, seed=0):
    return [sample_masks(plan, batch, seed=seed, step=s) for s in range(steps)]


@pytest.fixture(scope="module")
def plan():
    return plan_masks(14, 14, **SEED_MASKING)


@pytest.fixture(scope="module")
def many(plan):
    """4,096 images of the seed config: targets (n, M, K) and context (n, Nc)."""
    draws = batches(plan, 128)
    return np.concatenate([d.target_idx for d in draws]), np.concatenate([d.context_idx for d in draws])


# ---------------------------------------------------------------- exact counts and set properties

def assert_valid_batch(plan, mb, batch):
    n = plan.grid_h * plan.grid_w
    m, k, nc = plan.num_masks, plan.num_target, plan.num_context
    assert mb.context_idx.shape == (batch, nc) and mb.context_idx.dtype == np.int32
    assert mb.target_idx.shape == (batch, m, k) and mb.target_idx.dtype == np.int32
    assert len(mb.level_idx) == plan.num_levels
    assert all(lv.shape == (batch, m, k) and lv.dtype == np.int32 for lv in mb.level_idx)
    assert mb.context_idx.min() >= 0 and mb.context_idx.max() < n
    assert mb.target_idx.min() >= 0 and mb.target_idx.max() < n
    assert np.all(np.diff(mb.context_idx, axis=1) > 0)                      # sorted and unique
    assert np.all(np.diff(np.sort(mb.target_idx, axis=2), axis=2) > 0)      # unique within each block
    overlap = index_union(mb.target_idx, n) & index_union(mb.context_idx[:, None], n)
    assert not overlap.any()


@pytest.mark.parametrize("grid, masking", [((14, 14), SEED_MASKING), ((14, 14), WIDE_MASKING),
                                           ((6, 6), {**SEED_MASKING, "min_keep": 4}),     # 96 px local crop
                                           ((5, 9), {**SEED_MASKING, "min_keep": 4, "num_context_masks": 2})])
def test_every_sample_meets_the_plan(grid, masking):
    plan = plan_masks(*grid, **masking)
    n = grid[0] * grid[1]
    assert plan.num_target == round(sum(masking["mask_scale"]) / 2 * n)
    assert masking["min_keep"] <= plan.num_context <= n - plan.num_target
    for step in range(20):
        assert_valid_batch(plan, sample_masks(plan, 16, seed=1, step=step), 16)


def test_seed_config_counts(plan):
    assert (plan.num_target, plan.num_masks) == (34, 4) and plan.num_context >= 10
    assert 0.5 <= plan.accept_rate <= 1


def test_context_count_is_the_planned_low_quantile(plan):
    """Nc is the 5 % quantile of the context size: on fresh draws ~95 % of images reach it."""
    _, context = _draw(np.random.default_rng(123), plan, 4096)
    reach = np.mean(context.sum(axis=1) >= plan.num_context)
    assert 0.93 <= reach <= 0.97, reach


# ---------------------------------------------------------------- determinism

def test_masks_are_a_pure_function_of_seed_step_rank(plan):
    a = sample_masks(plan, 8, seed=3, step=10)
    sample_masks(plan, 8, seed=3, step=11)                     # no hidden state between calls
    b = sample_masks(plan, 8, seed=3, step=10)
    for x, y in zip((a.context_idx, a.target_idx, *a.level_idx), (b.context_idx, b.target_idx, *b.level_idx)):
        np.testing.assert_array_equal(x, y)
    for other in (sample_masks(plan, 8, 3, 11), sample_masks(plan, 8, 3, 10, rank=1), sample_masks(plan, 8, 4, 10)):
        assert not np.array_equal(a.target_idx, other.target_idx)
        assert not np.array_equal(a.context_idx, other.context_idx)


def test_plan_is_a_function_of_the_config():
    assert plan_masks(14, 14, **SEED_MASKING) == plan_masks(14, 14, **SEED_MASKING)


# ---------------------------------------------------------------- block geometry and statistics

def test_blocks_are_rectangles_with_at_most_one_partial_row(plan, many):
    targets, _ = many
    blocks = targets[:512].reshape(-1, plan.num_target)
    w_grid = plan.grid_w
    partial_at = {}                                              # (first/last row, left/right) -> count
    for block in blocks:
        rows, cols = block // w_grid, block % w_grid
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert (h, w) in plan.block_shapes
        per_row = np.bincount(rows - rows.min(), minlength=h)
        partial = np.flatnonzero(per_row < w)
        assert len(partial) <= 1
        if len(partial):
            assert partial[0] in (0, h - 1)                      # the partial row is the first or the last
            c = np.sort(cols[rows - rows.min() == partial[0]]) - cols.min()
            assert c[0] == 0 or c[-1] == w - 1                   # and starts at the left or the right edge
            corner = (partial[0] == 0, c[0] == 0)
            partial_at[corner] = partial_at.get(corner, 0) + 1
    # ...and every corner is a starting point equally often.
    counts = np.array([partial_at.get((top, left), 0) for top in (False, True) for left in (False, True)])
    assert counts.min() > 0.8 * counts.mean(), counts


def test_block_area_and_aspect_statistics(plan, many):
    targets, _ = many
    rows, cols = targets // plan.grid_w, targets % plan.grid_w
    h = rows.max(axis=2) - rows.min(axis=2) + 1
    w = cols.max(axis=2) - cols.min(axis=2) + 1
    aspect = (h / w).reshape(-1)
    area = plan.num_target / (plan.grid_h * plan.grid_w)
    assert abs(area - np.mean(SEED_MASKING["mask_scale"])) <= 0.5 / (plan.grid_h * plan.grid_w)
    lo, hi = SEED_MASKING["aspect_ratio"]
    print(f"\nblock aspect h/w: mean {aspect.mean():.3f} (configured U({lo}, {hi}), mean {(lo + hi) / 2:.3f})")
    assert lo <= aspect.mean() <= hi
    assert (aspect > 1).mean() > 0.2 and (aspect < 1).mean() > 0.05    # both orientations occur


def test_masked_fraction_is_close_to_the_ijepa_reference(plan, many):
    targets, _ = many
    ours = index_union(targets, 196).mean()
    ref_targets, ref_context = ijepa_reference_masks(np.random.default_rng(0), 1024, 32, 14, 14)
    ref = ref_targets.any(axis=1).mean()
    print(f"\nmasked fraction: ours {ours:.3f} (K {plan.num_target}, Nc {plan.num_context}); I-JEPA reference "
          f"{ref:.3f} (mean block {ref_targets.sum(axis=(2, 3)).mean():.1f}, mean context {ref_context.sum(axis=(1, 2)).mean():.1f})")
    assert abs(ours - ref) < 0.05


def test_no_positional_bias(plan, many):
    targets, context = many
    n = len(targets)
    target_hits = index_union(targets, 196).reshape(n, 14, 14)
    context_hits = index_union(context[:, None], 196).reshape(n, 14, 14)
    z_target, z_context = flip_asymmetry_z(target_hits), flip_asymmetry_z(context_hits)
    print(f"\nflip asymmetry, largest |z| over patches: targets {z_target:.2f}, context {z_context:.2f}")
    assert z_target < 5.0 and z_context < 5.0
    assert target_hits.mean(axis=0).min() > 0 and context_hits.mean(axis=0).min() > 0


def test_the_bias_check_catches_biased_samplers(plan):
    """The same check fails for I-JEPA's sampler (last row and column never a target) and for contexts
    truncated to a raster-order prefix instead of subsampled at random."""
    ref_targets, _ = ijepa_reference_masks(np.random.default_rng(1), 1024, 32, 14, 14)
    assert flip_asymmetry_z(ref_targets.any(axis=1)) > 10
    _, raw = _draw(np.random.default_rng(2), plan, 4096)
    raw = raw[raw.sum(axis=1) >= plan.num_context]
    prefix = raw & (np.cumsum(raw, axis=1) <= plan.num_context)
    assert flip_asymmetry_z(prefix.reshape(-1, 14, 14)) > 10


# ---------------------------------------------------------------- hierarchy levels

@pytest.mark.parametrize("grid", [(14, 14), (7, 5)])
def test_level_indices_are_parent_cells_of_the_pooled_grid(grid):
    gh, gw = grid
    plan = plan_masks(gh, gw, **{**SEED_MASKING, "num_masks": 2, "min_keep": 4, "num_levels": 3})
    mb = sample_masks(plan, 8, 0, 0)
    np.testing.assert_array_equal(mb.level_idx[0], mb.target_idx)
    for level in (1, 2):
        # Independent route: label the pooled grid, upsample it by 2^level and crop to the patch grid.
        hl, wl = math.ceil(gh / 2 ** level), math.ceil(gw / 2 ** level)
        labels = np.arange(hl * wl).reshape(hl, wl)
        parent = np.repeat(np.repeat(labels, 2 ** level, axis=0), 2 ** level, axis=1)[:gh, :gw].reshape(-1)
        np.testing.assert_array_equal(mb.level_idx[level], parent[mb.target_idx])
        assert mb.level_idx[level].max() < hl * wl


# ---------------------------------------------------------------- errors and messages

def test_impossible_min_keep_is_a_user_error_naming_the_keys():
    with pytest.raises(UserError, match="masking.min_keep 30") as err:
        plan_masks(6, 6, **{**SEED_MASKING, "min_keep": 30})
    assert "masking.num_masks" in str(err.value) and "masking.context_scale" in str(err.value)
    with pytest.raises(UserError, match="min_keep"):
        plan_masks(14, 14, **{**SEED_MASKING, "num_masks": 8, "mask_scale": (0.8, 0.9)})


@pytest.mark.parametrize("key, value", [("mask_scale", (0.3, 0.2)), ("mask_scale", (0.0, 0.2)),
                                        ("context_scale", (0.85, 1.2)), ("aspect_ratio", (0.0, 1.5)),
                                        ("num_masks", 0), ("num_levels", 0)])
def test_bad_arguments_are_user_errors(key, value):
    with pytest.raises(UserError, match=key.replace("num_levels", "num_hierarchies")):
        plan_masks(14, 14, **{**SEED_MASKING, key: value})


def test_raising_nc_to_min_keep_is_announced(capsys):
    base = plan_masks(6, 6, **{**SEED_MASKING, "min_keep": 1}, quiet=True)
    raised = plan_masks(6, 6, **{**SEED_MASKING, "min_keep": base.num_context + 1})
    assert raised.num_context == base.num_context + 1 and raised.accept_rate < base.accept_rate
    assert "raised from its 5 % quantile" in capsys.readouterr().out
    assert_valid_batch(raised, sample_masks(raised, 16, 0, 0), 16)


def test_second_view_gets_its_own_context_draw():
    """VICReg's two views must not share a mask (see MaskBatch.context_idx_view2): an independent,
    deterministic, valid context of the same size."""
    plan = plan_masks(14, 14, num_masks=4, mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5), num_context_masks=1,
                      context_scale=(0.85, 1.0), min_keep=10, num_levels=3)
    a, b = sample_masks(plan, 16, 0, 5), sample_masks(plan, 16, 0, 5)
    assert np.array_equal(a.context_idx_view2, b.context_idx_view2)
    second = a.context_idx_view2
    assert second.shape == a.context_idx.shape and second.dtype == np.int32
    assert np.all(np.diff(second, axis=1) > 0) and second.min() >= 0 and second.max() < 14 * 14
    assert (second != a.context_idx).any(axis=1).mean() > 0.9      # differs from view 1's context in nearly every image
