"""The configured loss:

    total = jepa_weight * prediction + sum over the enabled terms, in registration order, of weight * term

* prediction: `prediction_loss` over the hierarchy levels (see losses/jepa.py; hierarchy weights are
  multipliers, not normalised).
* the terms: the regularisers of losses/registry.py - the built-ins VICReg (losses/vicreg.py) then NT-Xent
  (losses/contrastive.py), then any registered from outside the package (config key loss.terms).

Features (what the model gives every term, models/hjepa.py): 'context_pooled_1', 'target_pooled_1' (B, D)
and, with two views, 'context_pooled_2'; when a term asks for them (LossTerm.extra_features),
'vicreg_1' / 'vicreg_2' (B, E) (VICReg's projected features) and 'target_pooled_2'; with multi-crop,
'vicreg_local' (B, L, E).

Metrics: loss_level{l}, loss_prediction, the terms' own metrics in term order (vicreg_*, contrastive_loss,
contrastive_accuracy, ...), loss_total.
"""

from __future__ import annotations

from dataclasses import dataclass

from hjepa_mlx.losses import registry
from hjepa_mlx.losses.jepa import KINDS, prediction_loss


@dataclass(frozen=True)
class LossSettings:
    """prediction_kind: 'smoothl1' | 'mse' | 'huber'; hierarchy_weights: per-level multipliers;
    huber_delta: Huber threshold; jepa_weight: multiplier of the prediction loss; terms: (name, settings)
    of the enabled registered terms (kept in registration order)."""

    prediction_kind: str = "smoothl1"
    hierarchy_weights: tuple = (1.0,)
    huber_delta: float = 1.0
    jepa_weight: float = 1.0
    terms: tuple = ()

    def __post_init__(self):
        if self.prediction_kind not in KINDS:
            raise ValueError(f"LossSettings.prediction_kind {self.prediction_kind!r} is not one of {KINDS}")
        terms = list(self.terms)
        names = [name for name, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"LossSettings: a loss term is given twice in {names}")
        object.__setattr__(self, "terms", registry.order(terms))

    def enabled(self):
        """(LossTerm, settings) of every enabled term, in registration order."""
        return [(registry.loss_term(name), settings) for name, settings in self.terms]

    def settings_of(self, name: str):
        """The settings of the enabled term `name`, or None."""
        return dict(self.terms).get(name)

    @property
    def needs_two_views(self) -> bool:
        """True when a term compares two augmented views (VICReg invariance with sim_coeff > 0, NT-Xent)."""
        return any(term.needs_two_views(settings) for term, settings in self.enabled())

    @property
    def extra_features(self) -> frozenset[str]:
        """The optional features the enabled terms read (the model computes only these)."""
        return frozenset(f for term, settings in self.enabled() for f in term.extra_features(settings))


def total_loss(s: LossSettings, levels, features: dict):
    """s: the settings; levels: per-level (pred, target, weight) as `prediction_loss` takes them;
    features: the dict of the module docstring. Returns (total, metrics)."""
    pred, metrics = prediction_loss(levels, s.prediction_kind, s.hierarchy_weights, s.huber_delta)
    total = s.jepa_weight * pred
    metrics = {**metrics, "loss_prediction": pred}
    for term, settings in s.enabled():
        value, term_metrics = term.compute(settings, features)
        total = total + settings.weight * value
        metrics.update(term_metrics)
    metrics["loss_total"] = total
    return total, metrics
