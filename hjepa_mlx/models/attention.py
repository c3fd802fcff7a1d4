"""Multi-head self-attention with two interchangeable kernels and optional axial 2-D RoPE.

`fused=True` uses the fast kernels: `mx.fast.scaled_dot_product_attention` and `mx.fast.rope` (fused on
Apple GPUs and CUDA). `fused=False` uses the plain formulas (`reference_attention`, `rope_reference`).
The MLX CPU backend fuses neither path (it runs the reference's ops), so on the CPU, when the C++ kernels
of `hjepa_mlx.kernels` are available, `Attention` calls their attention kernel for both (the reference
formula per (image, head), forward and backward, straight from the qkv projection), and the two functions
below take their softmax: `use_flash_attention: false` chooses the formula, not a slow path. Tests hold
the paths together (<= 1e-5) and all against float64 NumPy, with and without the kernels.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from hjepa_mlx import kernels
from hjepa_mlx.models.posemb import rope_fused, rope_reference


def reference_attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None = None) -> mx.array:
    """softmax(q k^T * scale + mask) v.

    q: (B, H, Nq, hd), k and v: (B, H, Nk, hd), scale: usually hd ** -0.5; mask: None or an additive
    float bias broadcastable to (B, H, Nq, Nk) (a large negative number where a query may not look).
    Returns (B, H, Nq, hd). The softmax runs in fp32 whatever the input dtype (as the fused kernel does).
    """
    scores = (q * scale) @ k.swapaxes(-1, -2)
    if mask is not None:
        scores = scores + mask
    weights = kernels.softmax(scores.astype(mx.float32)).astype(v.dtype)
    return weights @ v


def fused_attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None = None) -> mx.array:
    """`mx.fast.scaled_dot_product_attention` with the same arguments and result as `reference_attention`;
    on the CPU with the C++ kernels, the reference formula with their softmax."""
    if kernels.use_kernels_for(q):
        scores = (q * scale) @ k.swapaxes(-1, -2)
        return kernels.softmax(scores if mask is None else scores + mask) @ v
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


class Attention(nn.Module):
    """qkv Linear -> (RoPE on q, k) -> attention per head -> output Linear.

    dim: token width D (divisible by num_heads). num_heads: heads H. qkv_bias: bias on the qkv Linear.
    fused: the fast kernels (True) or the reference formulas (False), for attention and RoPE alike.
    rope_theta: RoPE base, used only when positions are passed to __call__.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, fused: bool = True,
                 rope_theta: float = 10000.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused = fused
        self.rope_theta = rope_theta
        self.qkv = kernels.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = kernels.Linear(dim, dim)

    def _split(self, qkv: mx.array, positions) -> tuple[mx.array, mx.array, mx.array]:
        """q, k, v as (B, N, H, hd) from the qkv projection, RoPE applied to q and k when positions are given."""
        b, n, _ = qkv.shape
        qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if positions is not None:
            # RoPE before the head transpose: (B, N, H, hd) is the layout mx.fast.rope needs (see posemb).
            rope = rope_fused if self.fused else rope_reference
            q, k = rope(q, *positions, self.rope_theta), rope(k, *positions, self.rope_theta)
        return q, k, v

    def _heads(self, x: mx.array, positions) -> tuple[mx.array, mx.array, mx.array]:
        """q, k, v as (B, H, N, hd), RoPE applied to q and k when positions are given."""
        return tuple(t.transpose(0, 2, 1, 3) for t in self._split(self.qkv(x), positions))

    def weights(self, x: mx.array, positions=None) -> mx.array:
        """The softmax attention weights (B, H, N, N), for diagnostics (log_attention)."""
        q, k, _ = self._heads(x, positions)
        return mx.softmax((q * self.scale) @ k.swapaxes(-1, -2), axis=-1)

    def __call__(self, x: mx.array, positions: tuple[mx.array, mx.array] | None = None,
                 mask: mx.array | None = None) -> mx.array:
        """x (B, N, D); positions: None (no RoPE) or (rows, cols), each (B, N) int32; mask: None or an
        additive (N, N) attention bias. Returns (B, N, D)."""
        b, n, d = x.shape
        qkv = self.qkv(x)
        if kernels.attention_applies(qkv, mask):   # the C++ kernel: q, k, v packed as the projection makes them
            if positions is not None:
                qkv = mx.stack(self._split(qkv, positions), axis=2).reshape(b, n, 3 * d)
            return self.proj(kernels.attention(qkv, self.num_heads, self.scale, mask))
        q, k, v = (t.transpose(0, 2, 1, 3) for t in self._split(qkv, positions))
        attend = fused_attention if self.fused else reference_attention
        return self.proj(attend(q, k, v, self.scale, mask).transpose(0, 2, 1, 3).reshape(b, n, d))
