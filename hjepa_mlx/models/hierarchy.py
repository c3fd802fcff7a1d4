"""The hierarchy: level l compares predictions and targets averaged over 2^l x 2^l cells of the patch grid.

The cells: `level_idx[l]` (B, M, K) int32 is the parent cell of each target patch on the pooled grid of
Hl x Wl cells (hjepa_mlx/levels.py: Hl = ceil(H / 2^l), Wl = ceil(W / 2^l), cell = (row >> l) * Wl +
(col >> l); level 0 is the patch index itself); the model derives it from the target indices.

Pooling is a segment mean over the members of each block inside a cell, done with a one-hot matmul
(static shapes), so the pooled prediction and the pooled target always average the same patches, and
ragged grid edges (e.g. 14 x 14 at level 2 -> 4 x 4 cells, the last row/column of cells holding 2 x 4,
4 x 2 or 2 x 2 patches) are exact. Cells with no member get weight 0; the loss is a weighted mean over
cells, so their (zero, or with the FPN arbitrary) values never count.

The target path has no trainable layer: target encoder -> layer norm without affine parameters ->
gather -> pooling. The optional FPN acts on the prediction pyramid only.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from hjepa_mlx import kernels
from hjepa_mlx.levels import level_grid
from hjepa_mlx.normalize import l2_normalize

TARGET_LN_EPS = 1e-6


def target_features(target_encoder, images: mx.array) -> mx.array:
    """Target encoder on the full image (B, H, W, 3), then layer norm over D without affine parameters.

    Returns (B, N, D). The caller gathers the target indices and stops the gradient.
    """
    return kernels.layer_norm(target_encoder(images), None, None, TARGET_LN_EPS)


def pool_to_level(x: mx.array, cell_idx: mx.array, num_cells: int) -> tuple[mx.array, mx.array]:
    """Mean of each block's members inside each cell.

    x: (B, M, K, D) values at the target patches. cell_idx: (B, M, K) int, the cell of each patch.
    num_cells: C = Hl * Wl.
    Returns (pooled (B, M, C, D), weight (B, M, C) float32: 1 where the cell has >= 1 member, else 0).
    Empty cells hold zeros.
    """
    onehot = (cell_idx[..., None] == mx.arange(num_cells)).astype(x.dtype)   # (B, M, K, C)
    counts = onehot.sum(axis=2)                                              # (B, M, C)
    sums = onehot.swapaxes(-1, -2) @ x                                       # (B, M, C, D)
    pooled = sums / mx.maximum(counts, 1.0)[..., None]
    return pooled, (counts > 0).astype(mx.float32)


def upsample2x(x: mx.array, height: int, width: int) -> mx.array:
    """Nearest 2x upsampling of x (..., h, w, F) on axes -3, -2, cropped to (height, width): fine cell
    (r, c) takes the value of its parent (r >> 1, c >> 1), the same parent the mask sampler uses."""
    up = mx.repeat(mx.repeat(x, 2, axis=-3), 2, axis=-2)
    return up[..., :height, :width, :]


class FPN(nn.Module):
    """Feature pyramid over the *prediction* pyramid, on 2-D grids.

    num_levels: L. in_dim: D (prediction width). feature_dim: F (None -> D). fusion: 'add' | 'concat'.
    lateral_l = Linear D->F per level; top-down from the coarsest: P_{L-1} = lateral_{L-1};
    P_l = lateral_l + upsample2x(P_{l+1}) ('add') or Linear_{2F->F}(concat(lateral_l, up)) ('concat');
    then output Linear F->D per level, back to the width of the (parameter-free) targets.
    Empty cells may take values (bias terms); they only flow to their own children, which are empty too,
    and the loss weights ignore them.
    """

    def __init__(self, num_levels: int, in_dim: int, feature_dim: int | None = None, fusion: str = "add"):
        super().__init__()
        if fusion not in ("add", "concat"):
            raise ValueError(f"FPN fusion must be 'add' or 'concat', got {fusion!r}")
        f = feature_dim or in_dim
        self.fusion = fusion
        self.lateral = [kernels.Linear(in_dim, f) for _ in range(num_levels)]
        self.output = [kernels.Linear(f, in_dim) for _ in range(num_levels)]
        if fusion == "concat":
            self.fuse = [kernels.Linear(2 * f, f) for _ in range(num_levels - 1)]

    def __call__(self, grids: list[mx.array]) -> list[mx.array]:
        """grids[l]: (B, M, Hl, Wl, D) dense pooled predictions, l = 0..L-1 -> same shapes after the pyramid."""
        levels = len(grids)
        feats = [None] * levels
        feats[-1] = self.lateral[-1](grids[-1])
        for level in range(levels - 2, -1, -1):
            lat = self.lateral[level](grids[level])
            up = upsample2x(feats[level + 1], lat.shape[-3], lat.shape[-2])
            if self.fusion == "add":
                feats[level] = lat + up
            else:
                feats[level] = self.fuse[level](mx.concatenate([lat, up], axis=-1))
        return [self.output[level](feats[level]) for level in range(levels)]


def hierarchy_levels(pred: mx.array, target: mx.array, level_idx: list[mx.array], grid: tuple[int, int],
                     normalize_embeddings: bool, fpn: FPN | None = None):
    """Predictions and targets per hierarchy level, for the loss.

    pred, target: (B, M, K, D) at the target patches (target without gradient is enforced here).
    level_idx: L arrays (B, M, K) int32, the parent cell per level (see module docstring).
    grid: (H, W) patches. normalize_embeddings: L2-normalise pred and target along D after pooling.
    fpn: optional FPN applied to the pooled prediction grids.
    Returns [(pred_l, target_l, weight_l)] for l = 0..L-1: pred_l, target_l (B, M, C_l, D), weight_l
    (B, M, C_l) in {0, 1}. Level 0 without FPN skips the pooling and returns the K patches themselves
    (C_0 = K, weight 1): the same loss, since a block holds distinct patches (the sampler guarantees it).
    """
    target = mx.stop_gradient(target)
    out = []
    for level, cells in enumerate(level_idx):
        hl, wl = level_grid(grid, level)
        if level == 0 and fpn is None:
            p, t, w = pred, target, mx.ones(pred.shape[:3], dtype=mx.float32)
        else:
            p, w = pool_to_level(pred, cells, hl * wl)
            t, _ = pool_to_level(target, cells, hl * wl)
        out.append([p, t, w])
    if fpn is not None:
        b, m = pred.shape[:2]
        grids = [p.reshape(b, m, *level_grid(grid, level), p.shape[-1]) for level, (p, _, _) in enumerate(out)]
        for level, g in enumerate(fpn(grids)):
            out[level][0] = g.reshape(b, m, -1, g.shape[-1])
    if normalize_embeddings:
        out = [[l2_normalize(p), l2_normalize(t), w] for p, t, w in out]
    return [tuple(x) for x in out]
