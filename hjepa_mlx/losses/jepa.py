"""Prediction loss per hierarchy level: smooth-L1 (beta 1), MSE or Huber, combined over levels.

Per level l, with pred and target (B, M, C, D) and cell weights w (B, M, C):
    e[b, m, c] = mean over D of the element-wise loss
    loss_l     = mean over (b, m) of  sum_c w * e / sum_c w
i.e. a weighted mean over the cells of each target block, then the plain mean over blocks and images.
Why per block rather than one sum_(b,m,c) w * e / sum w over the whole batch: at levels >= 1 a block
covers a varying number of pooled cells, and a batch-wide ratio would make the loss of k accumulation
micro-batches differ from the loss of the whole batch; per block, every block counts equally and the
mean over micro-batches is exact. At level 0 (all weights 1) both equal the I-JEPA mean over all
elements. Weight-0 cells never contribute; a block whose weights are all 0 contributes 0.

Total = sum_l hierarchy_weights[l] * loss_l, *not* normalised by the sum of the weights: the weights are
the per-level multipliers the config writes (weights (1, 1) double the loss of weights (1,)).
Targets are constants (`mx.stop_gradient`). Reductions in fp32.
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx

KINDS = ("smoothl1", "mse", "huber")


def smooth_l1(diff: mx.array, beta: float = 1.0) -> mx.array:
    """0.5 x^2 / beta where |x| < beta, else |x| - 0.5 beta (PyTorch's smooth_l1_loss, no reduction)."""
    a = mx.abs(diff)
    return mx.where(a < beta, 0.5 * diff * diff / beta, a - 0.5 * beta)


def elementwise(kind: str, pred: mx.array, target: mx.array, huber_delta: float = 1.0) -> mx.array:
    """The unreduced loss of `kind` ('smoothl1' | 'mse' | 'huber') in fp32; target is not differentiated."""
    diff = pred.astype(mx.float32) - mx.stop_gradient(target).astype(mx.float32)
    if kind == "smoothl1":
        return smooth_l1(diff, 1.0)
    if kind == "mse":
        return diff * diff
    if kind == "huber":  # PyTorch semantics: huber_delta(x) = delta * smooth_l1_{beta=delta}(x)
        return huber_delta * smooth_l1(diff, huber_delta)
    raise ValueError(f"unknown prediction loss {kind!r}; expected one of {KINDS}")


def level_loss(kind: str, pred: mx.array, target: mx.array, weight: mx.array, huber_delta: float = 1.0) -> mx.array:
    """One level: pred, target (B, M, C, D), weight (B, M, C) -> scalar (rule in the module docstring)."""
    per_cell = elementwise(kind, pred, target, huber_delta).mean(axis=-1)          # (B, M, C)
    weight = weight.astype(mx.float32)
    total_w = weight.sum(axis=-1)
    per_block = (per_cell * weight).sum(axis=-1) / mx.where(total_w > 0, total_w, 1.0)
    return per_block.mean()


def prediction_loss(levels: Sequence[tuple[mx.array, mx.array, mx.array]], kind: str,
                    hierarchy_weights: Sequence[float], huber_delta: float = 1.0):
    """levels: one (pred (B,M,C,D), target (B,M,C,D), weight (B,M,C)) per hierarchy level; kind:
    'smoothl1' | 'mse' | 'huber'; hierarchy_weights: one multiplier per level (not normalised);
    huber_delta: the Huber threshold. Returns (sum_l w_l * loss_l, {'loss_level{l}': loss_l})."""
    if len(levels) != len(hierarchy_weights):
        raise ValueError(f"prediction_loss: {len(levels)} levels but {len(hierarchy_weights)} hierarchy weights")
    total = mx.array(0.0, dtype=mx.float32)
    metrics = {}
    for level, ((pred, target, weight), level_weight) in enumerate(zip(levels, hierarchy_weights)):
        loss = level_loss(kind, pred, target, weight, huber_delta)
        metrics[f"loss_level{level}"] = loss
        total = total + level_weight * loss
    return total, metrics
