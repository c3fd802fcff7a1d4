"""VICReg, the official formulation (Bardes et al.; facebookresearch/vicreg).

invariance s = mean((z1 - z2)^2); variance (v(z1) + v(z2)) / 2 with v(z) = mean_j relu(1 - sqrt(Var z_j + 1e-4))
(unbiased variance); covariance c(z1) + c(z2) with c(z) = sum_{i != j} C_ij^2 / d, C = zc^T zc / (n - 1).
"""

from __future__ import annotations

import mlx.core as mx

GAMMA = 1.0
EPS = 1e-4


def variance_term(z: mx.array) -> mx.array:
    std = mx.sqrt(z.var(axis=0, ddof=1) + EPS)
    return mx.maximum(GAMMA - std, 0.0).mean()


def covariance_term(z: mx.array) -> mx.array:
    n, d = z.shape
    zc = z - z.mean(axis=0)
    cov = (zc.T @ zc) / (n - 1)
    off = cov * (1.0 - mx.eye(d, dtype=cov.dtype))
    return (off * off).sum() / d


def vicreg_terms(z1: mx.array, z2: mx.array) -> dict:
    z1, z2 = z1.astype(mx.float32), z2.astype(mx.float32)
    return {"vicreg_invariance": mx.mean((z1 - z2) ** 2),
            "vicreg_variance": (variance_term(z1) + variance_term(z2)) / 2,
            "vicreg_covariance": covariance_term(z1) + covariance_term(z2)}


def vicreg_loss(z1, z2, sim_coeff: float, std_coeff: float, cov_coeff: float):
    t = vicreg_terms(z1, z2)
    loss = sim_coeff * t["vicreg_invariance"] + std_coeff * t["vicreg_variance"] + cov_coeff * t["vicreg_covariance"]
    return loss, {**t, "vicreg_loss": loss}


def vicreg_loss_single(z, std_coeff: float, cov_coeff: float):
    """Variance + covariance of one view (for configs whose invariance coefficient is 0)."""
    z = z.astype(mx.float32)
    t = {"vicreg_variance": variance_term(z), "vicreg_covariance": covariance_term(z)}
    loss = std_coeff * t["vicreg_variance"] + cov_coeff * t["vicreg_covariance"]
    return loss, {**t, "vicreg_loss": loss}
