"""Procedural labelled images: a coloured shape on a textured background, deterministic from (seed, index).

The class fixes the shape (disc, square, triangle, ring, cross) and the colour family, so an encoder
that learns shape and colour separates the classes; position, size, texture and shade vary per image.
"""

from __future__ import annotations

import numpy as np

_SHAPES = 5


class SyntheticDataset:
    labelled = True

    def __init__(self, num_images: int, num_classes: int = 10, image_size: int = 64, seed: int = 0,
                 name: str = "synthetic"):
        self.num_images, self.num_classes, self.image_size, self.seed = num_images, num_classes, image_size, seed
        self.name = name

    def __len__(self) -> int:
        return self.num_images

    def label(self, index: int) -> int:
        return index % self.num_classes

    def load(self, index: int) -> tuple[np.ndarray, int]:
        if not 0 <= index < self.num_images:
            raise IndexError(index)
        label = self.label(index)
        rng = np.random.default_rng([self.seed, index])
        s = self.image_size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        # background: low-contrast stripes at a random angle + noise
        angle, freq = rng.uniform(0, np.pi), rng.uniform(3, 9)
        stripes = 0.5 + 0.15 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        bg = np.repeat(stripes[..., None], 3, axis=2) * rng.uniform(0.4, 1.0, size=3)
        bg += rng.normal(0, 0.04, size=bg.shape)
        # foreground: class shape in the class colour family
        hue = (label // _SHAPES) / max(1, (self.num_classes + _SHAPES - 1) // _SHAPES) + rng.uniform(-0.04, 0.04)
        colour = _hue_to_rgb(hue % 1.0) * rng.uniform(0.75, 1.0)
        cy, cx = rng.uniform(0.3, 0.7, size=2)
        r = rng.uniform(0.16, 0.28)
        mask = _shape_mask(label % _SHAPES, yy - cy, xx - cx, r)
        img = np.where(mask[..., None], colour[None, None], bg)
        return (np.clip(img, 0, 1) * 255).astype(np.uint8), label


def _hue_to_rgb(h: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return 1 - np.clip(np.minimum(k, 4 - k), 0, 1)


def _shape_mask(kind: int, dy, dx, r):
    if kind == 0:
        return dy ** 2 + dx ** 2 < r ** 2
    if kind == 1:
        return (np.abs(dy) < r * 0.85) & (np.abs(dx) < r * 0.85)
    if kind == 2:
        return (dy < r * 0.8) & (dy > -r) & (np.abs(dx) < (dy + r) * 0.6)
    if kind == 3:
        d = dy ** 2 + dx ** 2
        return (d < r ** 2) & (d > (0.55 * r) ** 2)
    return ((np.abs(dy) < r * 0.3) & (np.abs(dx) < r)) | ((np.abs(dx) < r * 0.3) & (np.abs(dy) < r))
