"""RandAugment (Cubuk et al.) over the standard op list, and random erasing (Zhong et al.), Pillow/NumPy."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

_MAX = 30.0


def _level(magnitude: float, top: float) -> float:
    return magnitude / _MAX * top


def _ops(img: Image.Image, op: str, m: float, sign: float) -> Image.Image:
    if op == "identity":
        return img
    if op == "autocontrast":
        return ImageOps.autocontrast(img)
    if op == "equalize":
        return ImageOps.equalize(img)
    if op == "rotate":
        return img.rotate(sign * _level(m, 30.0))
    if op == "solarize":
        return ImageOps.solarize(img, 256 - int(_level(m, 256)))
    if op == "color":
        return ImageEnhance.Color(img).enhance(1 + sign * _level(m, 0.9))
    if op == "posterize":
        return ImageOps.posterize(img, max(1, 8 - int(_level(m, 4))))
    if op == "contrast":
        return ImageEnhance.Contrast(img).enhance(1 + sign * _level(m, 0.9))
    if op == "brightness":
        return ImageEnhance.Brightness(img).enhance(1 + sign * _level(m, 0.9))
    if op == "sharpness":
        return ImageEnhance.Sharpness(img).enhance(1 + sign * _level(m, 0.9))
    if op == "shear_x":
        return img.transform(img.size, Image.AFFINE, (1, sign * _level(m, 0.3), 0, 0, 1, 0))
    if op == "shear_y":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, sign * _level(m, 0.3), 1, 0))
    if op == "translate_x":
        return img.transform(img.size, Image.AFFINE, (1, 0, sign * _level(m, 0.45) * img.size[0], 0, 1, 0))
    if op == "translate_y":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, sign * _level(m, 0.45) * img.size[1]))
    raise ValueError(op)


OPS = ("identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize", "contrast",
       "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")


def rand_augment(img: np.ndarray, rng, num_ops: int, magnitude: float) -> np.ndarray:
    pil = Image.fromarray(img)
    for i in rng.choice(len(OPS), size=num_ops):
        pil = _ops(pil, OPS[i], magnitude, 1.0 if rng.random() < 0.5 else -1.0)
    return np.asarray(pil, dtype=np.float32)


def random_erasing(img: np.ndarray, rng, prob: float, scale=(0.02, 1 / 3), ratio=(0.3, 3.3)) -> np.ndarray:
    """With probability prob, one rectangle of the (normalised) image becomes standard-normal noise."""
    if rng.random() >= prob:
        return img
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        eh, ew = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if eh < h and ew < w:
            top, left = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
            img = img.copy()
            img[top:top + eh, left:left + ew] = rng.standard_normal((eh, ew, img.shape[2])).astype(np.float32)
            return img
    return img
