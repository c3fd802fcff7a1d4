"""The configured loss:

    total = jepa_weight * prediction + vicreg_weight * VICReg + contrastive_weight * NT-Xent

* prediction: `prediction_loss` over the hierarchy levels (see losses/jepa.py; hierarchy weights are
  multipliers, not normalised).
* VICReg (when `vicreg`) acts on `vicreg_1` / `vicreg_2`, the context-encoder features the model's
  projector made for it (models/projector.py), or on context_pooled_1 / _2 when the model gives none.
  With a second view present, the two-view form: invariance between the two augmented views of the same
  images (C-JEPA), variance and covariance on both; with multi-crop's `vicreg_local` (B, L, E) too, the
  mean of that form over the pairs (view 1, view 2) and (either view, each local crop). With one view
  (only allowed when sim_coeff is 0) the single-view variance + covariance of view 1.
* NT-Xent (when `contrastive`) needs two views. `on_context`: the pair (context_pooled_1,
  context_pooled_2). Otherwise each view's context features against the *other* view's target-encoder
  features, averaged over the two directions: (NT-Xent(ctx_1, sg(tgt_2)) + NT-Xent(ctx_2, sg(tgt_1))) / 2.
  Decision: the target features carry no gradient, so pairing target with target would train nothing;
  pairing online context features with the momentum target features (as MoCo/BYOL do) keeps the term
  training the context encoder while using the target encoder as the stable side.

Metrics: loss_total, loss_prediction, loss_level{l}, and the terms' own metrics (vicreg_*,
contrastive_loss, contrastive_accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from hjepa_mlx.losses.contrastive import nt_xent
from hjepa_mlx.losses.jepa import KINDS, prediction_loss
from hjepa_mlx.losses.vicreg import vicreg_loss, vicreg_loss_single


@dataclass(frozen=True)
class LossSettings:
    """prediction_kind: 'smoothl1' | 'mse' | 'huber'; hierarchy_weights: per-level multipliers;
    huber_delta: Huber threshold; jepa_weight: multiplier of the prediction loss.
    vicreg: on/off; vicreg_weight: its multiplier; sim/std/cov_coeff: lambda, mu, nu; std_target: the
    variance hinge's gamma.
    contrastive: on/off; contrastive_weight: its multiplier; temperature: NT-Xent T; use_cosine: L2-normalise
    before the dot product; on_context: pair the two views' context features (else context vs target)."""

    prediction_kind: str = "smoothl1"
    hierarchy_weights: tuple = (1.0,)
    huber_delta: float = 1.0
    jepa_weight: float = 1.0
    vicreg: bool = False
    vicreg_weight: float = 0.1
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    std_target: float = 1.0
    contrastive: bool = False
    contrastive_weight: float = 0.1
    temperature: float = 0.1
    use_cosine: bool = True
    on_context: bool = False

    def __post_init__(self):
        if self.prediction_kind not in KINDS:
            raise ValueError(f"LossSettings.prediction_kind {self.prediction_kind!r} is not one of {KINDS}")
        if self.contrastive and self.temperature <= 0:
            raise ValueError(f"LossSettings.temperature must be > 0, got {self.temperature}")

    @property
    def needs_two_views(self) -> bool:
        """True when a term compares two augmented views: VICReg invariance (sim_coeff > 0) or NT-Xent."""
        return (self.vicreg and self.sim_coeff > 0) or self.contrastive


def _view(features: dict, name: str, why: str) -> mx.array:
    if name not in features:
        raise ValueError(f"total_loss: {why} needs features[{name!r}] (the model must supply the second view)")
    return features[name]


def _vicreg_pairs(s: LossSettings, z1, z2, local=None):
    """Two-view VICReg, or with multi-crop's local features (B, L, E) the mean over the pairs
    (view 1, view 2) and (each global view, each local crop): 1 + 2L pairs, as multi-crop VICReg averages."""
    if local is None:
        return vicreg_loss(z1, z2, s.sim_coeff, s.std_coeff, s.cov_coeff, s.std_target)
    pairs = [(z1, z2)] + [(g, local[:, i]) for i in range(local.shape[1]) for g in (z1, z2)]
    results = [vicreg_loss(a, b, s.sim_coeff, s.std_coeff, s.cov_coeff, s.std_target) for a, b in pairs]
    loss = sum(r[0] for r in results) / len(pairs)
    metrics = {key: sum(r[1][key] for r in results) / len(pairs) for key in results[0][1]}
    return loss, metrics


def total_loss(s: LossSettings, levels, features: dict):
    """s: the settings; levels: per-level (pred, target, weight) as `prediction_loss` takes them;
    features: {'context_pooled_1', 'target_pooled_1'} (B, D) and, with two views, '..._2'; optionally
    'vicreg_1' (and 'vicreg_2') (B, E), what VICReg acts on instead of the pooled context features.
    Returns (total, metrics)."""
    pred, metrics = prediction_loss(levels, s.prediction_kind, s.hierarchy_weights, s.huber_delta)
    total = s.jepa_weight * pred
    metrics = {**metrics, "loss_prediction": pred}
    if s.vicreg:
        z1 = features.get("vicreg_1", features["context_pooled_1"])
        if "context_pooled_2" in features:
            z2 = features.get("vicreg_2", features["context_pooled_2"])
            v, vm = _vicreg_pairs(s, z1, z2, features.get("vicreg_local"))
        elif s.sim_coeff == 0:
            v, vm = vicreg_loss_single(z1, s.std_coeff, s.cov_coeff, s.std_target)
        else:
            _view(features, "context_pooled_2", f"VICReg invariance (sim_coeff {s.sim_coeff})")
        total = total + s.vicreg_weight * v
        metrics.update(vm)
    if s.contrastive:
        ctx1 = features["context_pooled_1"]
        ctx2 = _view(features, "context_pooled_2", "NT-Xent")
        if s.on_context:
            c, cm = nt_xent(ctx1, ctx2, s.temperature, s.use_cosine)
        else:
            tgt1 = mx.stop_gradient(features["target_pooled_1"])
            tgt2 = mx.stop_gradient(_view(features, "target_pooled_2", "NT-Xent on target features"))
            c1, cm1 = nt_xent(ctx1, tgt2, s.temperature, s.use_cosine)
            c2, cm2 = nt_xent(ctx2, tgt1, s.temperature, s.use_cosine)
            c = (c1 + c2) / 2
            cm = {key: (cm1[key] + cm2[key]) / 2 for key in cm1}
        total = total + s.contrastive_weight * c
        metrics.update(cm)
    metrics["loss_total"] = total
    return total, metrics
