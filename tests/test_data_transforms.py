"""Transforms against float64 NumPy references and exact properties (flip, crop ranges, jitter, 3-Augment,
RandAugment ops, random erasing, eval crop), and determinism per generator seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hjepa_mlx.data import augment, transforms
from hjepa_mlx.data.augment import apply_op, erasing_box, rand_augment, random_erasing
from hjepa_mlx.data.transforms import (TransformSpec, adjust_hue, color_jitter, crop_box, gaussian_blur, grayscale,
                                       make_eval_transform, make_multicrop_transform, make_train_transform, normalize,
                                       solarize, three_augment)
from hjepa_mlx.errors import UserError

IMG = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
WHOLE = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))        # the crop is the whole (square) image


def gen(seed):
    return np.random.default_rng(seed)


def test_crop_box_respects_scale_and_ratio_up_to_rounding():
    rng = gen(1)
    H, W, scale, ratio = 120, 90, (0.2, 0.6), (0.5, 1.5)
    fractions = []
    for _ in range(2000):
        top, left, h, w = crop_box(rng, H, W, scale, ratio)
        assert 0 <= top <= H - h and 0 <= left <= W - w and h > 0 and w > 0
        # w = round(sqrt(A r)), h = round(sqrt(A / r)): each within 0.5 of the exact value
        assert (w + 0.5) / (h - 0.5) >= ratio[0] and (w - 0.5) / (h + 0.5) <= ratio[1]
        assert (h + 0.5) * (w + 0.5) >= scale[0] * H * W and (h - 0.5) * (w - 0.5) <= scale[1] * H * W
        fractions.append(h * w / (H * W))
    # accepted areas are uniform in scale here (every draw fits), so the mean is the midpoint
    assert abs(np.mean(fractions) - 0.4) < 0.01


def test_crop_box_fallback_is_the_centred_ratio_clamped_box():
    # ratio >= 2 on a square image with the whole area never fits -> fallback: full width, h = w / 2
    assert crop_box(gen(0), 40, 40, (1.0, 1.0), (2.0, 3.0)) == (10, 0, 20, 40)
    assert crop_box(gen(0), 40, 40, (1.0, 1.0), (1 / 3, 1 / 2)) == (0, 10, 40, 20)
    assert crop_box(gen(0), 30, 40, (1.0, 1.0), (2.0, 3.0))[2:] == (20, 40)


def test_flip_is_a_flip_and_drawn_half_the_time():
    tf = make_train_transform(TransformSpec(horizontal_flip=True, **WHOLE), 20)
    plain, flipped = normalize(IMG), normalize(IMG[:, ::-1])
    kinds = []
    for s in range(200):
        out = tf(IMG, gen(s))
        is_plain, is_flip = np.array_equal(out, plain), np.array_equal(out, flipped)
        assert is_plain != is_flip
        kinds.append(is_flip)
    assert 70 < sum(kinds) < 130
    no_flip = make_train_transform(TransformSpec(horizontal_flip=False, **WHOLE), 20)
    assert all(np.array_equal(no_flip(IMG, gen(s)), plain) for s in range(20))


def test_normalisation_matches_reference_with_custom_mean_std():
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    ref = (IMG.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(normalize(IMG, mean, std), ref, rtol=1e-6, atol=1e-6)
    tf = make_train_transform(TransformSpec(horizontal_flip=False, mean=mean, std=std, **WHOLE), 20)
    np.testing.assert_allclose(tf(IMG, gen(0)), ref, rtol=1e-6, atol=1e-6)
    default = (IMG.astype(np.float64) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(normalize(IMG), default, rtol=1e-6, atol=1e-6)


def _reference_jitter(img, seed, b, c, s):
    """float64 reference of brightness/contrast/saturation jitter, replaying the generator's draws."""
    rng = gen(seed)
    out = img.astype(np.float64)
    luma = np.array([0.299, 0.587, 0.114])
    for op in rng.permutation(4):
        if op == 0 and b:
            out = np.clip(out * rng.uniform(1 - b, 1 + b), 0, 255)
        elif op == 1 and c:
            m = (out @ luma).mean()
            out = np.clip(m + rng.uniform(1 - c, 1 + c) * (out - m), 0, 255)
        elif op == 2 and s:
            g = (out @ luma)[..., None]
            out = np.clip(g + rng.uniform(1 - s, 1 + s) * (out - g), 0, 255)
    return out


@pytest.mark.parametrize("b,c,s", [(0.4, 0, 0), (0, 0.4, 0), (0, 0, 0.4), (0.3, 0.3, 0.3)])
def test_color_jitter_matches_float64_reference(b, c, s):
    for seed in range(5):
        out = color_jitter(IMG.astype(np.float32), gen(seed), b, c, s, 0.0)
        np.testing.assert_allclose(out, _reference_jitter(IMG, seed, b, c, s), atol=1e-3)


