"""Feature extraction: every row kept in order with its label, limits honoured; token pooling."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.errors import UserError
from hjepa_mlx.evaluate.features import extract_features, pooled_tokens


def batches(n_batches=4, b=3, with_ids=True):
    rng = np.random.default_rng(0)
    for i in range(n_batches):
        batch = {"images": rng.standard_normal((b, 4, 4, 3)).astype(np.float32),
                 "labels": np.arange(i * b, (i + 1) * b)}
        if with_ids:
            batch["dataset_ids"] = np.full(b, i % 2)
        yield batch


def encode(images):                      # (B, H, W, 3) -> (B, 3): the per-channel mean
    return images.mean(axis=(1, 2))


def test_features_labels_and_ids_line_up_with_the_batches():
    feats, labels, ids = extract_features(encode, batches())
    expected = np.concatenate([b["images"].astype(np.float64).mean(axis=(1, 2)) for b in batches()])
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert feats.dtype == np.float32 and feats.shape == (12, 3)
    np.testing.assert_array_equal(labels, np.arange(12))
    np.testing.assert_array_equal(ids, np.repeat([0, 1, 0, 1], 3))


def test_limits_and_missing_dataset_ids():
    feats, labels, ids = extract_features(encode, batches(with_ids=False), max_images=7)
    assert feats.shape == (7, 3) and list(labels) == list(range(7)) and not ids.any()
    feats, labels, _ = extract_features(encode, batches(), max_batches=2)
    assert feats.shape == (6, 3) and list(labels) == list(range(6))
    feats, labels, ids = extract_features(encode, iter([]))
    assert feats.shape == (0, 0) and labels.shape == ids.shape == (0,)


def test_unlabelled_batches_are_a_user_error():
    with pytest.raises(UserError, match="'labels'"):
        extract_features(encode, [{"images": np.zeros((2, 4, 4, 3), np.float32)}])


def test_pooled_tokens_average_the_tokens_of_the_level_grid():
    tokens = mx.array(np.random.default_rng(1).standard_normal((2, 6, 5)).astype(np.float32))
    # A 5x3 patch grid has ceil(5/2) x ceil(3/2) = 3 x 2 = 6 cells at level 1.
    np.testing.assert_allclose(np.array(pooled_tokens(tokens, (5, 3), level=1)), np.array(tokens).mean(axis=1),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="level 0"):
        pooled_tokens(tokens, (5, 3), level=0)
