"""L2 normalisation, written once: rows (or the last axis) scaled to unit length, with a floor on the norm
so that an all-zero vector stays zero instead of becoming NaN."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def l2_normalize(x: mx.array, eps: float = 1e-6) -> mx.array:
    """x / max(||x||, eps) over the last axis (MLX, differentiable)."""
    return x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), eps)


def unit_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """x / max(||x||, eps) over the last axis (NumPy, for evaluation), in x's dtype."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
