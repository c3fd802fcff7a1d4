"""Features of a frozen encoder over a labelled split: average-pooled patch tokens, batched and compiled."""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def extract_features(encode_fn, batches, *, max_images: int | None = None):
    """encode_fn(images (B,H,W,3)) -> (B, D) mx.array; batches yield dicts of NumPy arrays.
    Returns (features float32 (n, D), labels (n,), dataset_ids (n,))."""
    feats, labels, ids = [], [], []
    seen = 0
    for batch in batches:
        out = encode_fn(mx.array(batch["images"]))
        mx.eval(out)
        feats.append(np.array(out, dtype=np.float32))
        labels.append(batch["labels"])
        ids.append(batch.get("dataset_ids", np.zeros(len(batch["labels"]), np.int32)))
        seen += len(batch["labels"])
        if max_images and seen >= max_images:
            break
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int32)
    n = max_images or seen
    return np.concatenate(feats)[:n], np.concatenate(labels)[:n], np.concatenate(ids)[:n]


def make_pooled_encoder(model, target_params):
    """Compiled images -> mean over patch tokens of the (frozen) target encoder, after its layer norm."""
    def encode(images):
        return model.encode_target(target_params, images).mean(axis=1)
    return mx.compile(encode)
