"""Encoder specs by timm name, and parameter counts against timm's."""

import pytest
from mlx.utils import tree_flatten

from hjepa_mlx.errors import UserError
from hjepa_mlx.models.specs import grid_for, parse_encoder_name
from hjepa_mlx.models.vit import ViTEncoder


@pytest.mark.parametrize("name, expected", [
    ("vit_tiny_patch16_224", (192, 12, 3, 16, 224)),
    ("vit_small_patch8_64", (384, 12, 6, 8, 64)),
    ("vit_base_patch14_224", (768, 12, 12, 14, 224)),
    ("vit_large_patch4_32", (1024, 24, 16, 4, 32)),
])
def test_parse_known_names(name, expected):
    s = parse_encoder_name(name)
    assert (s.embed_dim, s.depth, s.num_heads, s.patch_size, s.image_size) == expected
    assert s.name == name


@pytest.mark.parametrize("name", ["vit_huge_patch16_224", "vit_small_patch32_224", "vit_small_patch16",
                                  "resnet50", "vit_small_patch16_100", "VIT_SMALL_PATCH16_224"])
def test_unknown_names_raise_a_user_error_listing_the_valid_forms(name):
    with pytest.raises(UserError) as err:
        parse_encoder_name(name)
    assert name in str(err.value)
    assert "vit_{tiny,small,base,large}_patch{4,8,14,16}_{image size}" in str(err.value)


def test_grid_for_overrides_the_image_size_and_checks_divisibility():
    spec = parse_encoder_name("vit_small_patch16_224")
    assert grid_for(spec) == (14, 14)
    assert grid_for(spec, 96) == (6, 6)
    with pytest.raises(UserError, match="not a positive multiple of the patch size 16"):
        grid_for(spec, 100)


def _count(module):
    return sum(v.size for _, v in tree_flatten(module.parameters()))


# timm's headless (num_classes=0) counts at 224. timm also has a CLS token (D parameters) and a learned
# 197 x D position table; we have neither (fixed sin-cos table, no CLS), so ours = timm - D - 197 * D.
@pytest.mark.parametrize("name, timm_count", [("vit_tiny_patch16_224", 5_524_416),
                                              ("vit_small_patch16_224", 21_665_664),
                                              ("vit_base_patch16_224", 85_798_656)])
def test_parameter_counts_match_timm_minus_cls_and_learned_pos_embed(name, timm_count):
    s = parse_encoder_name(name)
    enc = ViTEncoder(patch_size=s.patch_size, image_size=s.image_size, embed_dim=s.embed_dim, depth=s.depth,
                     num_heads=s.num_heads)
    assert _count(enc) == timm_count - s.embed_dim - 197 * s.embed_dim
