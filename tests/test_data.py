"""Dataset formats (tiny files in the real layouts), transforms (value checks), loader determinism and
sharding, multi-dataset sampling, bad data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hjepa_mlx.data.cifar import CIFARDataset
from hjepa_mlx.data.imagefolder import ImageFolderDataset, imagenet100
from hjepa_mlx.data.loader import BatchLoader
from hjepa_mlx.data.multi import MultiDataset
from hjepa_mlx.data.registry import build_dataset
from hjepa_mlx.data.stl10 import STL10Dataset
from hjepa_mlx.data.synthetic import SyntheticDataset
from hjepa_mlx.data.transforms import (MEAN, STD, TransformSpec, color_jitter, crop_box, make_eval_transform,
                                       make_train_transform, normalize, three_augment)
from hjepa_mlx.errors import UserError

RNG = np.random.default_rng(7)


# ---- formats

def write_cifar10(root: Path, n=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = RNG.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)          # channel planes R, G, B
        batch = {b"data": data, b"labels": list(range(n)), b"batch_label": b"b", b"filenames": [b"f"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return images


def test_cifar10_reads_the_python_pickles(tmp_path):
    images = write_cifar10(tmp_path)
    ds = CIFARDataset(tmp_path, "train", "cifar10")
    assert len(ds) == 30 and ds.num_classes == 10
    img, label = ds.load(2)
    np.testing.assert_array_equal(img, images[2])
    assert label == 2 and len(CIFARDataset(tmp_path, "test", "cifar10")) == 6


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        batch = {b"data": np.zeros((4, 3072), np.uint8), b"fine_labels": [5, 6, 7, 99], b"coarse_labels": [1, 2, 3, 19]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    assert CIFARDataset(tmp_path, "train", "cifar100").load(3)[1] == 99
    assert CIFARDataset(tmp_path, "train", "cifar100", label_type="coarse").load(3)[1] == 19


def test_restricted_unpickler_refuses_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(UserError, match="refusing to load .*print"):
        CIFARDataset(tmp_path, "train", "cifar10")


def test_missing_and_truncated_cifar(tmp_path):
    with pytest.raises(UserError, match="download_data.py cifar10"):
        CIFARDataset(tmp_path, "train", "cifar10")
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="data_batch_3"):
        CIFARDataset(tmp_path, "train", "cifar10")


def write_stl10(root: Path, n=3):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    images = RNG.integers(0, 255, (n, 96, 96, 3), dtype=np.uint8)
    for part in ("train", "test", "unlabeled"):
        images.transpose(0, 3, 2, 1).tofile(folder / f"{part}_X.bin")   # column-major per channel
        if part != "unlabeled":
            np.array([1, 5, 10], np.uint8)[:n].tofile(folder / f"{part}_y.bin")
    return images


def test_stl10_binaries_are_transposed_and_labels_shifted(tmp_path):
    images = write_stl10(tmp_path)
    ds = STL10Dataset(tmp_path, "train")
    img, label = ds.load(1)
    np.testing.assert_array_equal(img, images[1])
    assert label == 4
    both = STL10Dataset(tmp_path, "train+unlabeled")
    assert len(both) == 6 and both.load(4)[1] == -1 and not both.labelled


def test_stl10_truncated_file(tmp_path):
    write_stl10(tmp_path)
    x = tmp_path / "stl10_binary" / "train_X.bin"
    x.write_bytes(x.read_bytes()[:-5])
    with pytest.raises(UserError, match="train_X.bin"):
        STL10Dataset(tmp_path, "train")


def test_imagefolder_handles_modes_and_corrupt_files(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "dog").mkdir(parents=True)
    Image.fromarray(RNG.integers(0, 255, (10, 12), dtype=np.uint8), "L").save(tmp_path / "train/cat/a.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(tmp_path / "train/cat/b.PNG")
    Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(tmp_path / "train/dog/c.jpg")
    Image.new("P", (8, 8)).save(tmp_path / "train/dog/d.gif")
    (tmp_path / "train/dog/e.jpeg").write_bytes(b"not an image")
    ds = ImageFolderDataset(tmp_path, "train")
    assert ds.classes == ["cat", "dog"] and len(ds) == 5
    for i in range(4):
        img, _ = ds.load(i)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    with pytest.raises(UserError, match="e.jpeg"):
        ds.load(4)


def test_imagenet100_requires_its_classes(tmp_path):
    (tmp_path / "train" / "n01440764").mkdir(parents=True)
    with pytest.raises(UserError, match="lacks 100 of the 100 classes"):
        imagenet100(tmp_path, "train")
    with pytest.raises(UserError, match="expected the directory"):
        imagenet100(tmp_path, "val")


def test_synthetic_is_deterministic_and_labelled():
    a, b = SyntheticDataset(20, 10, 32, seed=3), SyntheticDataset(20, 10, 32, seed=3)
    np.testing.assert_array_equal(a.load(7)[0], b.load(7)[0])
    assert not np.array_equal(a.load(7)[0], SyntheticDataset(20, 10, 32, seed=4).load(7)[0])
    assert sorted({a.load(i)[1] for i in range(20)}) == list(range(10))


# ---- transforms

def test_crop_boxes_respect_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(300):
        top, left, h, w = crop_box(rng, 64, 80, (0.3, 0.7), (0.75, 1.333))
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 80
        assert 0.3 * 64 * 80 * 0.85 <= h * w <= 0.7 * 64 * 80 * 1.15
        assert 0.75 * 0.8 <= w / h <= 1.333 * 1.25


def test_flip_is_a_flip_and_zero_jitter_is_identity():
    img = RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    spec = TransformSpec(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), horizontal_flip=True, color_jitter=0.0)
    tf = make_train_transform(spec, 16)
    outs = [tf(img, np.random.default_rng(s)) for s in range(20)]
    plain, flipped = normalize(img), normalize(img[:, ::-1])
    assert any(np.allclose(o, plain, atol=1e-5) for o in outs)
    assert any(np.allclose(o, flipped, atol=1e-5) for o in outs)
    assert all(np.allclose(o, plain, atol=1e-5) or np.allclose(o, flipped, atol=1e-5) for o in outs)
    f = img.astype(np.float32)
    np.testing.assert_array_equal(color_jitter(f, np.random.default_rng(0), 0, 0, 0, 0), f)


def test_normalisation_and_three_augment_values():
    img = RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_allclose(normalize(img), (img / 255.0 - MEAN) / STD, rtol=1e-5, atol=1e-6)
    seen = set()
    for s in range(30):
        out = three_augment(img.astype(np.float32), np.random.default_rng(s))
        if np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2]):
            seen.add("gray")
        elif np.array_equal(out, np.where(img >= 128, 255 - img, img).astype(np.float32)):
            seen.add("solarize")
        else:
            seen.add("blur")
    assert seen == {"gray", "solarize", "blur"}


def test_eval_transform_centre_crops_and_deit3_pipeline_runs():
    img = RNG.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    out = make_eval_transform(24)(img)
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    spec = TransformSpec(strategy="deit3", crop_scale=(0.4, 1.0), color_jitter=0.4, auto_augment=True,
                         rand_aug_num_ops=2, rand_aug_magnitude=9, random_erasing_prob=1.0)
    a = make_train_transform(spec, 24)(img, np.random.default_rng(1))
    b = make_train_transform(spec, 24)(img, np.random.default_rng(1))
    assert a.shape == (24, 24, 3) and np.array_equal(a, b)


# ---- loader

def loader(**kw):
    ds = SyntheticDataset(40, 10, 16, seed=0)
    tf = make_train_transform(TransformSpec(color_jitter=0.3), 16)
    return BatchLoader(ds, 4, tf, seed=1, **kw)


def test_loader_shapes_and_determinism_independent_of_workers():
    a = list(loader(views=2).epoch(0))
    b = list(loader(views=2, num_workers=2).epoch(0))
    assert len(a) == 10 and a[0].images.shape == (4, 16, 16, 3) and a[0].images.dtype == np.float32
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.images_view2, y.images_view2)
    assert not np.array_equal(a[0].images, a[0].images_view2)      # two independent views
    assert not np.array_equal(a[0].labels, list(loader().epoch(1))[0].labels)


def test_ranks_partition_an_epoch_and_start_batch_resumes():
    seen = []
    for rank in range(2):
        for batch in loader(rank=rank, world_size=2).epoch(3):
            seen.extend(batch.labels.tolist())
    order = loader().order(3)
    assert len(seen) == 40
    whole = list(loader().epoch(0))
    np.testing.assert_array_equal(list(loader().epoch(0, start_batch=7))[0].images, whole[7].images)
    assert sorted(order.tolist()) == list(range(40))


def test_multi_dataset_weights_and_labels():
    a, b = SyntheticDataset(30, 10, 8, seed=0, name="a"), SyntheticDataset(10, 3, 8, seed=1, name="b")
    multi = MultiDataset([a, b], [0.5, 0.5], "weighted")
    order = multi.epoch_order(0, 0)
    assert len(order) == 40
    counts = multi.counts(order)
    assert abs(counts["a"] - 20) <= 8 and abs(counts["b"] - 20) <= 8          # weights, not sizes
    concat = MultiDataset([a, b], [0.5, 0.5], "concat")
    assert sorted(concat.epoch_order(0, 0).tolist()) == list(range(40))
    img, label, d = multi.load(35)
    assert d == 1 and label == b.load(5)[1]                                   # own label space kept


def test_registry_names():
    assert build_dataset("synthetic", "", "train", num_images=4, num_classes=2, image_size=8).name == "synthetic"
    with pytest.raises(UserError):
        build_dataset("cifar10", "/nonexistent", "train")


def test_multicrop_gives_global_and_local_crops():
    from hjepa_mlx.data.transforms import make_multicrop_transform
    from hjepa_mlx.masks import plan_masks, sample_masks

    img = RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    crops = make_multicrop_transform(TransformSpec(crop_scale=(0.4, 1.0)), 32, 16, num_local=3)(
        img, np.random.default_rng(0))
    assert [c.shape for c in crops] == [(32, 32, 3)] * 2 + [(16, 16, 3)] * 3
    assert not np.array_equal(crops[0], crops[1])
    # each crop size has its own mask plan (local crops: a 4x4 grid at patch 4)
    local = plan_masks(4, 4, num_masks=1, mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5), num_context_masks=1,
                       context_scale=(0.85, 1.0), min_keep=2, num_levels=1)
    assert sample_masks(local, 2, 0, 0).target_idx.max() < 16
