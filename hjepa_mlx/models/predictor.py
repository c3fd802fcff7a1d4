"""I-JEPA predictor: each target block is predicted in its own sequence [context ; mask tokens of the block].

Linear D->P, sin-cos position at the context positions; one shared learned mask token plus the sin-cos
position at each target position; blocks, LayerNorm, the mask-token outputs, Linear P->D. All M blocks
of all B images run as one batch of B*M sequences, so blocks never see each other.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from hjepa_mlx.models.posemb import sincos_2d
from hjepa_mlx.models.vit import LN_EPS, Block, gather_tokens, grid_rope, run_blocks


class Predictor(nn.Module):
    def __init__(self, *, grid: tuple[int, int], encoder_dim: int, predictor_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, dropout: float = 0.0,
                 use_fused_attention: bool = True, use_layerscale: bool = False, layerscale_init: float = 1e-5,
                 use_rope: bool = False, rope_theta: float = 10000.0, use_checkpoint: bool = False,
                 activation: str = "gelu"):
        super().__init__()
        if dropout > 0:
            # Refused by the config rules too; kept here so the module never silently ignores it.
            raise ValueError("predictor dropout > 0 is not implemented")
        self.grid = grid
        self.embed = nn.Linear(encoder_dim, predictor_dim)
        self._pos = sincos_2d(predictor_dim, *grid)
        self.blocks = [Block(predictor_dim, num_heads, mlp_ratio, qkv_bias, use_fused_attention,
                             use_layerscale, layerscale_init, activation) for _ in range(depth)]
        self.norm = nn.LayerNorm(predictor_dim, eps=LN_EPS)
        self.proj = nn.Linear(predictor_dim, encoder_dim)
        self._rope = (predictor_dim // num_heads, rope_theta) if use_rope else None
        self._checkpoint = use_checkpoint
        # I-JEPA initialises the mask token with a truncated normal of std 0.02.
        self.mask_token = 0.02 * mx.clip(mx.random.normal((predictor_dim,)), -2, 2)

    def __call__(self, context: mx.array, context_idx: mx.array, target_idx: mx.array) -> mx.array:
        """context (B, Nc, D), context_idx (B, Nc), target_idx (B, M, K) -> predictions (B, M, K, D)."""
        b, nc, _ = context.shape
        _, m, k = target_idx.shape
        pos = mx.broadcast_to(self._pos.astype(context.dtype)[None], (b, *self._pos.shape))
        ctx = self.embed(context) + gather_tokens(pos, context_idx)                       # (B, Nc, P)
        flat_targets = target_idx.reshape(b, m * k)
        queries = self.mask_token.astype(context.dtype) + gather_tokens(pos, flat_targets)  # (B, M*K, P)
        p = ctx.shape[-1]
        ctx = mx.broadcast_to(ctx[:, None], (b, m, nc, p)).reshape(b * m, nc, p)
        queries = queries.reshape(b * m, k, p)
        x = mx.concatenate([ctx, queries], axis=1)
        rope = None
        if self._rope:
            idx = mx.concatenate([mx.broadcast_to(context_idx[:, None], (b, m, nc)), target_idx], axis=2)
            rope = grid_rope(idx.reshape(b * m, nc + k), self.grid[1], *self._rope)
        x = self.norm(run_blocks(self.blocks, x, rope, self._checkpoint))
        return self.proj(x[:, nc:]).reshape(b, m, k, -1)
