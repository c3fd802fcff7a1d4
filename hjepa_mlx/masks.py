"""I-JEPA multi-block masks with counts fixed per config (NumPy only, seeded by (seed, step, rank)).

I-JEPA draws one target size and one context size per batch and truncates every index list to the
batch minimum in raster order, so its shapes change every step. The compiled train step here needs the
same shapes every step, so `plan_masks` fixes two counts once, from the config alone, and every sample
meets them exactly:

* **K, patches per target block** = round(mean(mask_scale) * H * W). A block draws its aspect ratio
  uniformly from `aspect_ratio` and takes, among the tight rectangles that hold K cells (for each height
  h: w = ceil(K / h), then h = ceil(K / w), fitting the grid), the one whose h / w is nearest in log
  space. It is placed uniformly on the grid and exactly K of its cells are filled row by row from a
  random corner, so a block is an h x w rectangle with at most one partial row (at the top or the
  bottom, missing cells on the left or the right): no corner and no edge of the grid is favoured.
* **Nc, context patches per image** = the 5 % quantile of the context size (the union of
  `num_context_masks` square blocks of scale `context_scale`, minus the union of the targets) over
  4,096 simulated draws with a fixed internal seed, raised to `min_keep` if lower. An image whose
  context has more than Nc patches keeps a uniformly random subset of Nc (never a raster-order prefix,
  which would bias the context towards the top-left); an image with fewer (about 5 % of draws) redraws
  all of its blocks. If fewer than half the draws could reach Nc, the config cannot meet `min_keep`
  and `plan_masks` raises `UserError`.

`min_keep` applies to the context only: the target size is fixed by `mask_scale`, and applying it to
the targets would rule out small local-crop grids (6 x 6 gives K = 6).

Level-l indices name the parent cell of each target patch on the pooled grid (hjepa_mlx/levels.py).

`MaskSource` draws the masks in the data loader's workers, beside the images they go with (as I-JEPA's
collator does): still a pure function of (seed, micro-batch number), so determinism and resume hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from hjepa_mlx.errors import UserError
from hjepa_mlx.levels import parent_cells

_PLAN_SEED = 20230601        # fixed, so Nc is a function of the config alone
_PLAN_DRAWS = 4096
_CONTEXT_QUANTILE = 0.05     # ~5 % of images redraw their blocks
_MIN_ACCEPT_RATE = 0.5       # below this the config "cannot meet min_keep"
_MAX_REDRAW_ROUNDS = 100     # with acceptance >= 0.5, failing all rounds has probability <= 2^-100


@dataclass(frozen=True)
class MaskPlan:
    """The fixed mask geometry of one config (see the module docstring for the rule)."""

    grid_h: int
    grid_w: int
    num_masks: int                               # M, target blocks per image
    num_target: int                              # K, patches per target block
    num_context: int                             # Nc, context patches per image
    mask_scale: tuple[float, float]
    aspect_ratio: tuple[float, float]
    num_context_masks: int
    context_scale: tuple[float, float]
    min_keep: int
    num_levels: int
    block_shapes: tuple[tuple[int, int], ...]    # candidate (h, w) target rectangles, by increasing h / w
    accept_rate: float                           # fraction of simulated draws whose context reached Nc


@dataclass(frozen=True)
class MaskBatch:
    context_idx: np.ndarray            # (B, Nc) int32, sorted
    target_idx: np.ndarray             # (B, M, K) int32, sorted within each block
    level_idx: tuple[np.ndarray, ...]  # L arrays (B, M, K) int32: parent cell on level l's grid
    # (B, Nc) int32: the context of an independent second draw, for the second augmented view. VICReg's
    # two views must not share their masks: with one mask for both, pooled features that encode only
    # *which* patches are present satisfy its invariance (same patches) and variance (masks differ
    # between images) without describing the image - measured on CIFAR-10 as a steady fall of the
    # target features' std and RankMe while the VICReg terms stayed content.
    context_idx_view2: np.ndarray | None = None

    def rows(self, start: int, step: int) -> MaskBatch:
        """Rows start, start + step, ... of every array (a data-parallel rank's share of the global batch)."""
        if step == 1 and start == 0:
            return self
        take = lambda a: None if a is None else a[start::step]
        return replace(self, context_idx=take(self.context_idx), target_idx=take(self.target_idx),
                       level_idx=tuple(take(a) for a in self.level_idx),
                       context_idx_view2=take(self.context_idx_view2))


def tight_block_shapes(k: int, grid_h: int, grid_w: int) -> tuple[tuple[int, int], ...]:
    """Every rectangle (h, w) that fits the grid, holds k cells (h*w >= k) and has no spare row or
    column (h = ceil(k / w), w = ceil(k / h)), sorted by h / w."""
    shapes = set()
    for h in range(1, grid_h + 1):
        w = math.ceil(k / h)
        if w <= grid_w:
            shapes.add((math.ceil(k / w), w))
    return tuple(sorted(shapes, key=lambda s: s[0] / s[1]))


def _pick_shapes(plan: MaskPlan, aspects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The candidate shape nearest each drawn aspect ratio, in log space."""
    shapes = np.array(plan.block_shapes)
    log_aspect = np.log(shapes[:, 0] / shapes[:, 1])
    choice = np.abs(np.log(aspects)[:, None] - log_aspect[None]).argmin(axis=1)
    return shapes[choice, 0], shapes[choice, 1]


def _target_blocks(rng: np.random.Generator, plan: MaskPlan, n: int) -> np.ndarray:
    """n target blocks as boolean masks (n, H, W), each with exactly K cells."""
    gh, gw, k = plan.grid_h, plan.grid_w, plan.num_target
    h, w = _pick_shapes(plan, rng.uniform(*plan.aspect_ratio, size=n))
    top = rng.integers(0, gh - h + 1)            # every position, the last row and column included
    left = rng.integers(0, gw - w + 1)
    flip_rows, flip_cols = rng.integers(0, 2, size=(2, n)).astype(bool)
    h, w, top, left = (a[:, None, None] for a in (h, w, top, left))
    rr = np.arange(gh)[None, :, None] - top
    cc = np.arange(gw)[None, None, :] - left
    inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    # Fill order inside the block: row by row from the chosen corner; the first K cells are kept.
    order = np.where(flip_rows[:, None, None], h - 1 - rr, rr) * w + np.where(flip_cols[:, None, None], w - 1 - cc, cc)
    return inside & (order < k)


def _context_blocks(rng: np.random.Generator, plan: MaskPlan, n: int) -> np.ndarray:
    """The union of num_context_masks square blocks per image, (n, H, W) boolean. On a non-square grid
    a side longer than the grid is clipped to it (as I-JEPA does)."""
    gh, gw, c = plan.grid_h, plan.grid_w, plan.num_context_masks
    side = np.rint(np.sqrt(rng.uniform(*plan.context_scale, size=(n, c)) * gh * gw)).astype(np.int64)
    side_h, side_w = np.clip(side, 1, gh), np.clip(side, 1, gw)
    top, left = rng.integers(0, gh - side_h + 1), rng.integers(0, gw - side_w + 1)
    rr = np.arange(gh)[None, None, :, None] - top[..., None, None]
    cc = np.arange(gw)[None, None, None, :] - left[..., None, None]
    inside = (rr >= 0) & (rr < side_h[..., None, None]) & (cc >= 0) & (cc < side_w[..., None, None])
    return inside.any(axis=1)


def _draw(rng: np.random.Generator, plan: MaskPlan, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n images: target masks (n, M, H*W) and context masks (n, H*W), context = block minus targets."""
    cells = plan.grid_h * plan.grid_w
    targets = _target_blocks(rng, plan, n * plan.num_masks).reshape(n, plan.num_masks, cells)
    context = _context_blocks(rng, plan, n).reshape(n, cells) & ~targets.any(axis=1)
    return targets, context


def _validate(grid_h, grid_w, num_masks, mask_scale, aspect_ratio, num_context_masks, context_scale, min_keep,
              num_levels) -> None:
    def bad(key, value, rule):
        raise UserError(f"masks: {key} is {value!r}; it must be {rule}")

    if grid_h < 1 or grid_w < 1:
        bad("the patch grid", (grid_h, grid_w), "at least 1 x 1 (check data.image_size and model.patch_size)")
    for key, value, count in (("masking.num_masks", num_masks, 1), ("masking.num_context_masks", num_context_masks, 1),
                              ("masking.min_keep", min_keep, 1), ("model.num_hierarchies", num_levels, 1)):
        if int(value) != value or value < count:
            bad(key, value, f"an integer >= {count}")
    for key, (lo, hi) in (("masking.mask_scale", mask_scale), ("masking.context_scale", context_scale)):
        if not 0 < lo <= hi <= 1:
            bad(key, [lo, hi], "[lo, hi] with 0 < lo <= hi <= 1 (fractions of the patch grid)")
    lo, hi = aspect_ratio
    if not 0 < lo <= hi:
        bad("masking.aspect_ratio", [lo, hi], "[lo, hi] with 0 < lo <= hi (block height / width)")


def plan_masks(grid_h: int, grid_w: int, num_masks: int = 4, mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5),
               num_context_masks: int = 1, context_scale=(0.85, 1.0), min_keep: int = 10,
               num_levels: int = 1, *, quiet: bool = False) -> MaskPlan:
    """Fix the mask geometry of a config once (K and Nc; rule in the module docstring).

    grid_h, grid_w: the patch grid (image size // patch size; a smaller grid for local crops).
    num_masks: M target blocks per image. mask_scale: (lo, hi) fraction of the grid per target block;
    K uses its mean. aspect_ratio: (lo, hi) of block height / width, drawn uniformly per block.
    num_context_masks: square context blocks per image (their union is the context block).
    context_scale: (lo, hi) fraction of the grid per context block, drawn uniformly per block.
    min_keep: the fewest context patches an image may have. num_levels: hierarchy levels L.
    quiet: do not print the line announcing that min_keep raised Nc above the 5 % quantile.
    Raises UserError when the arguments are out of range or the context cannot keep min_keep patches.
    """
    _validate(grid_h, grid_w, num_masks, mask_scale, aspect_ratio, num_context_masks, context_scale, min_keep,
              num_levels)
    k = max(1, round((mask_scale[0] + mask_scale[1]) / 2 * grid_h * grid_w))
    fields = dict(grid_h=grid_h, grid_w=grid_w, num_masks=num_masks, num_target=k, mask_scale=tuple(mask_scale),
                  aspect_ratio=tuple(aspect_ratio), num_context_masks=num_context_masks,
                  context_scale=tuple(context_scale), min_keep=min_keep, num_levels=num_levels,
                  block_shapes=tight_block_shapes(k, grid_h, grid_w))
    draft = MaskPlan(num_context=0, accept_rate=1.0, **fields)
    _, context = _draw(np.random.default_rng(_PLAN_SEED), draft, _PLAN_DRAWS)
    sizes = context.sum(axis=1)
    quantile = int(np.quantile(sizes, _CONTEXT_QUANTILE, method="lower"))
    nc = max(quantile, min_keep)
    accept = float(np.mean(sizes >= nc))
    where = (f"with masking.num_masks {num_masks}, mask_scale {list(mask_scale)} (K = {k} patches per block) "
             f"and context_scale {list(context_scale)} on a {grid_h}x{grid_w} patch grid")
    if accept < _MIN_ACCEPT_RATE:
        raise UserError(
            f"masks: {where}, the context keeps a median of {int(np.median(sizes))} patches and reaches "
            f"masking.min_keep {min_keep} in only {accept:.0%} of draws; lower masking.num_masks or "
            f"masking.mask_scale, raise masking.context_scale, or lower masking.min_keep")
    if nc > quantile and not quiet:
        print(f"masks: context count raised from its 5 % quantile {quantile} to masking.min_keep {min_keep} "
              f"({1 - accept:.0%} of images will redraw their blocks) {where}")
    return MaskPlan(num_context=nc, accept_rate=accept, **fields)


def level_indices(target_idx: np.ndarray, grid_h: int, grid_w: int, num_levels: int) -> tuple[np.ndarray, ...]:
    """Parent cell of each patch index on level l's grid, l = 0..num_levels-1 (hjepa_mlx/levels.py)."""
    return tuple(parent_cells(target_idx, (grid_h, grid_w), level).astype(np.int32) for level in range(num_levels))


def sample_masks(plan: MaskPlan, batch_size: int, seed: int, step: int, rank: int = 0) -> MaskBatch:
    """Masks for one batch, a pure function of (plan, batch_size, seed, step, rank).

    Returns context_idx (B, Nc) sorted, target_idx (B, M, K), level_idx (L arrays (B, M, K)), and
    context_idx_view2 (B, Nc) from an independent draw (its own random stream), all int32.
    Images whose context falls short of Nc redraw all their blocks (bounded rounds).
    """
    context_idx, target_idx = _draw_batch(plan, batch_size, np.random.default_rng([seed, step, rank]))
    second, _ = _draw_batch(plan, batch_size, np.random.default_rng([seed, step, rank, 2]))
    return MaskBatch(context_idx, target_idx, level_indices(target_idx, plan.grid_h, plan.grid_w, plan.num_levels),
                     second)


def _draw_batch(plan: MaskPlan, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(context_idx (B, Nc), target_idx (B, M, K)) of one batch drawn with `rng`."""
    cells = plan.grid_h * plan.grid_w
    targets = np.zeros((batch_size, plan.num_masks, cells), dtype=bool)
    context = np.zeros((batch_size, cells), dtype=bool)
    pending = np.arange(batch_size)
    for _ in range(_MAX_REDRAW_ROUNDS):
        t, c = _draw(rng, plan, len(pending))
        ok = c.sum(axis=1) >= plan.num_context
        targets[pending[ok]], context[pending[ok]] = t[ok], c[ok]
        pending = pending[~ok]
        if len(pending) == 0:
            break
    else:
        raise RuntimeError(f"mask sampler: {len(pending)} images found no context of {plan.num_context} patches in "
                           f"{_MAX_REDRAW_ROUNDS} draws, though {plan.accept_rate:.0%} of planned draws did; "
                           f"this should not happen - please report it with the masking config")
    # A uniformly random Nc-subset of each context: the Nc context cells with the smallest random keys.
    keys = np.where(context, rng.random(context.shape), 2.0)
    context_idx = np.sort(np.argsort(keys, axis=1)[:, :plan.num_context], axis=1).astype(np.int32)
    target_idx = np.nonzero(targets)[2].reshape(batch_size, plan.num_masks, plan.num_target).astype(np.int32)
    return context_idx, target_idx


@dataclass(frozen=True)
class MaskSource:
    """The masks of the loader's batch `b` of `epoch`: `sample_masks` for the global batch of `batch_size`
    images at micro-batch number epoch * batches_per_epoch + b (the optimizer step's micro-batch counter:
    step * k + i), cut to this rank's rows - image p gets the same masks whatever the number of ranks."""

    plan: MaskPlan
    batch_size: int                # the global batch (data.batch_size)
    seed: int
    batches_per_epoch: int         # micro-batches the run takes from an epoch (steps_per_epoch * k)
    rank: int = 0
    world_size: int = 1

    def __call__(self, epoch: int, batch: int) -> MaskBatch:
        masks = sample_masks(self.plan, self.batch_size, self.seed, epoch * self.batches_per_epoch + batch, 0)
        return masks.rows(self.rank, self.world_size)
