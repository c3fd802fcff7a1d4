"""I-JEPA's weight initialisation, applied to an encoder or predictor after construction.

MLX's layer defaults (uniform +-1/sqrt(fan_in), biases included) are not the method's. I-JEPA
(`vision_transformer.py`, `_init_weights` + `fix_init_weight`) initialises every Linear and Conv2d weight
from a normal with std 0.02 truncated at +-2 (absolute, so in practice untruncated), zeroes their biases,
sets LayerNorm to (1, 0), and then divides the residual-branch output projections of block l (1-based),
attn.proj and mlp.fc2, by sqrt(2 l), so each block starts by adding little to the residual stream.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

INIT_STD = 0.02     # I-JEPA's init_std
TRUNC_BOUND = 2.0   # absolute truncation bound of trunc_normal_(std=0.02, a=-2, b=2)


def trunc_normal(shape, std: float = INIT_STD) -> mx.array:
    """Normal(0, std) limited to [-TRUNC_BOUND, TRUNC_BOUND] (absolute bounds, as timm's trunc_normal_).

    At std 0.02 the bound is 100 std away, so clipping equals truncation in practice; it also avoids
    mx.random.truncated_normal's erfinv(+-1) = +-inf when its uniform draw lands on the edge."""
    return mx.clip(std * mx.random.normal(tuple(shape)), -TRUNC_BOUND, TRUNC_BOUND)


def ijepa_init(module: nn.Module, std: float = INIT_STD) -> nn.Module:
    """Re-initialise `module` in place the I-JEPA way (see the module docstring) and return it.

    Its transformer blocks are found as `module.blocks` (a list of `Block`); any other Linear, Conv2d and
    LayerNorm inside it is initialised too. Draws from the global MLX RNG, so it follows mx.random.seed.
    """
    for _, layer in module.named_modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            layer.weight = trunc_normal(layer.weight.shape, std)
            if "bias" in layer:
                layer.bias = mx.zeros_like(layer.bias)
        elif isinstance(layer, nn.LayerNorm) and "weight" in layer:
            layer.weight = mx.ones_like(layer.weight)
            layer.bias = mx.zeros_like(layer.bias)
    for depth, block in enumerate(getattr(module, "blocks", []), start=1):
        for out in (block.attn.proj, block.mlp.fc2):
            out.weight = out.weight / math.sqrt(2.0 * depth)
    return module
