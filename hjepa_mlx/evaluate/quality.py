"""Feature-quality diagnostics: RankMe (Garrido et al., 2023), per-dimension std, near-dead dimensions,
and collapse flags.

Thresholds (documented, deliberately simple):
- a dimension is near-dead when its std across samples is below 1e-2 x the median per-dimension std
  (or below 1e-6 absolute);
- "rank collapse" when RankMe < 5 % of min(n, d);
- "dimensional collapse" when more than half of the dimensions are near-dead;
- "complete collapse" when the mean per-dimension std of L2-normalised features is < 1e-3.
"""

from __future__ import annotations

import numpy as np


def rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def per_dim_std(z: np.ndarray) -> np.ndarray:
    return np.asarray(z, np.float64).std(axis=0)


def feature_quality(z: np.ndarray) -> dict:
    z = np.asarray(z, np.float64)
    std = per_dim_std(z)
    dead = std < np.maximum(1e-2 * np.median(std), 1e-6)
    normed = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    rank = rankme(z)
    out = {"rankme": rank, "mean_dim_std": float(std.mean()), "dead_dim_fraction": float(dead.mean()),
           "normalised_mean_dim_std": float(per_dim_std(normed).mean())}
    out["rank_collapse"] = float(rank < 0.05 * min(z.shape))
    out["dimensional_collapse"] = float(out["dead_dim_fraction"] > 0.5)
    out["complete_collapse"] = float(out["normalised_mean_dim_std"] < 1e-3)
    return out
