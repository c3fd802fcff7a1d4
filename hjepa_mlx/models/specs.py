"""Encoder specs by name, one registered family per kind of encoder.

A family turns the names it knows (`model.encoder_type`) into an `EncoderSpec` and builds its module from
the arguments `build.encoder_kwargs` makes. The built-in family is timm's ViT:
vit_{tiny,small,base,large}_patch{4,8,14,16}_{image size} (`ViTEncoder`). Another one registers with

    register_encoder(EncoderFamily("mine", parse=lambda name: ..., build=MyEncoder, valid_forms="mine_..."))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from hjepa_mlx.errors import UserError
from hjepa_mlx.registry import Registry

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
    family: str = "vit"  # the `EncoderFamily` that parsed the name and builds the module


@dataclass(frozen=True)
class EncoderFamily:
    """name: the family's name; parse(encoder_type) -> EncoderSpec, or None for a name it does not know;
    build(**encoder_kwargs, use_checkpoint=...) -> the encoder module (`build.encoder_kwargs` gives patch_size,
    image_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias and the model.* options); valid_forms: the
    names it knows, in words, for the error of an unknown name."""

    name: str
    parse: Callable
    build: Callable
    valid_forms: str


_FAMILIES: Registry[EncoderFamily] = Registry("encoder family")


def register_encoder(family: EncoderFamily) -> EncoderFamily:
    """Add a family (names are tried family by family, in registration order); ValueError for a taken name."""
    _FAMILIES.add(family.name, family)
    return family


def unregister_encoder(name: str) -> None:
    _FAMILIES.remove(name)


def encoder_family(spec: EncoderSpec) -> EncoderFamily:
    """The family that builds `spec`'s module."""
    return _FAMILIES.get(spec.family)


def parse_encoder_name(name: str) -> EncoderSpec:
    """EncoderSpec from the first family that knows `name`; UserError listing every family's forms otherwise."""
    for family in _FAMILIES.items():
        spec = family.parse(str(name))
        if spec is not None:
            return spec
    forms = "; or ".join(f.valid_forms for f in _FAMILIES.items())
    raise UserError(f"model.encoder_type '{name}' is not a known encoder; use {forms}")


def parse_vit_name(name: str) -> EncoderSpec | None:
    """A timm-style ViT name's spec, or None."""
    match = _NAME.match(name)
    if not match or int(match.group(2)) not in PATCHES or int(match.group(3)) % int(match.group(2)):
        return None
    size, patch, image = match.group(1), int(match.group(2)), int(match.group(3))
    width, depth, heads = SIZES[size]
    return EncoderSpec(name, width, depth, heads, patch, image, "vit")


def build_vit(**kwargs):
    from hjepa_mlx.models.vit import ViTEncoder   # mlx.nn: only when a model is built, not to read a config

    return ViTEncoder(**kwargs)


VIT = register_encoder(EncoderFamily("vit", parse_vit_name, build_vit, VALID_FORMS))


def grid_for(spec: EncoderSpec, image_size: int | None = None) -> tuple[int, int]:
    """(grid_h, grid_w) patches for square images of image_size (None: the name's size); UserError unless
    the size is a positive multiple of the patch size."""
    size = spec.image_size if image_size is None else image_size
    if size <= 0 or size % spec.patch_size:
        raise UserError(f"image size {size} is not a positive multiple of the patch size {spec.patch_size} "
                        f"of {spec.name}; pick a multiple of {spec.patch_size}")
    return size // spec.patch_size, size // spec.patch_size
