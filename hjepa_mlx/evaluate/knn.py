"""Weighted k-NN classification (DINO protocol): L2-normalised features, cosine similarity, top-k
neighbours, votes weighted by exp(sim / T), several k at once; test rows processed in chunks."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 k_values=(1, 5, 20), temperature: float = 0.07, num_classes: int | None = None,
                 chunk: int = 256) -> dict[int, float]:
    """{k: top-1 accuracy} of test rows classified by their k nearest train rows."""
    num_classes = num_classes or int(max(train_y.max(), test_y.max()) + 1)
    k_max = min(max(k_values), len(train_x))
    bank = mx.array(_l2(train_x))
    labels = mx.array(train_y.astype(np.int32))
    correct = {k: 0 for k in k_values}
    for lo in range(0, len(test_x), chunk):
        q = mx.array(_l2(test_x[lo:lo + chunk]))
        sim = q @ bank.T                                           # (n, N)
        order = mx.argsort(-sim, axis=1)[:, :k_max]
        top_sim = mx.take_along_axis(sim, order, axis=1)
        top_lab = labels[order]
        weights = mx.exp(top_sim / temperature)
        onehot = (top_lab[..., None] == mx.arange(num_classes)).astype(mx.float32)   # (n, k, C)
        truth = mx.array(test_y[lo:lo + chunk].astype(np.int32))
        for k in k_values:
            kk = min(k, k_max)
            votes = (weights[:, :kk, None] * onehot[:, :kk]).sum(axis=1)
            correct[k] += int((mx.argmax(votes, axis=1) == truth).sum().item())
    return {k: correct[k] / len(test_x) for k in k_values}


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
