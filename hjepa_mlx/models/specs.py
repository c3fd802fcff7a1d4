"""Encoder specs by timm name: vit_{tiny,small,base,large}_patch{4,8,14,16}_{image size}."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hjepa_mlx.errors import UserError

# width, depth, heads - as timm's ViT-T/S/B/L
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
PATCHES = (4, 8, 14, 16)
VALID_FORMS = ("vit_{tiny,small,base,large}_patch{4,8,14,16}_{image size}, with the image size divisible "
               "by the patch size, e.g. vit_small_patch16_224 or vit_tiny_patch8_64")
_NAME = re.compile(r"^vit_(tiny|small|base|large)_patch(\d+)_(\d+)$")


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    image_size: int      # the nominal size in the name; a run may use another (see `grid_for`)


def parse_encoder_name(name: str) -> EncoderSpec:
    """EncoderSpec from a timm-style name; UserError listing the valid forms for anything else."""
    match = _NAME.match(str(name))
    if not match or int(match.group(2)) not in PATCHES or int(match.group(3)) % int(match.group(2)):
        raise UserError(f"model.encoder_type '{name}' is not a known encoder; use {VALID_FORMS}")
    size, patch, image = match.group(1), int(match.group(2)), int(match.group(3))
    width, depth, heads = SIZES[size]
    return EncoderSpec(name, width, depth, heads, patch, image)


def grid_for(spec: EncoderSpec, image_size: int | None = None) -> tuple[int, int]:
    """(grid_h, grid_w) patches for square images of image_size (None: the name's size); UserError unless
    the size is a positive multiple of the patch size."""
    size = spec.image_size if image_size is None else image_size
    if size <= 0 or size % spec.patch_size:
        raise UserError(f"image size {size} is not a positive multiple of the patch size {spec.patch_size} "
                        f"of {spec.name}; pick a multiple of {spec.patch_size}")
    return size // spec.patch_size, size // spec.patch_size
