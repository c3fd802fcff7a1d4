"""Fixed 2-D sin-cos position tables (I-JEPA / MAE) and axial 2-D RoPE (Heo et al., ECCV 2024)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(len(positions), dim): first half sin, second half cos, omega_i = 1 / 10000^(2i/dim)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = positions.astype(np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> mx.array:
    """(grid_h*grid_w, dim) table in raster order: half the channels encode the row, half the column."""
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    table = np.concatenate([sincos_1d(dim // 2, rows.reshape(-1)), sincos_1d(dim // 2, cols.reshape(-1))], axis=1)
    return mx.array(table.astype(np.float32))


def rope_angles(head_dim: int, rows: mx.array, cols: mx.array, theta: float) -> mx.array:
    """(…, N, head_dim/2) rotation angles: the first quarter-pairs follow the row, the rest the column."""
    quarter = head_dim // 4
    freqs = 1.0 / theta ** (mx.arange(quarter, dtype=mx.float32) / quarter)
    row_angles = rows.astype(mx.float32)[..., None] * freqs
    col_angles = cols.astype(mx.float32)[..., None] * freqs
    return mx.concatenate([row_angles, col_angles], axis=-1)


def apply_rope(x: mx.array, angles: mx.array) -> mx.array:
    """Rotate consecutive channel pairs (x[2i], x[2i+1]) of x (B, H, N, hd) by angles (B, 1, N, hd/2)."""
    shape = x.shape
    pairs = x.reshape(*shape[:-1], shape[-1] // 2, 2)
    cos, sin = mx.cos(angles), mx.sin(angles)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = mx.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
    return out.reshape(shape)
