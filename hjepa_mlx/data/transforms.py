"""Image transforms (Pillow + NumPy), each driven by an explicit `np.random.Generator` (deterministic).

Train, strategy 'default': random resized crop (torchvision semantics) -> horizontal flip -> colour
jitter (brightness = contrast = saturation = `color_jitter`, hue = `hue`, or `color_jitter` / 4 when
`hue` is None; the four in random order, like torchvision) -> normalise.
Train, strategy 'deit3' (DeiT III 3-Augment): crop + flip -> exactly one of {grayscale, solarize(128),
Gaussian blur sigma in [0.1, 2]} -> colour jitter (brightness, contrast, saturation; no hue) of strength
`color_jitter`, or DeiT III's 0.3 when `color_jitter` is 0, hue `hue` if given -> [RandAugment when `auto_augment`] ->
normalise -> [random erasing with `random_erasing_prob`].
Eval: resize the shorter side to image_size / 0.875, centre crop image_size.
Every output is float32 HWC, normalised as (x / 255 - mean) / std (ImageNet mean/std by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageFilter

from hjepa_mlx.data.augment import rand_augment, random_erasing
from hjepa_mlx.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_STD, dtype=np.float32)
DEIT3_JITTER = 0.3
_GRAY = (0.299, 0.587, 0.114)          # ITU-R 601-2 luma, as Pillow's "L" and torchvision's grayscale


@dataclass(frozen=True)
class TransformSpec:
    """What the training transform does (the lead maps data.transforms.* / data.augmentation.* here).

    strategy: 'default' or 'deit3' (DeiT III 3-Augment; enables the three options below it).
    crop_scale: (lo, hi) area fraction of the source image kept by the random resized crop.
    crop_ratio: (lo, hi) aspect ratio (w / h) range, sampled log-uniformly.
    horizontal_flip: flip left-right with probability 1/2.
    color_jitter: brightness/contrast/saturation strength in [0, 1].
    hue: the hue shift range in [0, 0.5] of a turn; None: color_jitter / 4 (default), 0 (deit3).
    auto_augment: deit3 only: RandAugment with rand_aug_num_ops ops of rand_aug_magnitude (0..30).
    random_erasing_prob: deit3 only: probability of erasing one rectangle (after normalisation).
    mean, std: per-channel normalisation of x / 255.
    """

    strategy: str = "default"
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: bool = True
    color_jitter: float = 0.0
    hue: float | None = None
    auto_augment: bool = False
    rand_aug_num_ops: int = 2
    rand_aug_magnitude: float = 9.0
    random_erasing_prob: float = 0.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        problems = []
        if self.strategy not in ("default", "deit3"):
            problems.append(f"strategy {self.strategy!r} is not 'default' or 'deit3'")
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            problems.append(f"crop_scale {tuple(self.crop_scale)} must satisfy 0 < lo <= hi <= 1")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            problems.append(f"crop_ratio {tuple(self.crop_ratio)} must satisfy 0 < lo <= hi")
        if not 0 <= self.color_jitter <= 1:
            problems.append(f"color_jitter {self.color_jitter} must be in [0, 1]")
        if self.hue is not None and not 0 <= self.hue <= 0.5:
            problems.append(f"hue {self.hue} must be in [0, 0.5] (a fraction of a turn)")
        if not 0 <= self.random_erasing_prob <= 1:
            problems.append(f"random_erasing_prob {self.random_erasing_prob} must be in [0, 1]")
        if self.rand_aug_num_ops < 0 or not 0 <= self.rand_aug_magnitude <= 30:
            problems.append("RandAugment needs rand_aug_num_ops >= 0 and rand_aug_magnitude in [0, 30]")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need 3 values each, std > 0")
        if problems:
            raise UserError("data transforms: " + "; ".join(problems))


def crop_box(rng: np.random.Generator, height: int, width: int, scale, ratio) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop, with torchvision's RandomResizedCrop semantics.

    Up to 10 tries: area = height*width*U(scale), aspect = exp(U(log ratio)), w = round(sqrt(area*aspect)),
    h = round(sqrt(area/aspect)); the first box that fits is placed uniformly. Otherwise fall back to
    the largest centred box whose aspect is clamped into `ratio`.
    """
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


