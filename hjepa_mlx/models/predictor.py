"""I-JEPA predictor: each target block is predicted in its own sequence [context ; mask tokens of the block].

Linear D->P, sin-cos position at the context positions; one shared learned mask token plus the sin-cos
position at each target position; blocks, LayerNorm, the mask-token outputs, Linear P->D. All M blocks
of all B images run as one batch of B*M sequences (the context repeated per block), so blocks never see
each other - as I-JEPA, which repeats the context once per mask.

`shared_context=True` (a config choice, not I-JEPA's computation): one sequence per image,
[context ; mask tokens of all M blocks], with a block attention mask - context tokens attend to the
context only, block m's mask tokens to the context and to block m. Blocks still never see each other,
but the context is processed once instead of M times (Nc + M*K tokens instead of M*(Nc + K)), and its
tokens no longer attend to the mask tokens, which in I-JEPA they do.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from hjepa_mlx import kernels
from hjepa_mlx.errors import UserError
from hjepa_mlx.models.init import ijepa_init, trunc_normal
from hjepa_mlx.models.posemb import grid_positions, sincos_2d
from hjepa_mlx.models.vit import LN_EPS, Block, check_widths, run_blocks


class Predictor(nn.Module):
    """The I-JEPA predictor.

    grid: (grid_h, grid_w) patch grid. encoder_dim: D. predictor_dim: P (I-JEPA: 384). depth, num_heads,
    mlp_ratio, qkv_bias: of the predictor blocks. dropout: must be 0 - dropout inside the compiled step
    would need an explicit PRNG key per call, which is not implemented (raises UserError otherwise).
    use_fused_attention, use_layerscale, layerscale_init, use_rope, rope_theta, use_checkpoint,
    activation: as `ViTEncoder`. The mask token and weights (I-JEPA's init, `hjepa_mlx.models.init`) are
    drawn from the global MLX RNG at construction.
    """

    def __init__(self, *, grid: tuple[int, int], encoder_dim: int, predictor_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, dropout: float = 0.0,
                 use_fused_attention: bool = True, use_layerscale: bool = False, layerscale_init: float = 1e-5,
                 use_rope: bool = False, rope_theta: float = 10000.0, use_checkpoint: bool | int = False,
                 activation: str = "gelu", shared_context: bool = False):
        super().__init__()
        if dropout > 0:
            raise UserError(f"predictor dropout {dropout} is not supported: dropout inside the compiled train "
                            f"step needs an explicit random key per step, which this predictor does not take "
                            f"(I-JEPA trains with 0); set model.predictor.dropout to 0")
        check_widths("predictor", predictor_dim, num_heads, use_rope)
        self._grid = tuple(grid)
        self.embed = kernels.Linear(encoder_dim, predictor_dim)
        self._pos = sincos_2d(predictor_dim, *self._grid)   # constant, not a parameter
        self.mask_token = trunc_normal((predictor_dim,))            # I-JEPA: trunc_normal_(std=0.02)
        self.blocks = [Block(predictor_dim, num_heads, mlp_ratio, qkv_bias, use_fused_attention,
                             use_layerscale, layerscale_init, activation, rope_theta) for _ in range(depth)]
        self.norm = kernels.LayerNorm(predictor_dim, eps=LN_EPS)
        self.proj = kernels.Linear(predictor_dim, encoder_dim)
        self._use_rope = use_rope
        self._checkpoint = use_checkpoint
        self._shared = shared_context
        ijepa_init(self)

    @property
    def grid(self) -> tuple[int, int]:
        return self._grid

    def __call__(self, context: mx.array, context_idx: mx.array, target_idx: mx.array) -> mx.array:
        """context (B, Nc, D) encoder tokens at context_idx (B, Nc); target_idx (B, M, K) int32.

        Returns predictions (B, M, K, D) for the target patches, block by block.
        """
        b, nc, _ = context.shape
        _, m, k = target_idx.shape
        pos = self._pos.astype(context.dtype)                                   # (N, P)
        p = pos.shape[-1]
        ctx = self.embed(context) + pos[context_idx]                            # (B, Nc, P)
        queries = self.mask_token.astype(context.dtype) + pos[target_idx]       # (B, M, K, P)
        if self._shared:
            return self._shared_context(ctx, queries, context_idx, target_idx)
        ctx = mx.broadcast_to(ctx[:, None], (b, m, nc, p))                      # context repeated per block
        x = mx.concatenate([ctx, queries], axis=2).reshape(b * m, nc + k, p)
        positions = None
        if self._use_rope:
            idx = mx.concatenate([mx.broadcast_to(context_idx[:, None], (b, m, nc)), target_idx], axis=2)
            positions = grid_positions(idx.reshape(b * m, nc + k), self._grid[1])
        x = self.norm(run_blocks(self.blocks, x, positions, self._checkpoint))
        return self.proj(x[:, nc:]).reshape(b, m, k, -1)


    def _shared_context(self, ctx, queries, context_idx, target_idx):
        """One sequence [context ; all blocks' mask tokens] per image under `block_attention_bias`."""
        b, nc, p = ctx.shape
        _, m, k = target_idx.shape
        x = mx.concatenate([ctx, queries.reshape(b, m * k, p)], axis=1)          # (B, Nc + M*K, P)
        positions = None
        if self._use_rope:
            idx = mx.concatenate([context_idx, target_idx.reshape(b, m * k)], axis=1)
            positions = grid_positions(idx, self._grid[1])
        bias = block_attention_bias(nc, m, k).astype(ctx.dtype)
        x = self.norm(run_blocks(self.blocks, x, positions, self._checkpoint, bias))
        return self.proj(x[:, nc:]).reshape(b, m, k, -1)


BLOCKED = -1e9      # additive bias of a forbidden query-key pair: exp underflows to exactly 0, no -inf arithmetic


def block_attention_bias(nc: int, m: int, k: int) -> mx.array:
    """(Nc + M*K, Nc + M*K) additive attention bias of the shared-context predictor: 0 where a query may
    look, BLOCKED elsewhere. Context rows see the context; block i's rows see the context and block i."""
    group = np.concatenate([np.full(nc, -1), np.repeat(np.arange(m), k)])      # -1: context
    allowed = (group[None, :] == -1) | (group[:, None] == group[None, :])
    return mx.array(np.where(allowed, 0.0, BLOCKED).astype(np.float32))
