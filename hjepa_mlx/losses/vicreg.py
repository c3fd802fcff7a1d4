"""VICReg, the official formulation (Bardes et al., ICLR 2022; facebookresearch/vicreg).

For two batches of embeddings z1, z2 (n, d), in fp32:
    invariance  s = mean((z1 - z2)^2) over n * d
    variance    (v(z1) + v(z2)) / 2,  v(z) = mean_j relu(gamma - sqrt(Var(z_j) + eps)), unbiased Var,
                gamma = 1, eps = 1e-4
    covariance  c(z1) + c(z2),  c(z) = (1/d) sum_{i != j} C_ij^2,  C = (z - mean)^T (z - mean) / (n - 1)
    loss        sim_coeff * s + std_coeff * variance + cov_coeff * covariance
Note the official asymmetry kept here: the variance averages the two branches, the covariance sums them.
"""

from __future__ import annotations

import mlx.core as mx

GAMMA = 1.0
EPS = 1e-4


def _check(z: mx.array) -> mx.array:
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"VICReg needs embeddings of shape (n >= 2, d), got {tuple(z.shape)}")
    return z.astype(mx.float32)


def variance_term(z: mx.array, gamma: float = GAMMA) -> mx.array:
    """v(z) = mean_j relu(gamma - sqrt(Var(z_j) + eps)), unbiased variance over the batch."""
    std = mx.sqrt(mx.var(z, axis=0, ddof=1) + EPS)
    return mx.maximum(gamma - std, 0.0).mean()


def covariance_term(z: mx.array) -> mx.array:
    """c(z) = (1/d) sum of the squared off-diagonal entries of the (n - 1)-normalised covariance."""
    n, d = z.shape
    zc = z - z.mean(axis=0)
    cov = (zc.T @ zc) / (n - 1)
    off_diagonal = cov * (1.0 - mx.eye(d, dtype=cov.dtype))
    return (off_diagonal * off_diagonal).sum() / d


def vicreg_terms(z1: mx.array, z2: mx.array, gamma: float = GAMMA) -> dict:
    """The three unweighted terms of two views z1, z2 (n, d): vicreg_invariance, vicreg_variance,
    vicreg_covariance (scalars)."""
    z1, z2 = _check(z1), _check(z2)
    if z1.shape != z2.shape:
        raise ValueError(f"VICReg views differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    return {"vicreg_invariance": mx.mean((z1 - z2) ** 2),
            "vicreg_variance": (variance_term(z1, gamma) + variance_term(z2, gamma)) / 2,
            "vicreg_covariance": covariance_term(z1) + covariance_term(z2)}


def vicreg_loss(z1: mx.array, z2: mx.array, sim_coeff: float, std_coeff: float, cov_coeff: float,
                gamma: float = GAMMA):
    """Two-view VICReg: z1, z2 (n, d); coefficients lambda (sim), mu (std), nu (cov).
    Returns (loss, {vicreg_invariance, vicreg_variance, vicreg_covariance, vicreg_loss})."""
    t = vicreg_terms(z1, z2, gamma)
    loss = sim_coeff * t["vicreg_invariance"] + std_coeff * t["vicreg_variance"] + cov_coeff * t["vicreg_covariance"]
    return loss, {**t, "vicreg_loss": loss}


def vicreg_loss_single(z: mx.array, std_coeff: float, cov_coeff: float, gamma: float = GAMMA):
    """One view z (n, d): std_coeff * v(z) + cov_coeff * c(z), for configs whose invariance coefficient
    is 0. Returns (loss, {vicreg_variance, vicreg_covariance, vicreg_loss})."""
    z = _check(z)
    t = {"vicreg_variance": variance_term(z, gamma), "vicreg_covariance": covariance_term(z)}
    loss = std_coeff * t["vicreg_variance"] + cov_coeff * t["vicreg_covariance"]
    return loss, {**t, "vicreg_loss": loss}
