"""Analytic FLOP count of one H-JEPA training image (matmuls only, 2 FLOPs per multiply-add).

Forward + backward of a trained path counts 3x its forward; the target encoder runs forward only.
Element-wise ops, norms and softmax are left out (they are small next to the matmuls at ViT sizes).
"""

from __future__ import annotations


def vit_forward_flops(tokens: int, width: int, depth: int, mlp_ratio: float = 4.0) -> float:
    per_block = (2 * tokens * width * 3 * width          # qkv
                 + 2 * tokens * tokens * width * 2       # q k^T and attn v
                 + 2 * tokens * width * width            # output projection
                 + 2 * 2 * tokens * width * int(width * mlp_ratio))  # MLP
    return depth * per_block


def train_flops_per_image(*, grid_tokens: int, patch_size: int, encoder_width: int, encoder_depth: int,
                          predictor_width: int, predictor_depth: int, context_tokens: int, num_blocks: int,
                          block_tokens: int, views: int, target_views: int = 1, shared_context: bool = False,
                          local_crops: int = 0, local_tokens: int = 0) -> float:
    """`views`: images per sample through the context encoder; `target_views`: through the target encoder
    (2 only when NT-Xent compares against the other view's target features). `shared_context`: the
    predictor runs one sequence of context + all blocks' tokens (its attention still spans the whole
    sequence: the block mask saves no FLOPs). `local_crops` multi-crop crops of `local_tokens` patches
    each go through the context encoder, forward and backward."""
    patch_embed = 2 * grid_tokens * (patch_size * patch_size * 3) * encoder_width
    target = patch_embed + vit_forward_flops(grid_tokens, encoder_width, encoder_depth)
    context = 3 * (patch_embed + vit_forward_flops(context_tokens, encoder_width, encoder_depth))
    local_embed = 2 * local_tokens * (patch_size * patch_size * 3) * encoder_width
    local = 3 * local_crops * (local_embed + vit_forward_flops(local_tokens, encoder_width, encoder_depth))
    sequences, seq = (1, context_tokens + num_blocks * block_tokens) if shared_context else \
        (num_blocks, context_tokens + block_tokens)
    predictor = 3 * sequences * (vit_forward_flops(seq, predictor_width, predictor_depth)
                                 + 2 * seq * encoder_width * predictor_width * 2)
    return target * target_views + context * views + local + predictor
