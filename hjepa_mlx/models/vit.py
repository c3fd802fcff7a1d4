"""Vision Transformer pieces: patch embedding, MLP, pre-norm block with LayerScale, encoder on index sets.

The encoder runs on *gathered* token index sets: masked tokens are dropped, never zeroed, so attention
only ever sees real tokens. No class token; the 2-D sin-cos position table is fixed (not a parameter)
and added before gathering. With RoPE on, q and k are rotated at the gathered tokens' grid positions.

Parameters are fp32 (master weights); for bf16 compute the caller casts the parameter tree and the
images (see `hjepa_mlx.models.precision`) - the modules follow the dtype of what they are given.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.utils import checkpoint

from hjepa_mlx import kernels
from hjepa_mlx.errors import UserError
from hjepa_mlx.models.attention import Attention
from hjepa_mlx.models.init import ijepa_init
from hjepa_mlx.models.posemb import grid_positions, sincos_2d, sincos_2d_resampled

LN_EPS = 1e-6   # timm / I-JEPA ViT LayerNorm epsilon

# "gelu" is the exact (erf) GELU of timm's ViT (on the CPU the C++ kernel of `hjepa_mlx.kernels`, same
# math as nn.gelu); the others are cheaper stand-ins for slow CPUs.
ACTIVATIONS = {"gelu": kernels.gelu, "gelu_fast": nn.gelu_fast_approx, "relu": nn.relu}


def check_widths(what: str, dim: int, num_heads: int, use_rope: bool) -> None:
    """UserError unless dim suits a sin-cos table (dim % 4 == 0), the heads, and 2-D RoPE (head dim % 4)."""
    if dim % 4:
        raise UserError(f"{what} width {dim} is not divisible by 4, which the 2-D sin-cos position table needs")
    if dim % num_heads:
        raise UserError(f"{what} width {dim} is not divisible by its {num_heads} heads")
    if use_rope and (dim // num_heads) % 4:
        raise UserError(f"{what} head width {dim // num_heads} is not divisible by 4, which 2-D RoPE needs "
                        f"(half the channels per axis, in pairs); change the width or heads, or turn RoPE off")


class PatchEmbed(nn.Module):
    """Conv patch embedding: images (B, H, W, C) NHWC -> tokens (B, (H/p)*(W/p), D) in raster order."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def __call__(self, images: mx.array) -> mx.array:
        conv = self.proj
        x = kernels.add_bias(mx.conv2d(images, conv.weight, stride=conv.stride), conv.bias)   # (B, H/p, W/p, D)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class MLP(nn.Module):
    """Linear dim->hidden, activation, Linear hidden->dim."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown MLP activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.fc1 = kernels.Linear(dim, hidden)
        self.fc2 = kernels.Linear(hidden, dim)
        self._act = ACTIVATIONS[activation]
        self._activation = activation

    def __call__(self, x):
        fc1 = self.fc1
        if "bias" in fc1:       # the bias and the activation in one pass after the matmul
            return self.fc2(kernels.bias_activation(x @ fc1.weight.T, fc1.bias, self._activation))
        return self.fc2(self._act(fc1(x)))


class LayerScale(nn.Module):
    """diag(gamma) . x with one learned gamma per channel, initialised to `init` (CaiT)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = mx.full((dim,), init, dtype=mx.float32)

    def __call__(self, x):
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))); x + ls2(mlp(norm2(x))).

    dim, num_heads, mlp_ratio (hidden = int(dim * mlp_ratio)), qkv_bias, fused (fast kernels or the
    reference formulas), use_layerscale / layerscale_init (CaiT LayerScale on both residual branches),
    activation (key of ACTIVATIONS), rope_theta (RoPE base, used when positions are given).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 fused: bool = True, use_layerscale: bool = False, layerscale_init: float = 1e-5,
                 activation: str = "gelu", rope_theta: float = 10000.0):
        super().__init__()
        self.norm1 = kernels.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, fused=fused, rope_theta=rope_theta)
        self.norm2 = kernels.LayerNorm(dim, eps=LN_EPS)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation)
        self.use_layerscale = use_layerscale
        if use_layerscale:
            self.ls1 = LayerScale(dim, layerscale_init)
            self.ls2 = LayerScale(dim, layerscale_init)

    def __call__(self, x: mx.array, positions: tuple[mx.array, mx.array] | None = None,
                 mask: mx.array | None = None) -> mx.array:
        """x (B, N, D); positions None or (rows, cols) (B, N) for RoPE; mask None or an additive (N, N)
        attention bias. Returns (B, N, D)."""
        a = self.attn(self.norm1(x), positions, mask)
        x = x + (self.ls1(a) if self.use_layerscale else a)
        m = self.mlp(self.norm2(x))
        return x + (self.ls2(m) if self.use_layerscale else m)


