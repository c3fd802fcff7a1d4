"""NT-Xent / InfoNCE over two views (SimCLR's loss).

The 2B embeddings [z1; z2] (L2-normalised when `use_cosine_similarity`, else raw dot products) give a
2B x 2B similarity matrix divided by the temperature; the positive of row i is its other view
(i + B mod 2B); each row is a softmax cross-entropy over the 2B - 1 other rows (itself excluded).
Also reported: the accuracy of picking the positive (argmax over the 2B - 1 others). fp32 throughout.

Registered as the loss term 'contrastive' (losses/registry.py), configured by loss.use_contrastive and
loss.contrastive_* (build.loss_settings); it needs two views. `on_context`: the pair (context_pooled_1,
context_pooled_2). Otherwise each view's context features against the *other* view's target-encoder
features, averaged over the two directions: (NT-Xent(ctx_1, sg(tgt_2)) + NT-Xent(ctx_2, sg(tgt_1))) / 2.
Decision: the target features carry no gradient, so pairing target with target would train nothing;
pairing online context features with the momentum target features (as MoCo/BYOL do) keeps the term
training the context encoder while using the target encoder as the stable side.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from hjepa_mlx.losses.registry import LossTerm, register_loss_term, require
from hjepa_mlx.normalize import l2_normalize

_EXCLUDED = -1e9   # logit of a row's similarity with itself: exp() underflows to exactly 0 in fp32


def nt_xent(z1: mx.array, z2: mx.array, temperature: float, use_cosine_similarity: bool = True):
    """z1, z2: (B, D) the two views' embeddings, row i of each from the same image; temperature: T > 0;
    use_cosine_similarity: L2-normalise first (else raw dot product).
    Returns (loss, {contrastive_loss, contrastive_accuracy})."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent needs two (B, D) views of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    z = mx.concatenate([z1, z2], axis=0).astype(mx.float32)
    if use_cosine_similarity:
        z = l2_normalize(z, 1e-8)
    n = z.shape[0]
    logits = (z @ z.T) / temperature
    logits = mx.where(mx.eye(n, dtype=mx.bool_), _EXCLUDED, logits)
    positives = mx.concatenate([mx.arange(n // 2, n), mx.arange(0, n // 2)])
    log_prob = logits - mx.logsumexp(logits, axis=1, keepdims=True)
    loss = -mx.take_along_axis(log_prob, positives[:, None], axis=1).mean()
    accuracy = (mx.argmax(logits, axis=1) == positives).astype(mx.float32).mean()
    return loss, {"contrastive_loss": loss, "contrastive_accuracy": accuracy}


# ---------------------------------------------------------------- the registered term

@dataclass(frozen=True)
class NTXentSettings:
    """weight: the term's multiplier; temperature: T > 0; use_cosine: L2-normalise before the dot product;
    on_context: pair the two views' context features (else context vs the other view's target)."""

    weight: float = 0.1
    temperature: float = 0.1
    use_cosine: bool = True
    on_context: bool = False

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"NT-Xent temperature must be > 0, got {self.temperature}")


def contrastive_term(s: NTXentSettings, features: dict):
    """The term on the model's features (the pairing in the module docstring) -> (loss, metrics)."""
    ctx1 = features["context_pooled_1"]
    ctx2 = require(features, "context_pooled_2", "NT-Xent")
    if s.on_context:
        return nt_xent(ctx1, ctx2, s.temperature, s.use_cosine)
    tgt1 = mx.stop_gradient(features["target_pooled_1"])
    tgt2 = mx.stop_gradient(require(features, "target_pooled_2", "NT-Xent on target features"))
    c1, cm1 = nt_xent(ctx1, tgt2, s.temperature, s.use_cosine)
    c2, cm2 = nt_xent(ctx2, tgt1, s.temperature, s.use_cosine)
    return (c1 + c2) / 2, {key: (cm1[key] + cm2[key]) / 2 for key in cm1}


CONTRASTIVE = register_loss_term(LossTerm(
    "contrastive", NTXentSettings, contrastive_term, needs_two_views=lambda s: True,
    describe=lambda s: f"NT-Xent (T {s.temperature:g}, {'context' if s.on_context else 'context vs target'} features)",
    keys=("loss.contrastive_weight", "loss.contrastive_temperature", "loss.use_cosine_similarity",
          "loss.contrastive_on_context"),
    extra_features=lambda s: () if s.on_context else ("target_pooled_2",)))
