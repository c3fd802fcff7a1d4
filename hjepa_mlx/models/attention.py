"""Multi-head self-attention with two interchangeable kernels and optional 2-D RoPE.

`fused=True` uses `mx.fast.scaled_dot_product_attention` (fused on Apple GPUs; on the MLX CPU backend
it is not fused and runs at the speed of the reference); `fused=False` is the plain formula. A test
holds them together.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from hjepa_mlx.models.posemb import apply_rope


def reference_attention(q: mx.array, k: mx.array, v: mx.array, scale: float) -> mx.array:
    """softmax(q k^T * scale) v over (B, H, N, hd) arrays, softmax in fp32."""
    scores = (q * scale) @ k.swapaxes(-1, -2)
    weights = mx.softmax(scores.astype(mx.float32), axis=-1).astype(v.dtype)
    return weights @ v


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, fused: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array, rope_angles: mx.array | None = None) -> mx.array:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if rope_angles is not None:
            q, k = apply_rope(q, rope_angles), apply_rope(k, rope_angles)
        if self.fused:
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            out = reference_attention(q, k, v, self.scale)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(b, n, d))