def run_blocks(blocks, x: mx.array, positions, use_checkpoint: bool | int, mask: mx.array | None = None) -> mx.array:
    """Apply blocks in order. use_checkpoint: True (every block), False (none) or the number of leading
    blocks to wrap in `mx.checkpoint` (via `mlx.nn.utils.checkpoint`), whose activations are recomputed in
    the backward pass instead of stored (hjepa_mlx/recompute.py chooses the number).
    mask: None or an additive attention bias for every block."""
    recomputed = len(blocks) if use_checkpoint is True else int(use_checkpoint)
    for i, block in enumerate(blocks):
        x = checkpoint(block)(x, positions, mask) if i < recomputed else block(x, positions, mask)
    return x


def gather_tokens(x: mx.array, indices: mx.array) -> mx.array:
    """x (B, N, D), indices (B, n) int -> (B, n, D): the rows of x at the indices (others dropped)."""
    return mx.take_along_axis(x, indices[..., None].astype(mx.int32), axis=1)


class ViTEncoder(nn.Module):
    """ViT encoder without class token, on gathered index sets.

    patch_size, image_size (square images, divisible by patch_size), embed_dim, depth, num_heads,
    mlp_ratio, qkv_bias, use_fused_attention (fast kernels for attention and RoPE, else the reference
    formulas), use_layerscale, layerscale_init, use_rope (2-D RoPE on q, k), rope_theta,
    absolute_positions (add the sin-cos table; False: positions only through RoPE, which must be on),
    use_checkpoint (recompute block activations in backward: True all, False none, an int the leading n
    blocks), activation (MLP activation key).
    Weights start as I-JEPA's (`hjepa_mlx.models.init`), drawn from the global MLX RNG.
    """

    def __init__(self, *, patch_size: int, image_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, use_fused_attention: bool = True,
                 use_layerscale: bool = False, layerscale_init: float = 1e-5, use_rope: bool = False,
                 rope_theta: float = 10000.0, use_checkpoint: bool | int = False, activation: str = "gelu",
                 absolute_positions: bool = True):
        super().__init__()
        if not (absolute_positions or use_rope):
            raise ValueError("an encoder without the absolute table needs RoPE for any position information")
        if image_size % patch_size:
            raise UserError(f"image size {image_size} is not divisible by the patch size {patch_size}; "
                            f"pick an image size that is a multiple of {patch_size}")
        check_widths("encoder", embed_dim, num_heads, use_rope)
        self._grid = (image_size // patch_size, image_size // patch_size)
        self._patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self._pos = sincos_2d(embed_dim, *self._grid)      # leading underscore: a constant, not a parameter
        self._resampled = {}                               # grid -> table for smaller (local-crop) images
        self.blocks = [Block(embed_dim, num_heads, mlp_ratio, qkv_bias, use_fused_attention,
                             use_layerscale, layerscale_init, activation, rope_theta) for _ in range(depth)]
        self.norm = kernels.LayerNorm(embed_dim, eps=LN_EPS)
        self._use_rope = use_rope
        self._absolute = absolute_positions
        self._checkpoint = use_checkpoint
        ijepa_init(self)

    @property
    def grid(self) -> tuple[int, int]:
        """(grid_h, grid_w) patches."""
        return self._grid

    def __call__(self, images: mx.array, indices: mx.array | None = None) -> mx.array:
        """images (B, H, W, 3); indices (B, n) int32 raster patch indices, or None for all patches.

        Returns (B, n, D) final-LayerNormed tokens at `indices` (in their order), or (B, N, D) for all.
        """
        x, positions = self._tokens(images, indices)
        return self.norm(run_blocks(self.blocks, x, positions, self._checkpoint))

    def _tokens(self, images: mx.array, indices: mx.array | None):
        """Embedded (and gathered) tokens plus their RoPE grid positions (None without RoPE).

        Images smaller than image_size (multi-crop's local crops) take the sin-cos table resampled over the
        full grid's range (`sincos_2d_resampled`); RoPE uses their own grid cells (it sees relative offsets,
        as for any resized crop)."""
        p = self._patch_size
        grid = (images.shape[1] // p, images.shape[2] // p)
        x = self.patch_embed(images)
        if self._absolute:
            x = x + self._pos_table(grid).astype(images.dtype)
        if indices is not None:
            x = gather_tokens(x, indices)
        positions = None
        if self._use_rope:
            if indices is None:
                indices = mx.broadcast_to(mx.arange(x.shape[1], dtype=mx.int32)[None], x.shape[:2])
            positions = grid_positions(indices, grid[1])
        return x, positions

    def _pos_table(self, grid: tuple[int, int]) -> mx.array:
        if grid == self._grid:
            return self._pos
        if grid not in self._resampled:
            self._resampled[grid] = sincos_2d_resampled(self._pos.shape[1], grid, self._grid)
        return self._resampled[grid]

    def last_attention(self, images: mx.array) -> mx.array:
        """Softmax weights (B, H, N, N) of the last block over all patches (for log_attention)."""
        x, positions = self._tokens(images, None)
        x = run_blocks(self.blocks[:-1], x, positions, False)
        last = self.blocks[-1]
        return last.attn.weights(last.norm1(x), positions)
