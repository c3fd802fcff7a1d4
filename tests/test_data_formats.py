"""Datasets read tiny files written here in the real on-disk formats; bad data gives errors naming the file."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hjepa_mlx.data.cifar import CIFARDataset, RestrictedUnpickler
from hjepa_mlx.data.imagefolder import ImageFolderDataset, imagenet100
from hjepa_mlx.data.imagenet100_wnids import IMAGENET100_WNIDS
from hjepa_mlx.data.registry import build_dataset
from hjepa_mlx.data.stl10 import STL10Dataset
from hjepa_mlx.data.synthetic import SyntheticDataset
from hjepa_mlx.errors import UserError


def numpy1_pickle(obj) -> bytes:
    """A protocol-2 pickle as the official (Python 2, numpy 1.x) CIFAR files name numpy's globals."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_cifar(root: Path, variant: str, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = {}
    if variant == "cifar10":
        folder, files = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    else:
        folder, files = root / "cifar-100-python", ["train", "test"]
    folder.mkdir(parents=True)
    for f in files:
        img = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        data = np.stack([img[..., c].reshape(n, 1024) for c in range(3)], axis=1).reshape(n, 3072)  # R, G, B
        batch = {b"data": data, b"batch_label": b"x", b"filenames": [b"f.png"] * n}
        if variant == "cifar10":
            batch[b"labels"] = [int(v) for v in rng.integers(0, 10, n)]
        else:
            batch[b"fine_labels"] = [int(v) for v in rng.integers(0, 100, n)]
            batch[b"coarse_labels"] = [int(v) for v in rng.integers(0, 20, n)]
        (folder / f).write_bytes(numpy1_pickle(batch))
        images[f] = (img, batch)
    return images


def test_cifar10_official_layout_pixels_and_labels(tmp_path):
    written = write_cifar(tmp_path, "cifar10", 3)
    train = CIFARDataset(tmp_path, "train", "cifar10")
    assert len(train) == 15 and train.num_classes == 10 and train.labelled and train.name == "cifar10"
    img, label = train.load(7)                                   # batch 3, row 1
    ref_img, ref_batch = written["data_batch_3"]
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    np.testing.assert_array_equal(img, ref_img[1])
    assert label == ref_batch[b"labels"][1]
    val = build_dataset("cifar10", str(tmp_path), "val")        # 'val' reads the official test split
    np.testing.assert_array_equal(val.load(2)[0], written["test_batch"][0][2])


def test_cifar100_fine_default_and_coarse(tmp_path):
    written = write_cifar(tmp_path, "cifar100", 4)
    fine = build_dataset("cifar100", str(tmp_path), "train")
    coarse = build_dataset("cifar100", str(tmp_path), "train", label_type="coarse")
    batch = written["train"][1]
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert [fine.load(i)[1] for i in range(4)] == batch[b"fine_labels"]
    assert [coarse.load(i)[1] for i in range(4)] == batch[b"coarse_labels"]


def test_unpickler_refuses_os_system_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2))
    with pytest.raises(UserError, match=r"test_batch.*refusing to load (posix|os)\.system"):
        CIFARDataset(tmp_path, "test", "cifar10")
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    b"cnumpy\nload\n(Vx\ntR.",                                     # numpy, but not an array constructor
    b"c_codecs\nencode\n(Vabc\nVrot13\ntR.",                        # _codecs.encode other than latin-1
    b"cbuiltins\neval\n(V1\ntR.",
])
def test_unpickler_allows_only_array_globals(payload):
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()


def test_cifar_missing_truncated_and_inconsistent(tmp_path):
    with pytest.raises(UserError) as err:
        CIFARDataset(tmp_path, "train", "cifar100")
    msg = str(err.value)
    assert "cifar-100-python" in msg and f"python scripts/download_data.py cifar100 --root {tmp_path}" in msg
    write_cifar(tmp_path, "cifar10", 2)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(numpy1_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}))
    with pytest.raises(UserError, match="test_batch: 2 images but 1 labels"):
        CIFARDataset(tmp_path, "test", "cifar10")
    path.write_bytes(numpy1_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}))
    with pytest.raises(UserError, match="test_batch: labels outside 0..9"):
        CIFARDataset(tmp_path, "test", "cifar10")
    path.write_bytes(b"\x80\x02}q\x00(U")                         # cut off mid-stream
    with pytest.raises(UserError, match="test_batch is not a valid CIFAR batch"):
        CIFARDataset(tmp_path, "test", "cifar10")


