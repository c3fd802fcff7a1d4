"""Vision Transformer pieces: patch embedding, MLP, pre-norm block with LayerScale, encoder on index sets.

The encoder runs on *gathered* token index sets: masked tokens are dropped, never zeroed, so attention
only ever sees real tokens. No class token; the 2-D sin-cos position table is fixed (not a parameter)
and added before gathering.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.utils import checkpoint

from hjepa_mlx.models.attention import Attention
from hjepa_mlx.models.posemb import rope_angles, sincos_2d

LN_EPS = 1e-6


class PatchEmbed(nn.Module):
    """Conv patch embedding on NHWC images -> (B, grid_h*grid_w, D) in raster order."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def __call__(self, images: mx.array) -> mx.array:
        x = self.proj(images)
        return x.reshape(x.shape[0], -1, x.shape[-1])


ACTIVATIONS = {"gelu": nn.gelu, "gelu_fast": nn.gelu_fast_approx, "relu": nn.relu}


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self._act = ACTIVATIONS[activation]

    def __call__(self, x):
        return self.fc2(self._act(self.fc1(x)))


class LayerScale(nn.Module):
    """diag(lambda) . x with one lambda per channel (CaiT)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = mx.full((dim,), init)

    def __call__(self, x):
        return x * self.gamma


class Block(nn.Module):
    """x + ls1(attn(norm1(x))); x + ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 fused: bool = True, use_layerscale: bool = False, layerscale_init: float = 1e-5,
                 activation: str = "gelu"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, fused=fused)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation)
        if use_layerscale:
            self.ls1 = LayerScale(dim, layerscale_init)
            self.ls2 = LayerScale(dim, layerscale_init)
        self.use_layerscale = use_layerscale

    def __call__(self, x, rope=None):
        a = self.attn(self.norm1(x), rope)
        x = x + (self.ls1(a) if self.use_layerscale else a)
        m = self.mlp(self.norm2(x))
        return x + (self.ls2(m) if self.use_layerscale else m)


def run_blocks(blocks, x, rope, use_checkpoint: bool):
    """Apply blocks in order; with use_checkpoint each block's activations are recomputed in backward."""
    for block in blocks:
        x = checkpoint(block)(x, rope) if use_checkpoint else block(x, rope)
    return x


def gather_tokens(x: mx.array, indices: mx.array) -> mx.array:
    """x (B, N, D), indices (B, n) -> (B, n, D)."""
    return mx.take_along_axis(x, indices[..., None], axis=1)


def grid_rope(indices: mx.array, grid_w: int, head_dim: int, theta: float) -> mx.array:
    """RoPE angles (B, 1, n, head_dim/2) at the (row, col) grid positions of raster indices (B, n)."""
    rows, cols = indices // grid_w, indices % grid_w
    return rope_angles(head_dim, rows, cols, theta)[:, None]


class ViTEncoder(nn.Module):
    def __init__(self, *, patch_size: int, image_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, use_fused_attention: bool = True,
                 use_layerscale: bool = False, layerscale_init: float = 1e-5, use_rope: bool = False,
                 rope_theta: float = 10000.0, use_checkpoint: bool = False, activation: str = "gelu"):
        super().__init__()
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self._pos = sincos_2d(embed_dim, *self.grid)        # fixed: underscore keeps it out of parameters
        self.blocks = [Block(embed_dim, num_heads, mlp_ratio, qkv_bias, use_fused_attention,
                             use_layerscale, layerscale_init, activation) for _ in range(depth)]
        self.norm = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self._rope = (embed_dim // num_heads, rope_theta) if use_rope else None
        self._checkpoint = use_checkpoint

    def __call__(self, images: mx.array, indices: mx.array | None = None) -> mx.array:
        """images (B, H, W, 3) -> tokens (B, N, D) of all patches, or (B, n, D) at `indices` (B, n)."""
        x = self.patch_embed(images) + self._pos.astype(images.dtype)
        if indices is None:
            indices = mx.broadcast_to(mx.arange(x.shape[1], dtype=mx.int32)[None], x.shape[:2])
        else:
            x = gather_tokens(x, indices)
        rope = grid_rope(indices, self.grid[1], *self._rope) if self._rope else None
        return self.norm(run_blocks(self.blocks, x, rope, self._checkpoint))