def normalize(img: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """uint8 or float [0, 255] HWC -> float32 (img / 255 - mean) / std."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return ((np.asarray(img, dtype=np.float32) / 255.0) - mean) / std


def _blend(a: np.ndarray, b, factor: float) -> np.ndarray:
    # torchvision's _blend: b + factor * (a - b), clipped to the valid range
    return np.clip(b + factor * (a - b), 0, 255)


def grayscale(img: np.ndarray) -> np.ndarray:
    """float HW luma of a float/uint8 HWC RGB image."""
    img = np.asarray(img, dtype=np.float32)
    return img[..., 0] * _GRAY[0] + img[..., 1] * _GRAY[1] + img[..., 2] * _GRAY[2]


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def adjust_hue(img: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue by `shift` of a turn (in [-0.5, 0.5]) through Pillow's 8-bit HSV, like torchvision."""
    hsv = np.array(Image.fromarray(_to_uint8(img)).convert("HSV"), dtype=np.int16)
    hsv[..., 0] = (hsv[..., 0] + int(round(shift * 255))) % 256
    return np.array(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"), dtype=np.float32)


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float,
                 saturation: float, hue: float) -> np.ndarray:
    """Colour jitter of a float HWC image in [0, 255], torchvision semantics.

    The four adjustments run in a random order; each factor is drawn from [1 - x, 1 + x] (hue: a shift
    from [-hue, hue] of a turn). An adjustment with strength 0 is skipped, so all-zero is the identity.
    """
    out = np.asarray(img, dtype=np.float32)
    for op in rng.permutation(4):
        if op == 0 and brightness > 0:
            out = _blend(out, 0.0, rng.uniform(max(0.0, 1 - brightness), 1 + brightness))
        elif op == 1 and contrast > 0:
            out = _blend(out, float(grayscale(out).mean()), rng.uniform(max(0.0, 1 - contrast), 1 + contrast))
        elif op == 2 and saturation > 0:
            out = _blend(out, grayscale(out)[..., None], rng.uniform(max(0.0, 1 - saturation), 1 + saturation))
        elif op == 3 and hue > 0:
            out = adjust_hue(out, rng.uniform(-hue, hue))
    return out


def solarize(img: np.ndarray, threshold: float = 128) -> np.ndarray:
    """Invert (255 - x) every value >= threshold, as Pillow's ImageOps.solarize."""
    img = np.asarray(img, dtype=np.float32)
    return np.where(img >= threshold, 255 - img, img)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Pillow Gaussian blur with standard deviation `sigma` pixels."""
    return np.array(Image.fromarray(_to_uint8(img)).filter(ImageFilter.GaussianBlur(sigma)), np.float32)


def three_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """DeiT III: exactly one of grayscale, solarize (threshold 128), Gaussian blur (sigma in [0.1, 2]),
    chosen uniformly. float [0, 255] HWC in and out."""
    choice = rng.integers(3)
    if choice == 0:
        return np.repeat(grayscale(img)[..., None], 3, axis=2)
    if choice == 1:
        return solarize(img)
    return gaussian_blur(img, rng.uniform(0.1, 2.0))


def resized_crop(img: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """uint8 HWC: crop (top, left, h, w) and resize to size x size (bilinear, antialiased by Pillow)."""
    top, left, h, w = box
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR,
                                                  box=(left, top, left + w, top + h)))


def make_train_transform(spec: TransformSpec, image_size: int):
    """fn(img uint8 HWC RGB, rng) -> float32 (image_size, image_size, 3), the pipeline the spec names
    (module docstring). All randomness comes from `rng`, so the same generator state gives the same output."""
    if spec.strategy != "deit3" and (spec.auto_augment or spec.random_erasing_prob > 0):
        print("note: RandAugment / random erasing are DeiT III options; ignored with transform strategy "
              f"{spec.strategy!r} (set strategy 'deit3' to use them)")
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    j = spec.color_jitter
    deit3_jitter = j if j > 0 else DEIT3_JITTER
    hue = spec.hue if spec.hue is not None else (0.0 if spec.strategy == "deit3" else j / 4)

    def transform(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        box = crop_box(rng, img.shape[0], img.shape[1], spec.crop_scale, spec.crop_ratio)
        out = resized_crop(img, box, image_size)
        if spec.horizontal_flip and rng.random() < 0.5:
            out = out[:, ::-1]
        out = out.astype(np.float32)
        if spec.strategy == "deit3":
            out = three_augment(out, rng)
            out = color_jitter(out, rng, deit3_jitter, deit3_jitter, deit3_jitter, hue)
            if spec.auto_augment and spec.rand_aug_num_ops > 0:
                out = rand_augment(_to_uint8(out), rng, spec.rand_aug_num_ops, spec.rand_aug_magnitude)
        elif j > 0 or hue > 0:
            out = color_jitter(out, rng, j, j, j, hue)
        out = normalize(out, mean, std)
        if spec.strategy == "deit3" and spec.random_erasing_prob > 0:
            out = random_erasing(out, rng, spec.random_erasing_prob)
        return np.ascontiguousarray(out, dtype=np.float32)

    return transform


def make_eval_transform(image_size: int, crop_fraction: float = 0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """fn(img uint8 HWC, rng=None) -> float32 (image_size, image_size, 3): resize the shorter side to
    image_size / crop_fraction (bilinear), then centre-crop image_size, then normalise.

    Small images are upsampled by the same rule: 32 px CIFAR at image_size 224 becomes 256 px and the
    centre 224 px are kept, i.e. the outer 12.5 % (2 source pixels per side) is cut, as for ImageNet.
    Use crop_fraction=1.0 to keep the whole image. `rng` is accepted (and unused) so that train and
    eval transforms share one signature.
    """
    if not 0 < crop_fraction <= 1:
        raise UserError(f"eval crop_fraction {crop_fraction} must be in (0, 1]")
    resize_to = int(round(image_size / crop_fraction))
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def transform(img: np.ndarray, rng=None) -> np.ndarray:
        h, w = img.shape[:2]
        scale = resize_to / min(w, h)
        nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        pil = Image.fromarray(img).resize((nw, nh), Image.BILINEAR)
        out = np.asarray(pil.crop((left, top, left + image_size, top + image_size)))
        return normalize(out, mean, std)

    return transform


def make_multicrop_transform(spec: TransformSpec, global_size: int, local_size: int, num_local: int,
                             local_scale=(0.05, 0.3), num_global: int = 2):
    """Multi-crop (DINO/SwAV style): fn(img, rng) -> list of `num_global` crops at `global_size` (the
    spec's crop_scale) followed by `num_local` crops at `local_size` (crop scale `local_scale`), each with
    the spec's other augmentations and its own random draws."""
    global_tf = make_train_transform(spec, global_size)
    local_tf = make_train_transform(replace(spec, crop_scale=tuple(local_scale)), local_size)

    def transform(img: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        return [global_tf(img, rng) for _ in range(num_global)] + [local_tf(img, rng) for _ in range(num_local)]

    return transform


def to_rgb(pil: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: grayscale replicated, CMYK converted, alpha (RGBA/LA/P with transparency)
    composited on black, 16/32-bit integer images scaled to 8 bits."""
    if pil.mode == "RGB":
        return pil
    if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
        pil = pil.convert("RGBA")
        background = Image.new("RGBA", pil.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, pil).convert("RGB")
    if pil.mode.startswith("I;16") or pil.mode == "I":
        arr = np.asarray(pil, dtype=np.float64)
        top = 65535.0 if pil.mode.startswith("I;16") else max(1.0, float(arr.max()))
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if pil.mode == "F":
        arr = np.asarray(pil, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(np.rint(arr).astype(np.uint8), "L").convert("RGB")
    return pil.convert("RGB")
