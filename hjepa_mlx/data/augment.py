"""RandAugment (Cubuk et al., 2020) over torchvision's standard 14-op list, and random erasing (Zhong et
al., 2020, timm's 'pixel' mode as DeiT uses it). Pillow/NumPy; all randomness from an explicit Generator.

Magnitudes follow torchvision's RandAugment with 31 bins (magnitude 0..30): rotate up to 30 degrees,
shear up to 0.3, translate up to 150/331 of the side, enhance factors 1 +- 0.9, posterize 8 -> 4 bits,
solarize threshold 255 -> 0; signed ops get a random sign. Geometric ops fill with black (torchvision's
default) and use nearest-neighbour sampling about the image centre.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_MAGNITUDE = 30.0

OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
       "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")


def _level(magnitude: float, top: float) -> float:
    return magnitude / MAX_MAGNITUDE * top


def apply_op(img: Image.Image, op: str, magnitude: float, sign: float = 1.0) -> Image.Image:
    """One RandAugment op on an RGB Pillow image. `sign` (+-1) applies to the signed ops only."""
    w, h = img.size
    if op == "identity":
        return img
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "rotate":
        return img.rotate(sign * _level(magnitude, 30.0))
    if op == "solarize":
        return ImageOps.solarize(img, int(round(255 - _level(magnitude, 255.0))))
    if op == "posterize":
        return ImageOps.posterize(img, 8 - int(round(_level(magnitude, 4.0))))
    if op in ("color", "contrast", "brightness", "sharpness"):
        enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                    "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}[op]
        return enhancer(img).enhance(1 + sign * _level(magnitude, 0.9))
    # Pillow's AFFINE maps each output (x, y) to the input (a x + b y + c, d x + e y + f)
    s = sign * _level(magnitude, 0.3)
    t = sign * _level(magnitude, 150 / 331)
    coeffs = {"shear_x": (1, s, -s * h / 2, 0, 1, 0), "shear_y": (1, 0, 0, s, 1, -s * w / 2),
              "translate_x": (1, 0, t * w, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, t * h)}.get(op)
    if coeffs is None:
        raise ValueError(f"unknown RandAugment op {op!r}; known: {', '.join(OPS)}")
    return img.transform(img.size, Image.AFFINE, coeffs, resample=Image.NEAREST)


def rand_augment(img: np.ndarray, rng: np.random.Generator, num_ops: int, magnitude: float) -> np.ndarray:
    """uint8 HWC RGB -> float32 HWC in [0, 255]: `num_ops` ops drawn uniformly with replacement."""
    pil = Image.fromarray(img)
    for i in rng.integers(0, len(OPS), size=num_ops):
        pil = apply_op(pil, OPS[i], magnitude, 1.0 if rng.random() < 0.5 else -1.0)
    return np.asarray(pil, dtype=np.float32)


def erasing_box(rng: np.random.Generator, height: int, width: int, scale=(0.02, 1 / 3), ratio=(0.3, 10 / 3)):
    """(top, left, h, w) of the rectangle to erase, or None after 10 failed tries (timm's semantics:
    area fraction in `scale`, log-uniform aspect h / w in `ratio`, strictly smaller than the image)."""
    for _ in range(10):
        area = height * width * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < eh < height and 0 < ew < width:
            return int(rng.integers(0, height - eh + 1)), int(rng.integers(0, width - ew + 1)), eh, ew
    return None


def random_erasing(img: np.ndarray, rng: np.random.Generator, prob: float, scale=(0.02, 1 / 3),
                   ratio=(0.3, 10 / 3)) -> np.ndarray:
    """With probability `prob`, one rectangle of the (already normalised) float image becomes
    per-pixel standard-normal noise; otherwise the image is returned unchanged."""
    if prob <= 0 or rng.random() >= prob:
        return img
    box = erasing_box(rng, img.shape[0], img.shape[1], scale, ratio)
    if box is None:
        return img
    top, left, eh, ew = box
    img = img.copy()
    img[top:top + eh, left:left + ew] = rng.standard_normal((eh, ew, img.shape[2])).astype(np.float32)
    return img