def test_zero_jitter_is_identity_and_hue_rotates():
    f = IMG.astype(np.float32)
    np.testing.assert_array_equal(color_jitter(f, gen(3), 0, 0, 0, 0), f)
    red = np.zeros((2, 2, 3), np.float32)
    red[..., 0] = 255
    np.testing.assert_allclose(adjust_hue(red, 1 / 3), np.broadcast_to([0, 255, 0], (2, 2, 3)), atol=8)
    np.testing.assert_allclose(adjust_hue(red, -1 / 3), np.broadcast_to([0, 0, 255], (2, 2, 3)), atol=8)
    same = adjust_hue(IMG.astype(np.float32), 0.0)                   # 8-bit HSV round trip: small error
    assert np.abs(same - IMG).max() <= 6 and np.abs(same - IMG).mean() < 1.0


def test_grayscale_solarize_blur_values():
    g = grayscale(IMG)
    ref = IMG.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(g, ref, rtol=1e-5)
    assert g.shape == (20, 20)
    x = np.arange(256, dtype=np.float32).reshape(16, 16, 1).repeat(3, axis=2)
    sol = solarize(x)
    np.testing.assert_array_equal(sol[x >= 128], 255 - x[x >= 128])
    np.testing.assert_array_equal(sol[x < 128], x[x < 128])
    flat = np.full((9, 9, 3), 77, np.float32)
    np.testing.assert_array_equal(gaussian_blur(flat, 1.5), flat)                      # constant stays constant
    blurred = gaussian_blur(IMG.astype(np.float32), 2.0)
    assert blurred.std() < IMG.std() * 0.7 and abs(blurred.mean() - IMG.mean()) < 2


def test_three_augment_picks_each_option_uniformly():
    img = IMG.astype(np.float32)
    gray, sol = np.repeat(grayscale(img)[..., None], 3, axis=2), solarize(img)
    counts = {"gray": 0, "solarize": 0, "blur": 0}
    for s in range(300):
        out = three_augment(img, gen(s))
        if np.array_equal(out, gray):
            counts["gray"] += 1
            assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
        elif np.array_equal(out, sol):
            counts["solarize"] += 1
        else:
            counts["blur"] += 1
            assert out.std() < img.std()
    assert all(70 < v < 130 for v in counts.values()), counts


def test_deit3_uses_jitter_03_by_default_else_the_spec_value_without_hue(monkeypatch):
    calls = []
    real = transforms.color_jitter
    monkeypatch.setattr(transforms, "color_jitter", lambda img, rng, *a: calls.append(a) or real(img, rng, *a))
    make_train_transform(TransformSpec(strategy="deit3"), 16)(IMG, gen(0))
    make_train_transform(TransformSpec(strategy="deit3", color_jitter=0.4), 16)(IMG, gen(0))
    make_train_transform(TransformSpec(color_jitter=0.4), 16)(IMG, gen(0))
    assert calls == [(0.3, 0.3, 0.3, 0.0), (0.4, 0.4, 0.4, 0.0), (0.4, 0.4, 0.4, 0.1)]


def test_hue_key_overrides_the_jitter_hue_of_either_strategy_and_alone_still_jitters(monkeypatch):
    calls = []
    real = transforms.color_jitter
    monkeypatch.setattr(transforms, "color_jitter", lambda img, rng, *a: calls.append(a) or real(img, rng, *a))
    make_train_transform(TransformSpec(color_jitter=0.8, hue=0.5), 16)(IMG, gen(0))
    make_train_transform(TransformSpec(strategy="deit3", hue=0.25), 16)(IMG, gen(0))
    make_train_transform(TransformSpec(hue=0.5), 16)(IMG, gen(0))          # hue alone: jitter runs, hue only
    make_train_transform(TransformSpec(color_jitter=0.8, hue=0.0), 16)(IMG, gen(0))
    make_train_transform(TransformSpec(), 16)(IMG, gen(0))                  # no jitter at all: not called
    assert calls == [(0.8, 0.8, 0.8, 0.5), (0.3, 0.3, 0.3, 0.25), (0.0, 0.0, 0.0, 0.5), (0.8, 0.8, 0.8, 0.0)]


def test_full_hue_range_leaves_no_hue_shared_between_views():
    # with hue 0.5 the shift is uniform over a whole turn: the hue of a saturated pixel after the jitter is
    # uniform whatever it was before (circular mean resultant ~0); at the default 0.2 it stays near red
    red = np.broadcast_to(np.array([230, 20, 20], np.uint8), (4, 4, 3)).copy()

    def hues(hue):
        out = []
        for seed in range(400):
            img = color_jitter(red.astype(np.float32), gen(seed), 0.0, 0.0, 0.0, hue)
            hsv = np.asarray(Image.fromarray(img.astype(np.uint8)).convert("HSV"), np.float64)
            out.append(hsv[0, 0, 0] / 256 * 2 * np.pi)
        return np.abs(np.mean(np.exp(1j * np.asarray(out))))
    assert hues(0.5) < 0.15 and hues(0.2) > 0.7


