"""The hierarchy: level l compares predictions and targets averaged over 2^l x 2^l cells of the patch grid.

The mask sampler gives, per level, the parent cell of every target patch on the pooled grid
(Hl = ceil(H / 2^l), Wl = ceil(W / 2^l); cell = (row >> l) * Wl + (col >> l)). Pooling is a segment
mean over the members of each block inside a cell, done with a one-hot matmul (static shapes), so the
pooled prediction and the pooled target always average the same patches, and ragged grid edges
(e.g. 14 x 14 at level 2) are exact. Cells with no member get weight 0.

The target path has no trainable layer: target encoder -> layer norm without affine parameters ->
gather -> pooling. The optional FPN acts on the prediction pyramid only.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn


def level_grid(grid: tuple[int, int], level: int) -> tuple[int, int]:
    return math.ceil(grid[0] / 2 ** level), math.ceil(grid[1] / 2 ** level)


def target_features(target_encoder, images: mx.array) -> mx.array:
    """Target encoder on the full image, then layer norm over D without affine parameters."""
    return mx.fast.layer_norm(target_encoder(images), None, None, 1e-6)


def pool_to_level(x: mx.array, cell_idx: mx.array, num_cells: int) -> tuple[mx.array, mx.array]:
    """x (B, M, K, D), cell_idx (B, M, K) -> (mean per cell (B, M, C, D), weight (B, M, C) in {0, 1})."""
    onehot = (cell_idx[..., None] == mx.arange(num_cells)[None, None, None]).astype(x.dtype)  # (B,M,K,C)
    counts = onehot.sum(axis=2)                                                                  # (B,M,C)
    sums = onehot.swapaxes(-1, -2) @ x                                                           # (B,M,C,D)
    pooled = sums / mx.maximum(counts, 1.0)[..., None]
    return pooled, (counts > 0).astype(mx.float32)


def _l2(x):
    return x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


class FPN(nn.Module):
    """Lateral Linear D->F per level, top-down from the coarsest level (2x nearest upsampling, cropped to
    the finer grid) fused by 'add' or by Linear(concat), then Linear F->D per level back to target width."""

    def __init__(self, num_levels: int, in_dim: int, feature_dim: int | None = None, fusion: str = "add"):
        super().__init__()
        f = feature_dim or in_dim
        self.fusion = fusion
        self.lateral = [nn.Linear(in_dim, f) for _ in range(num_levels)]
        self.output = [nn.Linear(f, in_dim) for _ in range(num_levels)]
        if fusion == "concat":
            self.fuse = [nn.Linear(2 * f, f) for _ in range(num_levels - 1)]

    def __call__(self, grids: list[mx.array]) -> list[mx.array]:
        """grids[l]: (B, M, Hl, Wl, D) dense pooled predictions -> same shapes after the pyramid."""
        levels = len(grids)
        feats = [None] * levels
        feats[-1] = self.lateral[-1](grids[-1])
        for l in range(levels - 2, -1, -1):
            lat = self.lateral[l](grids[l])
            h, w = lat.shape[2], lat.shape[3]
            up = mx.repeat(mx.repeat(feats[l + 1], 2, axis=2), 2, axis=3)[:, :, :h, :w]
            feats[l] = lat + up if self.fusion == "add" else self.fuse[l](mx.concatenate([lat, up], axis=-1))
        return [self.output[l](feats[l]) for l in range(levels)]


def hierarchy_levels(pred: mx.array, target: mx.array, level_idx: list[mx.array], grid: tuple[int, int],
                     normalize_embeddings: bool, fpn: FPN | None = None):
    """[(pred_l, target_l, weight_l)] for l = 0..L-1; pred/target (B, M, K, D) at the target patches."""
    target = mx.stop_gradient(target)
    out = []
    for level, cells in enumerate(level_idx):
        hl, wl = level_grid(grid, level)
        if level == 0 and fpn is None:
            p, t, w = pred, target, mx.ones(pred.shape[:3])
        else:
            p, w = pool_to_level(pred, cells, hl * wl)
            t, _ = pool_to_level(target, cells, hl * wl)
        out.append([p, t, w])
    if fpn is not None:
        b, m = pred.shape[:2]
        grids = [p.reshape(b, m, *level_grid(grid, l), -1) for l, (p, _, _) in enumerate(out)]
        for l, g in enumerate(fpn(grids)):
            out[l][0] = g.reshape(b, m, -1, g.shape[-1])
    if normalize_embeddings:
        out = [[_l2(p), _l2(t), w] for p, t, w in out]
    return [tuple(x) for x in out]
