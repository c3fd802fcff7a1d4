"""AdamW as pure functions on parameter trees, with a weight-decay mask, global-norm clipping and the
finite check the train step uses to skip a bad update without retracing.

Decay mask: no decay for biases, norm weights, LayerScale gammas, the predictor's mask token, and any
parameter with ndim <= 1 (I-JEPA's rule); weight matrices and conv kernels decay.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map, tree_map_with_path, tree_unflatten

EPS = 1e-8


def adamw_init(params) -> dict:
    return {"m": tree_map(mx.zeros_like, params), "v": tree_map(mx.zeros_like, params),
            "count": mx.array(0, dtype=mx.int32)}


def decay_mask(params):
    def rule(path, p):
        name = path.rsplit(".", 1)[-1]
        return p.ndim > 1 and name not in ("bias", "gamma", "mask_token") and "norm" not in path
    return tree_map_with_path(rule, params)


def adamw_update(params, grads, opt, *, lr, weight_decay, betas, decay_mask, eps: float = EPS):
    b1, b2 = betas
    count = opt["count"] + 1
    t = count.astype(mx.float32)
    c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    m = tree_map(lambda m_, g: b1 * m_ + (1.0 - b1) * g, opt["m"], grads)
    v = tree_map(lambda v_, g: b2 * v_ + (1.0 - b2) * g * g, opt["v"], grads)

    def step(p, m_, v_, decays):
        update = (m_ / c1) / (mx.sqrt(v_ / c2) + eps)
        if decays:
            update = update + weight_decay * p
        return (p - lr * update).astype(p.dtype)

    new = tree_map(step, params, m, v, decay_mask)
    return new, {"m": m, "v": v, "count": count}


def global_norm(tree) -> mx.array:
    return mx.sqrt(sum((g.astype(mx.float32) ** 2).sum() for _, g in tree_flatten(tree)))


def clip_by_global_norm(grads, max_norm):
    norm = global_norm(grads)
    if not max_norm:
        return grads, norm
    scale = mx.minimum(1.0, max_norm / (norm + 1e-6))
    return tree_map(lambda g: g * scale, grads), norm


def all_finite(tree) -> mx.array:
    flags = [mx.all(mx.isfinite(x)) for _, x in tree_flatten(tree)]
    out = flags[0]
    for f in flags[1:]:
        out = mx.logical_and(out, f)
    return out


def select_tree(pred, a, b):
    return tree_map(lambda x, y: mx.where(pred, x, y), a, b)


__all__ = ["adamw_init", "adamw_update", "decay_mask", "global_norm", "clip_by_global_norm", "all_finite",
           "select_tree", "tree_unflatten"]
