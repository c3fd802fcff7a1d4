"""Precision policy in one place: fp32 master weights, optimizer state and EMA; bf16 compute only where fast.

How the caller casts (the modules themselves never cast their weights): inside the loss function,
`module.update(cast_floating(params, dtype))` and `images.astype(dtype)`; the modules then compute in
`dtype` (the sin-cos table follows the input dtype). Predictions and targets go back to fp32 before the
loss, and losses and reductions run in fp32. Gradients arrive in fp32 because the cast is part of the
differentiated function. On the MLX CPU backend bf16 compute is ~10x slower than fp32, so `use_amp`
falls back to fp32 there, and says so.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_map


def compute_dtype(use_amp: bool, device) -> tuple[mx.Dtype, str | None]:
    """The compute dtype and a one-line message to print (None when there is nothing to say).

    use_amp: the config's wish for mixed precision. device: an `mx.Device` (e.g. `mx.default_device()`).
    bf16 on a GPU; fp32 on the CPU (bf16 is ~10x slower there) with a message saying so.
    """
    if not use_amp:
        return mx.float32, None
    if device.type == mx.gpu:
        return mx.bfloat16, "precision: training.use_amp -> bf16 compute, fp32 master weights"
    return mx.float32, ("precision: training.use_amp asks for bf16, but bf16 compute is ~10x slower than fp32 "
                        "on the MLX CPU backend; computing in fp32")


def cast_floating(tree, dtype: mx.Dtype):
    """The pytree with every floating-point array cast to dtype (integer arrays untouched)."""
    if dtype == mx.float32:
        return tree
    return tree_map(lambda p: p.astype(dtype) if mx.issubdtype(p.dtype, mx.floating) else p, tree)
