"""VICReg, the official formulation (Bardes et al., ICLR 2022; facebookresearch/vicreg).

For two batches of embeddings z1, z2 (n, d), in fp32:
    invariance  s = mean((z1 - z2)^2) over n * d
    variance    (v(z1) + v(z2)) / 2,  v(z) = mean_j relu(gamma - sqrt(Var(z_j) + eps)), unbiased Var,
                gamma = 1, eps = 1e-4
    covariance  c(z1) + c(z2),  c(z) = (1/d) sum_{i != j} C_ij^2,  C = (z - mean)^T (z - mean) / (n - 1)
    loss        sim_coeff * s + std_coeff * variance + cov_coeff * covariance
Note the official asymmetry kept here: the variance averages the two branches, the covariance sums them.

Registered as the loss term 'vicreg' (losses/registry.py), configured by loss.vicreg_weight and
loss.vicreg.* (build.loss_settings). It acts on `vicreg_1` / `vicreg_2`, the context-encoder features the
model's projector made for it (models/projector.py), or on context_pooled_1 / _2 when the model gives none.
With a second view present, the two-view form: invariance between the two augmented views of the same
images (C-JEPA), variance and covariance on both; with multi-crop's `vicreg_local` (B, L, E) too, the mean
of that form over the pairs (view 1, view 2) and (either view, each local crop). With one view (only
allowed when sim_coeff is 0) the single-view variance + covariance of view 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from hjepa_mlx.losses.registry import LossTerm, register_loss_term, require

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


# ---------------------------------------------------------------- the registered term

@dataclass(frozen=True)
class VICRegSettings:
    """weight: the term's multiplier; sim/std/cov_coeff: lambda, mu, nu; std_target: the variance hinge's
    gamma; projector, expander_dim: what the model feeds the term (models/projector.py), for describe only."""

    weight: float = 0.1
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    std_target: float = 1.0
    projector: str = "layernorm"
    expander_dim: int = 1024


def _pairs(s: VICRegSettings, z1, z2, local=None):
    """Two-view VICReg, or with multi-crop's local features (B, L, E) the mean over the pairs
    (view 1, view 2) and (each global view, each local crop): 1 + 2L pairs, as multi-crop VICReg averages."""
    if local is None:
        return vicreg_loss(z1, z2, s.sim_coeff, s.std_coeff, s.cov_coeff, s.std_target)
    pairs = [(z1, z2)] + [(g, local[:, i]) for i in range(local.shape[1]) for g in (z1, z2)]
    results = [vicreg_loss(a, b, s.sim_coeff, s.std_coeff, s.cov_coeff, s.std_target) for a, b in pairs]
    loss = sum(r[0] for r in results) / len(pairs)
    metrics = {key: sum(r[1][key] for r in results) / len(pairs) for key in results[0][1]}
    return loss, metrics


def vicreg_term(s: VICRegSettings, features: dict):
    """The term on the model's features (the forms in the module docstring) -> (loss, metrics)."""
    z1 = features.get("vicreg_1", features["context_pooled_1"])
    if "context_pooled_2" in features:
        z2 = features.get("vicreg_2", features["context_pooled_2"])
        return _pairs(s, z1, z2, features.get("vicreg_local"))
    if s.sim_coeff == 0:
        return vicreg_loss_single(z1, s.std_coeff, s.cov_coeff, s.std_target)
    require(features, "context_pooled_2", f"VICReg invariance (sim_coeff {s.sim_coeff})")


def _describe(s: VICRegSettings) -> str:
    d = s.expander_dim
    on = {"none": "pooled context tokens", "layernorm": "affine-free normalised context tokens, pooled",
          "centered": "context tokens minus their batch mean, affine-free normalised, pooled",
          "expander": f"expander {d}-{d}-{d} on pooled context tokens"}[s.projector]
    return (f"VICReg (sim {s.sim_coeff:g}, std {s.std_coeff:g} towards {s.std_target:g}, cov {s.cov_coeff:g}) "
            f"on the {on}")


VICREG = register_loss_term(LossTerm(
    "vicreg", VICRegSettings, vicreg_term, needs_two_views=lambda s: s.sim_coeff > 0, describe=_describe,
    keys=("loss.vicreg_weight", "loss.vicreg.sim_coeff", "loss.vicreg.std_coeff", "loss.vicreg.cov_coeff",
          "loss.vicreg.projector", "loss.vicreg.expander_dim", "loss.vicreg.std_target"),
    extra_features=lambda s: ("vicreg_1", "vicreg_2")))
