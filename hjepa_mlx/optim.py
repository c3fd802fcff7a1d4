"""AdamW as pure functions on parameter trees, with a weight-decay mask, global-norm clipping, and the
finite check + tree select the train step uses to skip a bad update inside the graph (no retrace).

Trees are nested dicts / lists of mx arrays (what `nn.Module.trainable_parameters()` returns). The
optimizer state is itself a tree, `{"m": tree, "v": tree, "count": int32 scalar}`, so it is saved in
checkpoints and selected with `select_tree` like everything else in the train state.

Decay mask (what gets weight decay): weight matrices and conv kernels. No decay for biases, any
parameter with ndim <= 1 (norm weights, LayerScale gammas: I-JEPA's rule), anything under a norm
layer, and, whatever their shape, the predictor's mask token, LayerScale `gamma`s and learned
position embeddings / class tokens: pulling a token or a per-channel scale towards zero is not
regularisation, it changes what the model computes.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

from hjepa_mlx import kernels

EPS = 1e-8
NO_DECAY_NAMES = ("bias", "gamma", "mask_token", "pos_embed", "cls_token")


def adamw_init(params) -> dict:
    """Zero first and second moments shaped like `params` (same dtypes) and a step count of 0."""
    return {"m": tree_map(mx.zeros_like, params), "v": tree_map(mx.zeros_like, params),
            "count": mx.array(0, dtype=mx.int32)}


def decays(path: str, param: mx.array) -> bool:
    """Whether the parameter at `path` (dotted, as `tree_flatten` names it) gets weight decay."""
    parts = path.split(".")
    return (param.ndim > 1 and parts[-1] not in NO_DECAY_NAMES
            and not any("norm" in part for part in parts[:-1]))


def decay_mask(params):
    """A tree of Python bools shaped like `params` (static, so it costs nothing in the compiled step)."""
    return tree_map_with_path(decays, params)


def adamw_update(params, grads, opt_state, *, lr, weight_decay, betas, decay_mask, eps: float = EPS,
                 grad_scale=None, apply=None):
    """One AdamW step (Loshchilov & Hutter; decoupled weight decay, bias-corrected moments), as
    PyTorch's `torch.optim.AdamW` and `mlx.optimizers.AdamW(bias_correction=True)` compute it:

        g = grad * grad_scale
        m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  t = count + 1
        p = p - lr * ( (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) + wd*p*[decays] )

    params, grads: trees of the same structure. opt_state: from `adamw_init` (or a previous update).
    lr, weight_decay: float32 scalar arrays (from `schedules`; Python floats work but retrace a compiled
    caller on every new value). betas: (b1, b2) Python floats. decay_mask: tree of bools from
    `decay_mask(params)`. eps: added to the bias-corrected RMS. grad_scale: None or a float32 scalar the
    gradients are multiplied by first (global-norm clipping, `clip_scale`). apply: None, or a bool scalar
    array: False returns params and state unchanged (a skipped step; the count does not advance).
    Returns (new_params, new_opt_state); new params keep each parameter's dtype.

    On the CPU with the C++ kernels and float32 trees, each parameter's update is one threaded pass
    (`kernels.adamw`, the same float32 operations in the same order) instead of MLX's one-thread ops.
    """
    b1, b2 = betas
    count = opt_state["count"] + 1
    t = count.astype(mx.float32)
    c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    if apply is not None:
        count = mx.where(apply, count, opt_state["count"])
    if kernels.adamw_applies(params, grads):
        keep = mx.array(1.0) if apply is None else apply.astype(mx.float32)
        scale = mx.array(1.0) if grad_scale is None else grad_scale
        scalars = {decay: mx.stack([_f32(lr), _f32(weight_decay if decay else 0.0), c1, c2, _f32(scale), keep])
                   for decay in (False, True)}
        out = tree_map(lambda p, g, m_, v_, decay: _Updated(*kernels.adamw(p, g, m_, v_, scalars[decay], b1, b2, eps)),
                       params, grads, opt_state["m"], opt_state["v"], decay_mask)
        new_params, m, v = (tree_map(lambda u, i=i: u[i], out, is_leaf=lambda x: isinstance(x, _Updated))
                            for i in range(3))
        return new_params, {"m": m, "v": v, "count": count}
    if grad_scale is not None:
        grads = tree_map(lambda g: (g * grad_scale).astype(g.dtype), grads)
    m = tree_map(lambda m_, g: b1 * m_ + (1.0 - b1) * g, opt_state["m"], grads)
    v = tree_map(lambda v_, g: b2 * v_ + (1.0 - b2) * mx.square(g), opt_state["v"], grads)

    def step(p, m_, v_, decay):
        update = (m_ / c1) / (mx.sqrt(v_ / c2) + eps)
        if decay:
            update = update + weight_decay * p
        return (p - lr * update).astype(p.dtype)

    new_params = tree_map(step, params, m, v, decay_mask)
    if apply is not None:
        new_params, m, v = (select_tree(apply, new, old) for new, old in
                            ((new_params, params), (m, opt_state["m"]), (v, opt_state["v"])))
    return new_params, {"m": m, "v": v, "count": count}


class _Updated(tuple):
    """(p, m, v) of one parameter: a leaf of the kernel path's result tree, not a container to descend into."""

    def __new__(cls, p, m, v):
        return super().__new__(cls, (p, m, v))


