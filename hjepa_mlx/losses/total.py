"""The configured loss: jepa_weight * prediction + vicreg_weight * VICReg + contrastive_weight * NT-Xent.

VICReg acts on the pooled context-encoder features: its invariance term between the two augmented
views of the same images (C-JEPA), variance and covariance on both; with one view (sim_coeff 0) the
single-view variance + covariance. NT-Xent pairs the two views' pooled features: context vs context when
`on_context`, else each view's context features against the other view's (stop-gradient) target-encoder
features, so the term still trains the context encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from hjepa_mlx.losses.contrastive import nt_xent
from hjepa_mlx.losses.jepa import prediction_loss
from hjepa_mlx.losses.vicreg import vicreg_loss, vicreg_loss_single


@dataclass(frozen=True)
class LossSettings:
    prediction_kind: str = "smoothl1"
    hierarchy_weights: tuple = (1.0,)
    huber_delta: float = 1.0
    jepa_weight: float = 1.0
    vicreg: bool = False
    vicreg_weight: float = 0.1
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    contrastive: bool = False
    contrastive_weight: float = 0.1
    temperature: float = 0.1
    use_cosine: bool = True
    on_context: bool = False

    @property
    def needs_two_views(self) -> bool:
        return (self.vicreg and self.sim_coeff > 0) or self.contrastive


def total_loss(s: LossSettings, levels, features: dict):
    pred, metrics = prediction_loss(levels, s.prediction_kind, s.hierarchy_weights, s.huber_delta)
    total = s.jepa_weight * pred
    metrics = {**metrics, "loss_prediction": pred}
    if s.vicreg:
        if s.needs_two_views and "context_pooled_2" in features:
            v, vm = vicreg_loss(features["context_pooled_1"], features["context_pooled_2"],
                                s.sim_coeff, s.std_coeff, s.cov_coeff)
        else:
            v, vm = vicreg_loss_single(features["context_pooled_1"], s.std_coeff, s.cov_coeff)
        total = total + s.vicreg_weight * v
        metrics.update(vm)
    if s.contrastive:
        if s.on_context:
            c, cm = nt_xent(features["context_pooled_1"], features["context_pooled_2"], s.temperature, s.use_cosine)
        else:
            c1, cm = nt_xent(features["context_pooled_1"], mx.stop_gradient(features["target_pooled_2"]),
                             s.temperature, s.use_cosine)
            c2, cm2 = nt_xent(features["context_pooled_2"], mx.stop_gradient(features["target_pooled_1"]),
                              s.temperature, s.use_cosine)
            c = (c1 + c2) / 2
            cm = {k: (cm[k] + cm2[k]) / 2 for k in cm}
        total = total + s.contrastive_weight * c
        metrics.update(cm)
    metrics["loss_total"] = total
    return total, metrics