def write_stl10(root: Path, counts=None, seed=0):
    counts = counts or {"train": 3, "test": 2, "unlabeled": 4}
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    for part, n in counts.items():
        img = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        # the official layout: per image, per channel, column-major (x slowest): [c][x][y]
        img.transpose(0, 3, 2, 1).tofile(folder / f"{part}_X.bin")
        labels = rng.integers(1, 11, n).astype(np.uint8)
        if part != "unlabeled":
            labels.tofile(folder / f"{part}_y.bin")
        out[part] = (img, labels)
    return out


def test_stl10_transpose_labels_splits_and_memmap(tmp_path):
    written = write_stl10(tmp_path)
    train = STL10Dataset(tmp_path, "train")
    assert isinstance(train.parts[0][0], np.memmap)
    img, label = train.load(2)
    np.testing.assert_array_equal(img, written["train"][0][2])
    assert label == written["train"][1][2] - 1 and train.labelled
    # a hand-checkable pixel: row y=1, column x=0, channel 2 sits at byte c*9216 + x*96 + y
    raw = np.fromfile(tmp_path / "stl10_binary" / "train_X.bin", np.uint8)[:3 * 96 * 96]
    assert img.shape == (96, 96, 3) and train.load(0)[0][1, 0, 2] == raw[2 * 9216 + 0 * 96 + 1]
    val = build_dataset("stl10", str(tmp_path), "val")
    assert len(val) == 2 and val.labelled
    both = build_dataset("stl10", str(tmp_path), "train+unlabeled")
    assert len(both) == 7 and not both.labelled and both.load(3)[1] == -1
    np.testing.assert_array_equal(both.load(6)[0], written["unlabeled"][0][3])
    unl = build_dataset("stl10", str(tmp_path), "unlabeled")
    assert {unl.load(i)[1] for i in range(4)} == {-1}


def test_stl10_missing_labels_and_bad_sizes(tmp_path):
    with pytest.raises(UserError, match=r"download_data.py stl10 --root"):
        STL10Dataset(tmp_path, "train")
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(UserError, match="test_y.bin is missing"):
        STL10Dataset(tmp_path, "test")
    np.array([1, 2], np.uint8).tofile(tmp_path / "stl10_binary" / "train_y.bin")     # 2 labels, 3 images
    with pytest.raises(UserError, match="train_y.bin: 2 labels for the 3 images"):
        STL10Dataset(tmp_path, "train")
    with pytest.raises(UserError, match="unknown split"):
        STL10Dataset(tmp_path, "everything")


def test_imagefolder_extensions_modes_and_labels(tmp_path):
    for c in ("b_dog", "a_cat"):
        (tmp_path / "val" / c).mkdir(parents=True)
    Image.new("RGB", (5, 4), (10, 20, 30)).save(tmp_path / "val/a_cat/x.JPG", quality=100)
    Image.new("RGBA", (4, 4), (200, 100, 0, 128)).save(tmp_path / "val/a_cat/y.Png")
    Image.new("L", (3, 3), 77).save(tmp_path / "val/b_dog/z.bmp")
    Image.fromarray(np.full((2, 2), 40000, np.uint16)).save(tmp_path / "val/b_dog/w16.png")
    (tmp_path / "val/b_dog/notes.txt").write_text("not an image")
    ds = build_dataset("imagefolder", str(tmp_path), "val")
    assert ds.classes == ["a_cat", "b_dog"] and len(ds) == 4 and ds.num_classes == 2
    images = {Path(p).name: ds.load(i) for i, (p, _) in enumerate(ds.samples)}
    assert images["x.JPG"][1] == 0 and images["z.bmp"][1] == 1
    assert np.abs(images["x.JPG"][0].astype(int) - [10, 20, 30]).max() <= 3
    # alpha 128/255 composited on black: 200 * 128 / 255 = 100.4
    np.testing.assert_allclose(images["y.Png"][0][0, 0], [100, 50, 0], atol=1)
    assert (images["z.bmp"][0] == 77).all() and images["z.bmp"][0].shape == (3, 3, 3)
    assert (images["w16.png"][0] == round(40000 / 65535 * 255)).all()