def _f32(x) -> mx.array:
    return x.astype(mx.float32) if isinstance(x, mx.array) else mx.array(x, dtype=mx.float32)


def global_norm(tree) -> mx.array:
    """sqrt of the sum of squares of every element of every array in `tree`, accumulated in float32."""
    total = mx.array(0.0, dtype=mx.float32)
    for _, g in tree_flatten(tree):
        total = total + mx.sum(mx.square(g.astype(mx.float32)))
    return mx.sqrt(total)


def clip_scale(norm: mx.array, max_norm: float | None):
    """The factor gradients of global norm `norm` are multiplied by to clip them to `max_norm` (PyTorch's
    clip_grad_norm_ rule: min(1, max_norm / (norm + 1e-6))); None when max_norm is None or <= 0."""
    if max_norm is None or max_norm <= 0:
        return None
    return mx.minimum(1.0, max_norm / (norm + 1e-6))


def clip_by_global_norm(grads, max_norm: float | None):
    """Scale `grads` so their global norm is at most `max_norm` (PyTorch's clip_grad_norm_ rule:
    factor min(1, max_norm / (norm + 1e-6))). max_norm None or <= 0: no clipping.
    Returns (grads, norm before clipping). A non-finite norm makes the clipped grads non-finite too
    (inf * 0 = nan), so `all_finite` on the result still catches it."""
    norm = global_norm(grads)
    scale = clip_scale(norm, max_norm)
    if scale is None:
        return grads, norm
    return tree_map(lambda g: (g * scale).astype(g.dtype), grads), norm


def all_finite(tree) -> mx.array:
    """Scalar bool array: True when no array in `tree` holds a NaN or an infinity (True for an empty tree)."""
    ok = mx.array(True)
    for _, x in tree_flatten(tree):
        ok = mx.logical_and(ok, mx.all(mx.isfinite(x)))
    return ok


def select_tree(pred: mx.array, a, b):
    """Elementwise `pred ? a : b` over two trees of the same structure; `pred` a scalar bool array.
    How the compiled step keeps the old state when an update is non-finite, without a Python branch."""
    return tree_map(lambda x, y: mx.where(pred, x, y), a, b)


__all__ = ["EPS", "NO_DECAY_NAMES", "adamw_init", "adamw_update", "decays", "decay_mask", "global_norm",
           "clip_scale", "clip_by_global_norm", "all_finite", "select_tree"]


# The update rules `training.optimizer` names (the schema's Literal lists the same keys); step.py looks the
# configured one up here, so a new optimizer is one function plus one entry.
OPTIMIZERS = {"adamw": adamw_update}
