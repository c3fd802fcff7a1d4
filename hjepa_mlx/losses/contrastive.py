"""NT-Xent / InfoNCE over two views (SimCLR's loss).

The 2B embeddings [z1; z2] (L2-normalised when `use_cosine_similarity`, else raw dot products) give a
2B x 2B similarity matrix divided by the temperature; the positive of row i is its other view
(i + B mod 2B); each row is a softmax cross-entropy over the 2B - 1 other rows (itself excluded).
Also reported: the accuracy of picking the positive (argmax over the 2B - 1 others). fp32 throughout.
"""

from __future__ import annotations

import mlx.core as mx

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