def test_train_transforms_deterministic_per_seed_and_shaped():
    spec = TransformSpec(strategy="deit3", crop_scale=(0.3, 1.0), auto_augment=True, random_erasing_prob=0.5)
    for tf in (make_train_transform(spec, 12), make_train_transform(TransformSpec(color_jitter=0.4), 12)):
        a, b, c = tf(IMG, gen(5)), tf(IMG, gen(5)), tf(IMG, gen(6))
        assert a.shape == (12, 12, 3) and a.dtype == np.float32 and a.flags.c_contiguous
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_randaugment_ops_values():
    pil = Image.fromarray(IMG)
    for op in augment.OPS:                                   # every op keeps size and mode
        out = apply_op(pil, op, 9, -1.0)
        assert out.size == pil.size and out.mode == "RGB"
    for op in ("identity", "rotate", "color", "contrast", "brightness", "sharpness", "shear_x", "translate_y"):
        np.testing.assert_array_equal(np.asarray(apply_op(pil, op, 0)), IMG)          # magnitude 0: identity
    assert (np.asarray(apply_op(pil, "posterize", 30)) % 16 == 0).all()               # 4 bits left
    np.testing.assert_array_equal(np.asarray(apply_op(pil, "solarize", 0)), np.where(IMG >= 255, 0, IMG))
    wide = np.random.default_rng(1).integers(0, 256, (4, 331, 3), dtype=np.uint8)     # 150/331 of 331 = 150 px
    shifted = np.asarray(apply_op(Image.fromarray(wide), "translate_x", 30, 1.0))
    np.testing.assert_array_equal(shifted[:, :331 - 150], wide[:, 150:])
    assert (shifted[:, 331 - 150:] == 0).all()
    bright = np.asarray(apply_op(pil, "brightness", 30, 1.0)).astype(int)             # factor 1.9
    np.testing.assert_allclose(bright, np.clip(IMG * 1.9, 0, 255), atol=1)
    out = rand_augment(IMG, gen(0), 2, 9)
    assert out.dtype == np.float32 and out.shape == IMG.shape
    np.testing.assert_array_equal(out, rand_augment(IMG, gen(0), 2, 9))
    np.testing.assert_array_equal(rand_augment(IMG, gen(0), 0, 9), IMG)


def test_random_erasing_box_and_probability():
    img = np.zeros((32, 40, 3), np.float32)
    assert random_erasing(img, gen(0), 0.0) is img
    rng = gen(2)
    for _ in range(200):
        box = erasing_box(rng, 32, 40)
        top, left, h, w = box
        assert 0 < h < 32 and 0 < w < 40 and top + h <= 32 and left + w <= 40
        assert (h + 0.5) * (w + 0.5) >= 0.02 * 32 * 40 and (h - 0.5) * (w - 0.5) <= 32 * 40 / 3
        assert (h + 0.5) / (w - 0.5) >= 0.3 and (h - 0.5) / (w + 0.5) <= 10 / 3
    erased = sum(not np.array_equal(random_erasing(img, gen(s), 0.3), img) for s in range(300))
    assert 60 < erased < 120
    out = random_erasing(img, gen(1), 1.0)
    rows, cols = np.nonzero((out != 0).any(axis=2))
    changed = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert len(rows) == changed                               # exactly one filled rectangle
    assert abs(out[out != 0].std() - 1) < 0.3                 # standard-normal noise


def test_eval_transform_exact_centre_crop_and_upscale():
    img = np.random.default_rng(3).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    out = make_eval_transform(28)(img)                        # 28 / 0.875 = 32 = the short side: no resize
    np.testing.assert_allclose(out, normalize(img[2:30, 6:34]), rtol=1e-6)
    up = make_eval_transform(224)(img[:, :32])                # 32 px -> 256 -> centre 224
    assert up.shape == (224, 224, 3) and up.dtype == np.float32
    full = make_eval_transform(32, crop_fraction=1.0)(img[:, :32])
    np.testing.assert_allclose(full, normalize(img[:, :32]), rtol=1e-6)


def test_multicrop_sizes_and_independent_crops():
    crops = make_multicrop_transform(TransformSpec(), 16, 8, num_local=2, local_scale=(0.05, 0.3))(IMG, gen(0))
    assert [c.shape for c in crops] == [(16, 16, 3)] * 2 + [(8, 8, 3)] * 2
    assert not np.array_equal(crops[0], crops[1]) and not np.array_equal(crops[2], crops[3])


def test_spec_validation_and_note_for_ignored_options(capsys):
    with pytest.raises(UserError, match="strategy 'fancy'"):
        TransformSpec(strategy="fancy")
    with pytest.raises(UserError, match="crop_scale"):
        TransformSpec(crop_scale=(0.5, 0.2))
    with pytest.raises(UserError, match="hue 0.7"):
        TransformSpec(hue=0.7)
    make_train_transform(TransformSpec(auto_augment=True), 8)
    assert "ignored with transform strategy 'default'" in capsys.readouterr().out
