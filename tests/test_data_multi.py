"""MultiDataset: epoch length, weights, balanced and concat sampling, coverage within a dataset,
determinism, per-dataset labels and ids through the loader."""

from __future__ import annotations

import numpy as np
import pytest

from hjepa_mlx.data.loader import BatchLoader
from hjepa_mlx.data.multi import MultiDataset
from hjepa_mlx.data.synthetic import SyntheticDataset
from hjepa_mlx.data.transforms import make_eval_transform
from hjepa_mlx.errors import UserError

A = SyntheticDataset(300, 10, 8, seed=0, name="a")
B = SyntheticDataset(100, 3, 8, seed=1, name="b")


def test_weighted_sampling_follows_normalised_weights():
    multi = MultiDataset([A, B], [1.0, 3.0], "weighted")
    np.testing.assert_allclose(multi.weights, [0.25, 0.75])
    order = multi.epoch_order(0, 0)
    assert len(order) == len(multi) == 400
    share_b = multi.counts(order)["b"] / 400
    assert abs(share_b - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 400)      # 4 binomial standard deviations
    np.testing.assert_array_equal(order, multi.epoch_order(0, 0))
    assert not np.array_equal(order, multi.epoch_order(0, 1)) and not np.array_equal(order, multi.epoch_order(1, 0))


def test_balanced_ignores_sizes_and_weights():
    multi = MultiDataset([A, B], [9.0, 1.0], "balanced")
    np.testing.assert_allclose(multi.weights, [0.5, 0.5])
    share_b = multi.counts(multi.epoch_order(2, 0))["b"] / 400
    assert abs(share_b - 0.5) < 4 * np.sqrt(0.25 / 400)


def test_images_repeat_only_when_their_dataset_is_oversampled():
    order = MultiDataset([A, B], [1.0, 3.0], "weighted").epoch_order(0, 0)
    ids = np.searchsorted([0, 300, 400], order, side="right") - 1
    from_a = order[ids == 0]
    assert len(set(from_a.tolist())) == len(from_a)                   # A under-sampled: no repeats
    from_b = order[ids == 1] - 300                                    # B drawn ~300 times from 100 images
    counts = np.bincount(from_b, minlength=100)
    k = len(from_b) // 100
    assert counts.min() >= k and counts.max() <= k + 1                # whole laps of permutations


def test_concat_visits_every_image_once():
    multi = MultiDataset([A, B], None, "concat")
    assert sorted(multi.epoch_order(0, 3).tolist()) == list(range(400))
    assert (multi.epoch_order(0, 3, shuffle=False) == np.arange(400)).all()


def test_labels_stay_per_dataset_and_ids_travel_with_samples():
    multi = MultiDataset([A, B], [1.0, 1.0], "weighted")
    assert multi.num_classes == (10, 3) and multi.name == "a+b"
    img, label, d = multi.load(305)
    assert d == 1 and label == B.load(5)[1] and np.array_equal(img, B.load(5)[0])
    loader = BatchLoader(multi, 16, make_eval_transform(8, crop_fraction=1.0), seed=0)
    order = multi.epoch_order(0, 0)
    batch = next(loader.epoch(0))
    expect = [multi.load(int(i)) for i in order[:16]]
    np.testing.assert_array_equal(batch.dataset_ids, [e[2] for e in expect])
    np.testing.assert_array_equal(batch.labels, [e[1] for e in expect])
    assert set(batch.dataset_ids.tolist()) == {0, 1}


@pytest.mark.parametrize("weights,strategy", [([1.0], "weighted"), ([1.0, -1.0], "weighted"),
                                              ([0.0, 0.0], "weighted"), ([1.0, 1.0], "random")])
def test_bad_weights_or_strategy(weights, strategy):
    with pytest.raises(UserError):
        MultiDataset([A, B], weights, strategy)
