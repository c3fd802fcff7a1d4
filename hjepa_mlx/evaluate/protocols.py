"""The evaluation protocols run side by side on several encoders of the same labelled data.

Every report compares a trained encoder with two baselines an encoder must beat to be worth anything:
its own random initialisation, and the raw normalised pixels (`pixel_encoder`).
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx

from hjepa_mlx.evaluate.evaluators import evaluator, evaluator_names
from hjepa_mlx.evaluate.features import extract_features

PIXEL_SIDE = 32     # raw-pixel features are average-pooled to at most 32 x 32 x 3 = 3,072 numbers


def pixel_encoder(max_side: int = PIXEL_SIDE) -> Callable[[mx.array], mx.array]:
    """images (B, H, W, 3) -> (B, <= max_side^2 * 3): the normalised pixels, area-averaged by an integer
    factor when larger than max_side (224 px -> 32, 96 -> 32, 64 -> 32), flattened."""

    def encode(images: mx.array) -> mx.array:
        b, h, w, c = images.shape
        f = max(1, h // max_side, w // max_side)
        if f > 1:
            hh, ww = (h // f) * f, (w // f) * f
            images = images[:, :hh, :ww].reshape(b, hh // f, f, ww // f, f, c).mean(axis=(2, 4))
        return images.reshape(b, -1)
    return encode


def evaluate_features(tx, ty, vx, vy, protocols, *, k_values, temperature: float, seed: int) -> dict:
    """The metrics of the asked protocols (registered evaluators) for one encoder's features: train (tx, ty),
    test (vx, vy). They run in registration order whatever the order asked, so reports keep one column order."""
    asked = {name: evaluator(name) for name in protocols}     # an unknown name: UserError listing the known
    metrics = {}
    for name in evaluator_names():
        if name in asked:
            metrics.update(asked[name](tx, ty, vx, vy, k_values=k_values, temperature=temperature, seed=seed))
    return metrics


def compare_encoders(encoders: dict[str, Callable], train_loader, test_loader, protocols, *, k_values,
                     temperature: float, seed: int, max_train: int | None = None,
                     max_test: int | None = None, say=None) -> dict[str, dict]:
    """{row name: metrics} for each encode_fn (images -> (B, D)) on the same train/test images; `say`
    (e.g. print) is told what is happening."""
    rows = {}
    say = say or (lambda text: None)
    for name, encode in encoders.items():
        say(f"{name}: encoding up to {max_train} train images ...")
        tx, ty, _ = extract_features(encode, train_loader.epoch(0), max_images=max_train)
        say(f"{name}: encoding up to {max_test} test images ...")
        vx, vy, _ = extract_features(encode, test_loader.epoch(0), max_images=max_test)
        say(f"{name}: {', '.join(protocols)} on {len(tx)} train / {len(vx)} test features ...")
        rows[name] = evaluate_features(tx, ty, vx, vy, protocols, k_values=k_values, temperature=temperature,
                                       seed=seed)
        mx.clear_cache()
    return rows

