"""Precision policy in one place: fp32 master weights, optimizer state and EMA; bf16 compute only where fast.

The model casts parameters and images to the compute dtype inside the loss function; losses and
reductions run in fp32. On the MLX CPU backend bf16 compute is ~10x slower than fp32, so `use_amp`
falls back to fp32 there, and says so.
"""

from __future__ import annotations

import mlx.core as mx


def compute_dtype(use_amp: bool, device) -> tuple[mx.Dtype, str | None]:
    if not use_amp:
        return mx.float32, None
    if device.type == mx.gpu:
        return mx.bfloat16, "precision: training.use_amp -> bf16 compute, fp32 master weights"
    return mx.float32, ("precision: training.use_amp asks for bf16, but bf16 compute is ~10x slower than fp32 "
                        "on the MLX CPU backend; computing in fp32")
