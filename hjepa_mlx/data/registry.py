"""Build a dataset by name. Splits: 'train', 'val' ('val' reads CIFAR's and STL-10's test split);
STL-10 also 'unlabeled', 'train+unlabeled' (self-supervised training) and 'train_labelled'."""

from __future__ import annotations

from hjepa_mlx.data.cifar import CIFARDataset
from hjepa_mlx.data.imagefolder import ImageFolderDataset, imagenet100
from hjepa_mlx.data.stl10 import STL10Dataset
from hjepa_mlx.data.synthetic import SyntheticDataset


def build_dataset(name: str, root: str, split: str = "train", **options):
    if name == "synthetic":
        return SyntheticDataset(**options)
    if name in ("cifar10", "cifar100"):
        return CIFARDataset(root, "train" if split == "train" else "test", variant=name, **options)
    if name == "stl10":
        split = {"val": "test", "train_labelled": "train"}.get(split, split)
        return STL10Dataset(root, split)
    if name == "imagefolder":
        return ImageFolderDataset(root, split)
    if name == "imagenet100":
        return imagenet100(root, split)
    raise ValueError(f"unknown dataset {name!r}")
