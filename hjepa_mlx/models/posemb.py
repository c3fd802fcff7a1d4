"""Position information: fixed 2-D sin-cos tables (I-JEPA / MAE) and axial 2-D RoPE (Heo et al., ECCV 2024).

Sin-cos table: exactly I-JEPA's `get_2d_sincos_pos_embed`. Its `np.meshgrid(grid_w, grid_h)` puts the
*column* coordinate in the first half of the channels and the *row* coordinate in the second half;
we keep that order so the table is bit-compatible with I-JEPA's (and MAE's).

2-D RoPE (axial): each head's channels are split in two halves; the first half is rotated by the token's
row index, the second half by its column index. Inside a half, consecutive channel pairs (2j, 2j+1) are
rotated by angle `pos * f_j` with f_j = 1 / theta^(2j / d_half) (d_half = head_dim / 2), the standard
1-D RoPE applied per axis. Positions are the (row, col) grid cells of the *gathered* tokens, so masked
tokens never take a position slot.

Two implementations, held together by a test:
  `rope_reference` - explicit cos / sin (the formula, easy to read);
  `rope_fused`     - `mx.fast.rope` with one position offset per token (each token becomes its own
                     length-1 "sequence", which is how `mx.fast.rope` accepts arbitrary positions).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

SINCOS_BASE = 10000.0


# ---------------------------------------------------------------- sin-cos tables

def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """1-D sin-cos embedding, float64.

    dim: channels (even). positions: (N,) numbers.
    Returns (N, dim): [sin(pos * omega), cos(pos * omega)] with omega_i = 1 / 10000^(2i / dim),
    i = 0 .. dim/2 - 1.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
    omega = 1.0 / SINCOS_BASE ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.asarray(positions, dtype=np.float64).reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d_numpy(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """(grid_h * grid_w, dim) float64 table in raster order (index = row * grid_w + col).

    Channels [0, dim/2) encode the column, [dim/2, dim) the row (I-JEPA's order; see module docstring).
    dim must be divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos table needs a width divisible by 4, got {dim}")
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> mx.array:
    """`sincos_2d_numpy` as a float32 MLX array (a constant, never a parameter)."""
    return mx.array(sincos_2d_numpy(dim, grid_h, grid_w).astype(np.float32))


def sincos_2d_resampled(dim: int, grid: tuple[int, int], full_grid: tuple[int, int]) -> mx.array:
    """The (grid_h * grid_w, dim) float32 table of a smaller grid (a multi-crop local crop) spread over the
    full grid's coordinate range: cell i sits at (i + 0.5) * full / small - 0.5, the centre of the full-grid
    area it covers. This is the sin-cos table interpolated exactly (the formula is continuous in the
    position); a grid equal to full_grid gives `sincos_2d` itself."""
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos table needs a width divisible by 4, got {dim}")
    rows_1d = (np.arange(grid[0]) + 0.5) * full_grid[0] / grid[0] - 0.5
    cols_1d = (np.arange(grid[1]) + 0.5) * full_grid[1] / grid[1] - 0.5
    rows, cols = np.meshgrid(rows_1d, cols_1d, indexing="ij")
    table = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
    return mx.array(table.astype(np.float32))


# ---------------------------------------------------------------- 2-D RoPE

def grid_positions(indices: mx.array, grid_w: int) -> tuple[mx.array, mx.array]:
    """Raster patch indices (..., N) -> (rows, cols), each (..., N) int32, on a grid of width grid_w."""
    indices = indices.astype(mx.int32)
    return indices // grid_w, indices % grid_w


def rope_frequencies(head_dim: int, theta: float) -> mx.array:
    """(head_dim // 4,) float32 frequencies f_j = 1 / theta^(2j / d_half), d_half = head_dim / 2."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {head_dim}")
    half = head_dim // 2
    return 1.0 / theta ** (mx.arange(0, half, 2, dtype=mx.float32) / half)


def rope_reference(x: mx.array, rows: mx.array, cols: mx.array, theta: float) -> mx.array:
    """Axial 2-D RoPE by the formula.

    x: (B, N, H, hd) tokens x heads x channels (heads on axis 2, *before* the attention transpose).
    rows, cols: (B, N) integer grid positions of the tokens. theta: RoPE base.
    Returns x rotated, same shape and dtype. Pair (2j, 2j+1) of the first half turns by rows * f_j,
    of the second half by cols * f_j.
    """
    b, n, h, hd = x.shape
    freqs = rope_frequencies(hd, theta)
    angles = mx.concatenate([rows.astype(mx.float32)[..., None] * freqs,
                             cols.astype(mx.float32)[..., None] * freqs], axis=-1)[:, :, None]  # (B,N,1,hd/2)
    cos, sin = mx.cos(angles).astype(x.dtype), mx.sin(angles).astype(x.dtype)
    pairs = x.reshape(b, n, h, hd // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return mx.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1).reshape(b, n, h, hd)


def rope_fused(x: mx.array, rows: mx.array, cols: mx.array, theta: float) -> mx.array:
    """Same as `rope_reference`, with `mx.fast.rope`.

    `mx.fast.rope` takes one position offset per leading batch entry and counts positions along axis -2,
    so each token becomes its own batch entry with a length-1 sequence: (B*N, H, 1, hd/2) per half,
    offsets = that token's row (first half) or column (second half). `traditional=True` rotates
    consecutive pairs, and base=theta with dims = hd/2 gives f_j = 1 / theta^(2j / (hd/2)).
    """
    b, n, h, hd = x.shape
    half = hd // 2
    if hd % 4:
        raise ValueError(f"2-D RoPE needs a head width divisible by 4, got {hd}")
    y = x.reshape(b * n, h, 1, hd)
    first = mx.fast.rope(y[..., :half], half, traditional=True, base=theta, scale=1.0,
                         offset=rows.reshape(-1).astype(mx.int32))
    second = mx.fast.rope(y[..., half:], half, traditional=True, base=theta, scale=1.0,
                          offset=cols.reshape(-1).astype(mx.int32))
    return mx.concatenate([first, second], axis=-1).reshape(b, n, h, hd)