def test_imagefolder_truncated_jpeg_names_the_file(tmp_path):
    (tmp_path / "train" / "c").mkdir(parents=True)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "train/c/cut.jpg").write_bytes(buf.getvalue()[:300])
    ds = ImageFolderDataset(tmp_path, "train")
    with pytest.raises(UserError, match="cut.jpg"):
        ds.load(0)


def test_imagenet100_fixed_wnids(tmp_path):
    assert len(IMAGENET100_WNIDS) == 100 == len(set(IMAGENET100_WNIDS))
    assert IMAGENET100_WNIDS[:2] == ("n02869837", "n01749939")            # CMC's order = label order
    split = tmp_path / "train"
    for w in IMAGENET100_WNIDS[:97]:
        (split / w).mkdir(parents=True)
    (split / "n99999999").mkdir()                                        # extra class: ignored
    with pytest.raises(UserError, match=r"lacks 3 of the 100 classes \(first: n03424325, n01855672"):
        imagenet100(tmp_path, "train")
    for w in IMAGENET100_WNIDS[97:]:
        (split / w).mkdir()
    Image.new("RGB", (2, 2)).save(split / IMAGENET100_WNIDS[5] / "a.JPEG")
    Image.new("RGB", (2, 2)).save(split / "n99999999" / "b.JPEG")
    with pytest.raises(UserError, match="holds no images"):          # an empty class folder is refused
        build_dataset("imagenet100", str(tmp_path), "train")
    for w in IMAGENET100_WNIDS:
        if w != IMAGENET100_WNIDS[5]:
            Image.new("RGB", (2, 2)).save(split / w / "a.JPEG")
    ds = build_dataset("imagenet100", str(tmp_path), "train")
    assert ds.num_classes == 100 and len(ds) == 100 and ds.load(5)[1] == 5 and ds.name == "imagenet100"


def test_registry_names_and_splits(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'mnist'; known: synthetic, cifar10"):
        build_dataset("mnist", str(tmp_path))
    with pytest.raises(UserError, match="cifar10 has no split 'unlabeled'"):
        build_dataset("cifar10", str(tmp_path), "unlabeled")
    with pytest.raises(UserError, match="expected the directory"):
        build_dataset("imagefolder", str(tmp_path), "train")


def test_synthetic_lazy_deterministic_any_size():
    ds = SyntheticDataset(num_images=1000, num_classes=7, image_size=24, seed=5)
    a = [ds.load(i)[0] for i in (9, 3)]
    fresh = SyntheticDataset(1000, 7, 24, seed=5)
    np.testing.assert_array_equal(a[1], fresh.load(3)[0])                 # order of access is irrelevant
    np.testing.assert_array_equal(a[0], fresh.load(9)[0])
    assert a[0].shape == (24, 24, 3) and a[0].dtype == np.uint8
    assert [ds.load(i)[1] for i in range(14)] == [i % 7 for i in range(14)] and ds.num_classes == 7
    with pytest.raises(IndexError):
        ds.load(1000)
    with pytest.raises(UserError):
        SyntheticDataset(0)


def test_synthetic_class_is_shape_not_colour():
    # Same class: same shape and texture, different colours; the foreground mask is what separates them.
    ds = SyntheticDataset(40, 10, 32, seed=0)
    means = np.array([ds.load(i)[0].reshape(-1, 3).mean(0) for i in range(40)])
    labels = np.arange(40) % 10
    within = np.mean([means[labels == c].std(0).mean() for c in range(10)])
    between = means.reshape(4, 10, 3).mean(0).std(0).mean()
    assert within > between * 0.5                                        # colour does not give the class away
