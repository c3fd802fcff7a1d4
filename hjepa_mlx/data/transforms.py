"""Image transforms (Pillow + NumPy), each driven by an explicit `np.random.Generator`.

Train: random resized crop (torchvision semantics) -> horizontal flip -> colour jitter (brightness,
contrast, saturation = `color_jitter`, hue = `color_jitter` / 4, in random order) -> normalise. With
`strategy: deit3` (DeiT III 3-Augment): crop + flip -> one of {grayscale, solarize(128), Gaussian blur
sigma in [0.1, 2]} -> colour jitter 0.3 (b, c, s) -> [RandAugment when auto_augment] -> normalise ->
[random erasing with random_erasing_prob]. Eval: resize the shorter side to size/0.875, centre crop.
Output float32 HWC, normalised with the ImageNet mean/std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from hjepa_mlx.data.augment import rand_augment, random_erasing

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class TransformSpec:
    strategy: str = "default"
    crop_scale: tuple = (0.3, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    horizontal_flip: bool = True
    color_jitter: float = 0.0
    auto_augment: bool = False
    rand_aug_num_ops: int = 2
    rand_aug_magnitude: float = 9.0
    random_erasing_prob: float = 0.0


def crop_box(rng: np.random.Generator, height: int, width: int, scale, ratio) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop: area in scale, log-uniform aspect, 10 tries."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def normalize(img: np.ndarray) -> np.ndarray:
    return ((img.astype(np.float32) / 255.0) - MEAN) / STD


def _blend(a: np.ndarray, b: np.ndarray | float, factor: float) -> np.ndarray:
    return np.clip(b + factor * (a - b), 0, 255)


def _gray(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


def color_jitter(img: np.ndarray, rng, brightness: float, contrast: float, saturation: float, hue: float):
    """float HWC in [0, 255]; each factor drawn from [1-x, 1+x] (hue shift from [-hue, hue]); random order."""
    out = img.astype(np.float32)
    for op in rng.permutation(4):
        if op == 0 and brightness > 0:
            out = _blend(out, 0.0, rng.uniform(1 - brightness, 1 + brightness))
        elif op == 1 and contrast > 0:
            out = _blend(out, float(_gray(out).mean()), rng.uniform(1 - contrast, 1 + contrast))
        elif op == 2 and saturation > 0:
            out = _blend(out, _gray(out)[..., None], rng.uniform(1 - saturation, 1 + saturation))
        elif op == 3 and hue > 0:
            hsv = np.array(Image.fromarray(out.astype(np.uint8)).convert("HSV"), dtype=np.int16)
            hsv[..., 0] = (hsv[..., 0] + int(round(rng.uniform(-hue, hue) * 255))) % 256
            out = np.array(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"), dtype=np.float32)
    return out


def three_augment(img: np.ndarray, rng) -> np.ndarray:
    """DeiT III: exactly one of grayscale, solarize (threshold 128), Gaussian blur (sigma in [0.1, 2])."""
    choice = rng.integers(3)
    if choice == 0:
        return np.repeat(_gray(img.astype(np.float32))[..., None], 3, axis=2)
    if choice == 1:
        return np.where(img >= 128, 255 - img.astype(np.float32), img.astype(np.float32))
    sigma = rng.uniform(0.1, 2.0)
    return np.array(Image.fromarray(img.astype(np.uint8)).filter(ImageFilter.GaussianBlur(sigma)), np.float32)


def make_train_transform(spec: TransformSpec, image_size: int):
    def transform(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        top, left, h, w = crop_box(rng, img.shape[0], img.shape[1], spec.crop_scale, spec.crop_ratio)
        pil = Image.fromarray(img[top:top + h, left:left + w]).resize((image_size, image_size), Image.BILINEAR)
        out = np.asarray(pil)
        if spec.horizontal_flip and rng.random() < 0.5:
            out = out[:, ::-1]
        out = out.astype(np.float32)
        if spec.strategy == "deit3":
            out = three_augment(out, rng)
            out = color_jitter(out, rng, 0.3, 0.3, 0.3, 0.0)
            if spec.color_jitter > 0:
                j = spec.color_jitter
                out = color_jitter(out, rng, j, j, j, j / 4)
            if spec.auto_augment:
                out = rand_augment(out.astype(np.uint8), rng, spec.rand_aug_num_ops, spec.rand_aug_magnitude)
        elif spec.color_jitter > 0:
            j = spec.color_jitter
            out = color_jitter(out, rng, j, j, j, j / 4)
        out = normalize(out)
        if spec.strategy == "deit3" and spec.random_erasing_prob > 0:
            out = random_erasing(out, rng, spec.random_erasing_prob)
        return np.ascontiguousarray(out, dtype=np.float32)

    return transform


def make_eval_transform(image_size: int, crop_fraction: float = 0.875):
    """Resize the shorter side to image_size / crop_fraction, centre-crop image_size (small images such
    as 32 px CIFAR are upsampled by the same rule)."""
    resize_to = int(round(image_size / crop_fraction))

    def transform(img: np.ndarray, rng=None) -> np.ndarray:
        pil = Image.fromarray(img)
        w, h = pil.size
        scale = resize_to / min(w, h)
        pil = pil.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))), Image.BILINEAR)
        w, h = pil.size
        left, top = (w - image_size) // 2, (h - image_size) // 2
        out = np.asarray(pil.crop((left, top, left + image_size, top + image_size)))
        return normalize(out)

    return transform


def to_rgb(pil: Image.Image) -> Image.Image:
    """Grayscale, RGBA, CMYK, palette and 16-bit inputs -> RGB (alpha composited on black)."""
    if pil.mode == "RGB":
        return pil
    if pil.mode in ("RGBA", "LA", "P"):
        pil = pil.convert("RGBA")
        background = Image.new("RGBA", pil.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, pil).convert("RGB")
    if pil.mode in ("I;16", "I"):
        pil = ImageOps.autocontrast(pil.convert("I").point(lambda v: v / 256)).convert("L")
    return pil.convert("RGB")


def make_multicrop_transform(spec: TransformSpec, global_size: int, local_size: int, num_local: int,
                             local_scale=(0.05, 0.3), num_global: int = 2):
    """Multi-crop (global + local crops, DINO/SwAV style): `num_global` crops at `global_size` with the
    spec's crop scale and `num_local` crops at `local_size` with `local_scale`; same augmentations."""
    global_tf = make_train_transform(spec, global_size)
    local_tf = make_train_transform(replace(spec, crop_scale=tuple(local_scale)), local_size)

    def transform(img: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        return [global_tf(img, rng) for _ in range(num_global)] + [local_tf(img, rng) for _ in range(num_local)]

    return transform
