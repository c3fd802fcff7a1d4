"""The hierarchy's cell contract, in one place: level l groups the patch grid into 2^l x 2^l cells.

The level-l grid has Hl = ceil(H / 2^l) x Wl = ceil(W / 2^l) cells (cells cut by the grid edge hold
fewer patches); patch (row, col) belongs to cell (row >> l) * Wl + (col >> l); level 0 is the patch
index itself. The model pools targets and predictions with it (models/hierarchy.py), the mask sampler's
`MaskBatch.level_idx` and the level-l evaluation features (evaluate/features.py) use the same functions.
"""

from __future__ import annotations

import math


def level_grid(grid: tuple[int, int], level: int) -> tuple[int, int]:
    """(Hl, Wl) = (ceil(H / 2^l), ceil(W / 2^l)) cells of the level-l grid."""
    return math.ceil(grid[0] / 2 ** level), math.ceil(grid[1] / 2 ** level)


def parent_cells(patch_idx, grid: tuple[int, int], level: int):
    """The level-l cell of each patch index (row-major on `grid`); NumPy or MLX integer arrays alike."""
    if level == 0:
        return patch_idx
    wl = level_grid(grid, level)[1]
    rows, cols = patch_idx // grid[1], patch_idx % grid[1]
    return (rows >> level) * wl + (cols >> level)
