"""Prediction loss per hierarchy level: smooth-L1 (beta 1), MSE or Huber, weighted over levels.

Per level: the element-wise loss averaged over D, the weighted mean over the cells of each target block
(weights 0/1 from the hierarchy pooling), then the mean over blocks and images - every block counts
equally, so the loss of k micro-batches averages to the loss of the whole batch. Total = sum_l hierarchy_weights[l] * loss_l, *not* normalised by the sum of the
weights: the weights are the per-level multipliers the config writes.
"""

from __future__ import annotations

import mlx.core as mx


def smooth_l1(diff: mx.array, beta: float = 1.0) -> mx.array:
    a = mx.abs(diff)
    return mx.where(a < beta, 0.5 * diff * diff / beta, a - 0.5 * beta)


def elementwise(kind: str, pred: mx.array, target: mx.array, huber_delta: float = 1.0) -> mx.array:
    diff = pred.astype(mx.float32) - target.astype(mx.float32)
    if kind == "smoothl1":
        return smooth_l1(diff, 1.0)
    if kind == "mse":
        return diff * diff
    if kind == "huber":  # PyTorch semantics: huber_delta(x) = delta * smooth_l1_{beta=delta}(x)
        return huber_delta * smooth_l1(diff, huber_delta)
    raise ValueError(f"unknown prediction loss {kind!r}")


def prediction_loss(levels, kind: str, hierarchy_weights, huber_delta: float = 1.0):
    total = mx.array(0.0)
    metrics = {}
    for level, ((pred, target, weight), lw) in enumerate(zip(levels, hierarchy_weights)):
        per_cell = elementwise(kind, pred, mx.stop_gradient(target), huber_delta).mean(axis=-1)
        per_block = (per_cell * weight).sum(axis=-1) / mx.maximum(weight.sum(axis=-1), 1.0)
        loss = per_block.mean()
        metrics[f"loss_level{level}"] = loss
        total = total + lw * loss
    return total, metrics
