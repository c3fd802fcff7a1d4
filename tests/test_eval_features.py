"""Feature extraction: every row kept in order with its label, limits honoured; token pooling."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.batch import Batch
from hjepa_mlx.errors import UserError
from hjepa_mlx.evaluate.features import extract_features, level_features


def batches(n_batches=4, b=3, with_ids=True):
    rng = np.random.default_rng(0)
    for i in range(n_batches):
        yield Batch(images=rng.standard_normal((b, 4, 4, 3)).astype(np.float32),
                    labels=np.arange(i * b, (i + 1) * b), dataset_ids=np.full(b, i % 2) if with_ids else None)


def encode(images):                      # (B, H, W, 3) -> (B, 3): the per-channel mean
    return images.mean(axis=(1, 2))


def test_features_labels_and_ids_line_up_with_the_batches():
    feats, labels, ids = extract_features(encode, batches())
    expected = np.concatenate([b.images.astype(np.float64).mean(axis=(1, 2)) for b in batches()])
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
        extract_features(encode, [Batch(images=np.zeros((2, 4, 4, 3), np.float32), labels=None, dataset_ids=None)])


def _np_level_features(tokens, grid, level):
    """float64 reference: cell by cell with explicit loops."""
    b, _, d = tokens.shape
    h, w = grid
    grid_tokens = tokens.reshape(b, h, w, d)
    s = 2 ** level
    cells = []
    for r in range(0, h, s):
        for c in range(0, w, s):
            mean = grid_tokens[:, r:r + s, c:c + s].mean(axis=(1, 2))
            cells.append(mean / np.linalg.norm(mean, axis=-1, keepdims=True) if level else mean)
    return np.mean(cells, axis=0)


@pytest.mark.parametrize("grid,level", [((4, 4), 0), ((4, 4), 1), ((5, 3), 1), ((5, 3), 2), ((8, 8), 2)])
def test_level_features_match_numpy(grid, level):
    tokens = np.random.default_rng(1).standard_normal((3, grid[0] * grid[1], 6))
    out = level_features(mx.array(tokens.astype(np.float32)), grid, level)
    np.testing.assert_allclose(np.array(out), _np_level_features(tokens, grid, level), rtol=1e-5, atol=1e-6)


def test_level_features_differ_between_levels_and_check_the_grid():
    tokens = mx.array(np.random.default_rng(2).standard_normal((2, 16, 6)).astype(np.float32))
    assert not np.allclose(np.array(level_features(tokens, (4, 4), 0)), np.array(level_features(tokens, (4, 4), 1)))
    with pytest.raises(ValueError, match="5x3"):
        level_features(tokens, (5, 3), 0)
