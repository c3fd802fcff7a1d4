"""BatchLoader: shapes and dtypes, determinism per (seed, epoch), independence from num_workers and rank
count, sharding, mid-epoch resume, two views, multi-crop, worker errors, early stop."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hjepa_mlx.data.loader import BatchLoader
from hjepa_mlx.data.synthetic import SyntheticDataset
from hjepa_mlx.data.transforms import TransformSpec, make_multicrop_transform, make_train_transform
from hjepa_mlx.errors import UserError

DS = SyntheticDataset(23, 5, 12, seed=0)
TF = make_train_transform(TransformSpec(color_jitter=0.3), 8)


def make(**kw):
    return BatchLoader(kw.pop("dataset", DS), kw.pop("batch_size", 4), kw.pop("transform", TF), seed=3, **kw)


def test_batches_shapes_dtypes_and_count():
    loader = make(views=2)
    batches = list(loader.epoch(0))
    assert len(loader) == len(batches) == 23 // 4
    b = batches[0]
    assert b.images.shape == b.images_view2.shape == (4, 8, 8, 3) and b.images.dtype == np.float32
    assert b.labels.dtype == np.int32 and b.dataset_ids.dtype == np.int32
    assert (b.dataset_ids == 0).all()
    order = np.random.default_rng([3, 0]).permutation(23)
    np.testing.assert_array_equal(np.concatenate([x.labels for x in batches]), order[:20] % 5)
    keep = make(drop_last=False)
    assert len(keep) == 6 and sum(len(x.labels) for x in keep.epoch(0)) == 23
    assert (make(shuffle=False).order(4) == np.arange(23)).all()


def test_deterministic_and_independent_of_workers():
    a, b = list(make(views=2).epoch(1)), list(make(views=2, num_workers=2, prefetch=3).epoch(1))
    for x, y in zip(a, b, strict=True):
        for k in x.keys():
            np.testing.assert_array_equal(getattr(x, k), getattr(y, k))
    assert not np.array_equal(a[0].images, a[0].images_view2)
    other_epoch = list(make().epoch(2))
    assert not np.array_equal(a[0].labels, other_epoch[0].labels)


def test_view_one_does_not_depend_on_views():
    one, two = list(make().epoch(0)), list(make(views=2).epoch(0))
    np.testing.assert_array_equal(one[1].images, two[1].images)


def test_ranks_partition_the_epoch_equally_and_augment_like_one_rank():
    whole = make(batch_size=1)
    full = list(whole.epoch(5))
    orders = [make(batch_size=1, rank=r, world_size=3).order(5) for r in range(3)]
    assert [len(o) for o in orders] == [7, 7, 7]                       # equal: no rank waits on another
    union = np.concatenate(orders)
    assert len(set(union.tolist())) == 21 and set(union.tolist()) <= set(range(23))
    for r in range(3):
        shard = make(batch_size=1, rank=r, world_size=3)
        assert len(shard) == 7
        for j, batch in enumerate(shard.epoch(5)):                    # global position j * 3 + r
            np.testing.assert_array_equal(batch.images, full[j * 3 + r].images)
    with pytest.raises(ValueError):
        make(rank=2, world_size=2)


@pytest.mark.parametrize("workers", [0, 2])
def test_start_batch_resumes_without_replaying(workers):
    full = list(make(num_workers=workers).epoch(7))
    tail = list(make(num_workers=workers).epoch(7, start_batch=3))
    assert len(tail) == len(full) - 3
    for x, y in zip(full[3:], tail, strict=True):
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.labels, y.labels)
    assert list(make().epoch(7, start_batch=len(full))) == []


def test_multicrop_batches():
    tf = make_multicrop_transform(TransformSpec(), 8, 4, num_local=2)
    b = next(make(transform=tf).epoch(0))
    assert [c.shape for c in b.crops] == [(4, 8, 8, 3)] * 2 + [(4, 4, 4, 3)] * 2
    assert b.images is b.crops[0]


class Broken:
    name, num_classes, labelled = "broken", 2, True

    def __len__(self):
        return 12

    def load(self, i):
        if i == 9:
            raise UserError("cannot decode image /data/x/9.jpg")
        return np.zeros((8, 8, 3), np.uint8), 0


def test_worker_errors_reach_the_caller_and_early_stop_leaves_no_threads():
    with pytest.raises(UserError, match="9.jpg"):
        list(make(dataset=Broken(), shuffle=False, num_workers=2).epoch(0))
    it = make(num_workers=2, prefetch=2).epoch(0)
    next(it)
    it.close()                                                          # consumer stops early
    assert not [t for t in threading.enumerate() if t.name.startswith("hjepa-data")]


def test_masks_travel_with_their_batch_whatever_the_workers_ranks_or_resume():
    """Batch b of epoch e carries the masks of micro-batch e * batches_per_epoch + b (the step's counter),
    this rank's rows of the global batch; the same with workers, on a resumed epoch and per rank."""
    from hjepa_mlx.masks import MaskSource, plan_masks, sample_masks

    plan = plan_masks(4, 4, num_masks=2, mask_scale=(0.1, 0.2), min_keep=2)
    source = MaskSource(plan, batch_size=4, seed=3, batches_per_epoch=5)
    serial = list(make(masks=source).epoch(2))
    for b, batch in enumerate(serial):
        want = sample_masks(plan, 4, 3, 2 * 5 + b)
        np.testing.assert_array_equal(batch.masks.context_idx, want.context_idx)
        np.testing.assert_array_equal(batch.masks.target_idx, want.target_idx)
        np.testing.assert_array_equal(batch.masks.context_idx_view2, want.context_idx_view2)
    threaded = list(make(masks=source, num_workers=3).epoch(2, start_batch=2))
    for x, y in zip(serial[2:], threaded, strict=True):
        np.testing.assert_array_equal(x.masks.context_idx, y.masks.context_idx)
    for rank in range(2):
        shard = MaskSource(plan, batch_size=4, seed=3, batches_per_epoch=5, rank=rank, world_size=2)
        part = list(make(masks=shard, batch_size=2, rank=rank, world_size=2).epoch(2))[1]
        np.testing.assert_array_equal(part.masks.target_idx, sample_masks(plan, 4, 3, 11).target_idx[rank::2])
