"""I-JEPA multi-block masks with counts fixed per config (NumPy, seeded by (seed, step, rank)).

The compiled train step must see the same shapes every step, so two counts are fixed once from the
config (`plan_masks`), and every sample meets them exactly:

* K, patches per target block = round(mean(mask_scale) * H * W). Each block draws its aspect ratio
  from `aspect_ratio`, takes the h x w rectangle (h*w >= K) closest to that aspect, and fills exactly K
  of its cells row by row from a randomly chosen corner, so a block is a rectangle with at most one
  partial row, and no corner is favoured.
* Nc, context patches per image = the 5th percentile of the context size (context block(s) of scale
  `context_scale`, square, minus the union of the targets) over 2,000 draws with a fixed internal seed,
  and at least `min_keep`. A sample with more context patches keeps a uniformly random subset of Nc
  (never a raster-order prefix, which would bias masks towards the top-left); a sample with fewer
  (about 5 % of draws) is redrawn.

Level-l indices: the parent cell of each target patch on the ceil(H/2^l) x ceil(W/2^l) grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hjepa_mlx.errors import UserError

_PLAN_SEED = 20230601   # fixed, so Nc is a function of the config alone
_PLAN_DRAWS = 2000
_MAX_REDRAWS = 100


@dataclass(frozen=True)
class MaskPlan:
    grid_h: int
    grid_w: int
    num_masks: int
    num_target: int           # K, patches per target block
    num_context: int          # Nc, context patches per image
    aspect_ratio: tuple[float, float]
    context_scale: tuple[float, float]
    num_context_masks: int
    num_levels: int


@dataclass(frozen=True)
class MaskBatch:
    context_idx: np.ndarray            # (B, Nc) int32, sorted
    target_idx: np.ndarray             # (B, M, K) int32
    level_idx: tuple[np.ndarray, ...]  # L arrays (B, M, K) int32: parent cell on level l's grid


def block_shape(k: int, aspect: float, grid_h: int, grid_w: int) -> tuple[int, int]:
    """The h x w rectangle with h*w >= k, h/w close to `aspect`, that fits the grid."""
    h = min(max(1, round(math.sqrt(k * aspect))), grid_h)
    w = min(math.ceil(k / h), grid_w)
    h = min(math.ceil(k / w), grid_h)
    return h, w


def _target_block(rng, k, aspect_ratio, grid_h, grid_w) -> np.ndarray:
    aspect = rng.uniform(*aspect_ratio)
    h, w = block_shape(k, aspect, grid_h, grid_w)
    top, left = rng.integers(0, grid_h - h + 1), rng.integers(0, grid_w - w + 1)
    cells = np.arange(h * w)[:k]                       # row-major fill of exactly k cells
    rows, cols = cells // w, cells % w
    if rng.integers(2):                                # the partial row at the top or the bottom
        rows = h - 1 - rows
    if rng.integers(2):                                # and starting from the left or the right
        cols = w - 1 - cols
    return ((top + rows) * grid_w + left + cols).astype(np.int32)


def _context_mask(rng, context_scale, count, grid_h, grid_w) -> np.ndarray:
    mask = np.zeros((grid_h, grid_w), dtype=bool)
    for _ in range(count):
        scale = rng.uniform(*context_scale)
        side_h = min(grid_h, max(1, round(math.sqrt(scale * grid_h * grid_w))))
        side_w = min(grid_w, max(1, round(math.sqrt(scale * grid_h * grid_w))))
        top, left = rng.integers(0, grid_h - side_h + 1), rng.integers(0, grid_w - side_w + 1)
        mask[top:top + side_h, left:left + side_w] = True
    return mask.reshape(-1)


def _draw(rng, plan: MaskPlan) -> tuple[np.ndarray, np.ndarray]:
    targets = np.stack([_target_block(rng, plan.num_target, plan.aspect_ratio, plan.grid_h, plan.grid_w)
                        for _ in range(plan.num_masks)])
    context = _context_mask(rng, plan.context_scale, plan.num_context_masks, plan.grid_h, plan.grid_w)
    context[targets.reshape(-1)] = False
    return targets, np.flatnonzero(context)


def plan_masks(grid_h: int, grid_w: int, *, num_masks: int, mask_scale, aspect_ratio, num_context_masks: int,
               context_scale, min_keep: int, num_levels: int) -> MaskPlan:
    n = grid_h * grid_w
    k = max(1, round(sum(mask_scale) / 2 * n))
    draft = MaskPlan(grid_h, grid_w, num_masks, k, 0, tuple(aspect_ratio), tuple(context_scale),
                     num_context_masks, num_levels)
    rng = np.random.default_rng(_PLAN_SEED)
    sizes = np.array([len(_draw(rng, draft)[1]) for _ in range(_PLAN_DRAWS)])
    nc = int(np.percentile(sizes, 5))
    if nc < min_keep:
        raise UserError(
            f"masks: with masking.num_masks {num_masks}, mask_scale {list(mask_scale)} and context_scale "
            f"{list(context_scale)} on a {grid_h}x{grid_w} patch grid, the context keeps only ~{nc} patches, "
            f"fewer than masking.min_keep {min_keep}; lower num_masks or mask_scale, or raise context_scale")
    return MaskPlan(grid_h, grid_w, num_masks, k, nc, tuple(aspect_ratio), tuple(context_scale),
                    num_context_masks, num_levels)


def level_indices(target_idx: np.ndarray, grid_w: int, grid_h: int, num_levels: int) -> tuple[np.ndarray, ...]:
    rows, cols = target_idx // grid_w, target_idx % grid_w
    out = []
    for level in range(num_levels):
        wl = math.ceil(grid_w / 2 ** level)
        out.append(((rows >> level) * wl + (cols >> level)).astype(np.int32))
    return tuple(out)


def sample_masks(plan: MaskPlan, batch_size: int, seed: int, step: int, rank: int = 0) -> MaskBatch:
    rng = np.random.default_rng([seed, step, rank])
    contexts = np.empty((batch_size, plan.num_context), dtype=np.int32)
    targets = np.empty((batch_size, plan.num_masks, plan.num_target), dtype=np.int32)
    for i in range(batch_size):
        for _ in range(_MAX_REDRAWS):
            blocks, context = _draw(rng, plan)
            if len(context) >= plan.num_context:
                break
        else:
            raise RuntimeError(f"mask sampler: no context of {plan.num_context} patches in {_MAX_REDRAWS} draws")
        keep = rng.choice(len(context), size=plan.num_context, replace=False)
        contexts[i] = np.sort(context[keep])
        targets[i] = blocks
    return MaskBatch(contexts, targets, level_indices(targets, plan.grid_w, plan.grid_h, plan.num_levels))
