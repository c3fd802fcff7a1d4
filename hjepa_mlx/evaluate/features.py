"""Features of a frozen encoder over a labelled split, gathered into host NumPy arrays for k-NN, the linear
probe and the quality metrics.

The encoder is the caller's: `encode_fn(images (B, H, W, 3) mx.array) -> (B, D) mx.array` (the lead wires the
frozen target encoder + `pooled_tokens`, compiled). This module only batches, evaluates and collects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import mlx.core as mx
import numpy as np

from hjepa_mlx.errors import UserError


def extract_features(encode_fn: Callable[[mx.array], mx.array], batches: Iterable[dict], *,
                     max_batches: int | None = None, max_images: int | None = None):
    """Run `encode_fn` over `batches` and collect the outputs.

    Args:
      encode_fn: images (B, H, W, 3) mx.array -> features (B, D) mx.array (frozen, ideally compiled).
      batches: iterable of dicts with NumPy `images` (B, H, W, 3), `labels` (B,) ints and optionally
        `dataset_ids` (B,) ints (zeros when absent).
      max_batches: stop after this many batches (None: all).
      max_images: keep at most this many rows (None: all); the last batch is truncated.

    Returns (features float32 (n, D), labels int64 (n,), dataset_ids int32 (n,)); with no batches,
    (0, 0), (0,), (0,) arrays.
    """
    feats, labels, ids = [], [], []
    pending = None          # the previous batch's output, evaluated asynchronously while the next is loaded
    seen = 0
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        if max_images is not None and seen >= max_images:
            break
        if "images" not in batch or "labels" not in batch:
            raise UserError(f"feature extraction needs batches with 'images' and 'labels'; got keys "
                            f"{sorted(batch)} (is this split labelled?)")
        y = np.asarray(batch["labels"]).reshape(-1)
        if len(y) != len(batch["images"]):
            raise UserError(f"a batch has {len(batch['images'])} images but {len(y)} labels; the dataset is "
                            "inconsistent, check its label file")
        out = encode_fn(mx.array(batch["images"]))
        if out.ndim != 2 or out.shape[0] != len(y):
            raise ValueError(f"encode_fn must return (B, D) = ({len(y)}, D), got {tuple(out.shape)}")
        mx.async_eval(out)
        if pending is not None:
            feats.append(np.array(pending, dtype=np.float32))
        pending = out
        labels.append(y.astype(np.int64))
        ids.append(np.asarray(batch.get("dataset_ids", np.zeros(len(y))), dtype=np.int32).reshape(-1))
        seen += len(y)
    if pending is not None:
        feats.append(np.array(pending, dtype=np.float32))
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int32)
    n = seen if max_images is None else min(seen, max_images)
    return np.concatenate(feats)[:n], np.concatenate(labels)[:n], np.concatenate(ids)[:n]


def pooled_tokens(tokens: mx.array, grid: tuple[int, int], level: int = 0) -> mx.array:
    """Image features = mean over all tokens of one hierarchy level: (B, N, D) -> (B, D).

    `level` does not pool anything here: the caller passes the tokens *of* that level (level 0: the
    H x W patch tokens; level l: the ceil(H/2^l) x ceil(W/2^l) cell tokens the model produced for it),
    and this checks that N matches that grid. Why not derive level-l features by re-pooling level-0
    tokens? Plain averaging of averages gives back the level-0 mean, so every level would be identical.

    Args:
      tokens: (B, N, D) tokens of level `level`.
      grid: (H, W) patch grid of level 0.
      level: hierarchy level of `tokens` (0 = patches).
    """
    h, w = math.ceil(grid[0] / 2 ** level), math.ceil(grid[1] / 2 ** level)
    if tokens.ndim != 3 or tokens.shape[1] != h * w:
        raise ValueError(f"level {level} of a {grid[0]}x{grid[1]} grid has {h}x{w}={h * w} tokens; "
                         f"got tokens of shape {tuple(tokens.shape)}")
    return tokens.mean(axis=1)


def make_pooled_encoder(model, target_params):
    """Compiled images -> mean over patch tokens of the (frozen) target encoder, after its layer norm.
    (Used by the in-training k-NN; `model.encode_target(params, images) -> (B, N, D)`.)"""
    def encode(images):
        return model.encode_target(target_params, images).mean(axis=1)
    return mx.compile(encode)
