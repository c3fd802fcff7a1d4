"""Encoder specs by timm name: vit_{tiny,small,base,large}_patch{4,8,14,16}_{image size}."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hjepa_mlx.errors import UserError

# width, depth, heads — as timm's ViT-T/S/B/L
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
PATCHES = (4, 8, 14, 16)
_NAME = re.compile(r"^vit_(tiny|small|base|large)_patch(\d+)_(\d+)$")


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    image_size: int


def parse_encoder_name(name: str) -> EncoderSpec:
    match = _NAME.match(name)
    if not match or int(match.group(2)) not in PATCHES:
        raise UserError(f"model.encoder_type '{name}' is not a known encoder; use "
                        f"vit_{{tiny,small,base,large}}_patch{{4,8,14,16}}_{{image size}}, e.g. vit_small_patch16_224")
    size, patch, image = match.group(1), int(match.group(2)), int(match.group(3))
    width, depth, heads = SIZES[size]
    return EncoderSpec(name, width, depth, heads, patch, image)
