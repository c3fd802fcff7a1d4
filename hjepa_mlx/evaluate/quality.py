"""Feature-quality diagnostics of an (n, d) feature matrix: RankMe, per-dimension spread, collapse flags.

All statistics are float64 NumPy on host features (pass pooled features of many images, n >> d, e.g. the
k-NN test features; RankMe can never exceed min(n, d)).

Collapse flags and their thresholds (simple on purpose; each is a number you can read in the report):
- "rank collapse":        RankMe < 0.05 * min(n, d)    (the features span < 5 % of the dimensions they could)
- "dimensional collapse": > 50 % of dimensions near-dead, where a dimension is near-dead when its std
                          across samples is < 0.01 * the mean per-dimension std (or < 1e-8 absolute, for
                          when every dimension is dead). The mean, not the median, so the reference still
                          means "a typical live dimension" when more than half are dead.
- "complete collapse":    spread < 0.1, where spread = sqrt(d) * RMS per-dimension std of the L2-normalised
                          features = sqrt(1 - |mean unit vector|^2): 1 when the directions are spread out,
                          0 when every image maps to the same direction (< 0.1 <=> mean cosine > ~0.99).
"""

from __future__ import annotations

import numpy as np

from hjepa_mlx.errors import UserError
from hjepa_mlx.normalize import unit_rows

RANK_COLLAPSE_FRACTION = 0.05
DEAD_DIM_RELATIVE_STD = 1e-2
DEAD_DIM_ABSOLUTE_STD = 1e-8
DIMENSIONAL_COLLAPSE_FRACTION = 0.5
COMPLETE_COLLAPSE_SPREAD = 0.1


def rankme(z: np.ndarray, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023): exp(entropy of p), p_k = sigma_k / ||sigma||_1 + eps, over the
    singular values sigma of the raw (uncentred) n x d matrix z. Between ~1 (rank one) and min(n, d)."""
    s = np.linalg.svd(_matrix(z), compute_uv=False)
    p = s / max(s.sum(), np.finfo(np.float64).tiny) + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def per_dim_std(z: np.ndarray) -> np.ndarray:
    """(d,) population std of each dimension across the n samples, float64."""
    return _matrix(z).std(axis=0)


def near_dead_dims(std: np.ndarray) -> np.ndarray:
    """(d,) bool: std < max(0.01 * mean std, 1e-8)."""
    return std < max(DEAD_DIM_RELATIVE_STD * float(std.mean()), DEAD_DIM_ABSOLUTE_STD)


def direction_spread(z: np.ndarray) -> float:
    """sqrt(d) * RMS per-dimension std of the L2-normalised rows (= sqrt(1 - |mean unit row|^2))."""
    z = _matrix(z)
    unit = unit_rows(z)
    return float(np.sqrt(z.shape[1] * (unit.var(axis=0)).mean()))


def feature_quality(z: np.ndarray) -> dict:
    """All diagnostics of z (n, d) as a flat dict: numbers, then the three collapse flags as bools.

    Keys: rankme, rankme_max (= min(n, d)), mean_dim_std, dead_dim_fraction, normalised_mean_dim_std,
    direction_spread, rank_collapse, dimensional_collapse, complete_collapse.
    """
    z = _matrix(z)
    std = per_dim_std(z)
    unit = unit_rows(z)
    metrics = {
        "rankme": rankme(z),
        "rankme_max": int(min(z.shape)),
        "mean_dim_std": float(std.mean()),
        "dead_dim_fraction": float(near_dead_dims(std).mean()),
        "normalised_mean_dim_std": float(unit.std(axis=0).mean()),
        "direction_spread": direction_spread(z),
    }
    flags = collapse_flags(metrics)
    for name in ("rank", "dimensional", "complete"):
        metrics[f"{name}_collapse"] = f"{name} collapse" in flags
    return metrics


def collapse_flags(metrics: dict) -> list[str]:
    """Names of the collapse modes the metrics of `feature_quality` show (empty list: none).

    Needs keys rankme, rankme_max, dead_dim_fraction, direction_spread (thresholds: module docstring).
    """
    flags = []
    if metrics["rankme"] < RANK_COLLAPSE_FRACTION * metrics["rankme_max"]:
        flags.append("rank collapse")
    if metrics["dead_dim_fraction"] > DIMENSIONAL_COLLAPSE_FRACTION:
        flags.append("dimensional collapse")
    if metrics["direction_spread"] < COMPLETE_COLLAPSE_SPREAD:
        flags.append("complete collapse")
    return flags


def _matrix(z) -> np.ndarray:
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or min(z.shape) == 0:
        raise UserError(f"feature quality needs a non-empty (n, d) feature matrix, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise UserError("feature quality: the features contain NaN or Inf; the encoder's weights have diverged "
                        "(evaluate an earlier checkpoint)")
    return z
