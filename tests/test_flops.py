"""The analytic FLOP count against a hand count of every matmul of a tiny ViT."""

from hjepa_mlx.flops import train_flops_per_image, vit_forward_flops


def hand_count(n, d, depth, hidden):
    qkv = 2 * n * d * (3 * d)
    scores = 2 * n * d * n          # q k^T
    mix = 2 * n * n * d             # attn v
    proj = 2 * n * d * d
    mlp = 2 * n * d * hidden + 2 * n * hidden * d
    return depth * (qkv + scores + mix + proj + mlp)


def test_vit_forward_flops_matches_hand_count():
    assert vit_forward_flops(2, 4, 1) == 832 == hand_count(2, 4, 1, 16)
    assert vit_forward_flops(196, 384, 12) == hand_count(196, 384, 12, 1536)


def test_train_flops_compose_forward_and_backward():
    kw = dict(grid_tokens=4, patch_size=2, encoder_width=4, encoder_depth=1, predictor_width=4,
              predictor_depth=1, context_tokens=2, num_blocks=1, block_tokens=1)
    embed = 2 * 4 * (2 * 2 * 3) * 4
    target = embed + hand_count(4, 4, 1, 16)
    context = 3 * (embed + hand_count(2, 4, 1, 16))
    predictor = 3 * (hand_count(3, 4, 1, 16) + 2 * 3 * 4 * 4 * 2)
    assert train_flops_per_image(**kw, views=1) == target + context + predictor
    assert train_flops_per_image(**kw, views=2) == target + 2 * context + predictor
    assert train_flops_per_image(**kw, views=2, target_views=2) == 2 * (target + context) + predictor


def test_shared_context_predictor_and_local_crops_are_counted():
    kw = dict(grid_tokens=4, patch_size=2, encoder_width=4, encoder_depth=1, predictor_width=4,
              predictor_depth=1, context_tokens=2, num_blocks=3, block_tokens=1, views=1)
    embed = 2 * 4 * (2 * 2 * 3) * 4
    target = embed + hand_count(4, 4, 1, 16)
    context = 3 * (embed + hand_count(2, 4, 1, 16))
    per_block = 3 * 3 * (hand_count(3, 4, 1, 16) + 2 * 3 * 4 * 4 * 2)           # 3 sequences of 2 + 1 tokens
    shared = 3 * (hand_count(5, 4, 1, 16) + 2 * 5 * 4 * 4 * 2)                  # one sequence of 2 + 3 tokens
    assert train_flops_per_image(**kw) == target + context + per_block
    assert train_flops_per_image(**kw, shared_context=True) == target + context + shared
    local = 3 * 2 * (2 * 1 * (2 * 2 * 3) * 4 + hand_count(1, 4, 1, 16))       # two 1-patch crops, fwd + bwd
    assert train_flops_per_image(**kw, local_crops=2, local_tokens=1) == target + context + per_block + local
