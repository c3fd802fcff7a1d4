"""NT-Xent / InfoNCE over two views: 2B embeddings, the positive of each is its other view, the
negatives are the 2B - 2 other embeddings (self excluded); also the accuracy of picking the positive."""

from __future__ import annotations

import mlx.core as mx


def nt_xent(z1: mx.array, z2: mx.array, temperature: float, use_cosine_similarity: bool = True):
    z = mx.concatenate([z1, z2], axis=0).astype(mx.float32)
    if use_cosine_similarity:
        z = z / mx.maximum(mx.linalg.norm(z, axis=1, keepdims=True), 1e-8)
    n = z.shape[0]
    b = n // 2
    logits = (z @ z.T) / temperature
    logits = mx.where(mx.eye(n, dtype=mx.bool_), -1e9, logits)        # exclude self-similarity
    positives = mx.concatenate([mx.arange(b, n), mx.arange(0, b)])
    log_prob = logits - mx.logsumexp(logits, axis=1, keepdims=True)
    loss = -mx.take_along_axis(log_prob, positives[:, None], axis=1).mean()
    accuracy = (mx.argmax(logits, axis=1) == positives).astype(mx.float32).mean()
    return loss, {"contrastive_loss": loss, "contrastive_accuracy": accuracy}
