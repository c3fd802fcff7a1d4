"""Build a dataset by name.

Names and splits:
- synthetic: any split (options num_images, num_classes, image_size, seed; the caller picks a different
  seed for held-out data).
- cifar10, cifar100: 'train', 'val' (= the official 'test' split; 'test' is accepted too). Option
  label_type='fine'|'coarse' (CIFAR-100).
- stl10: 'train' (5 K labelled), 'train_labelled' (the same), 'unlabeled' (100 K), 'train+unlabeled'
  (105 K, for self-supervised training), 'val' (= 'test', 8 K).
- imagefolder, imagenet100: 'train', 'val' (the sub-directories of root).
"""

from __future__ import annotations

from hjepa_mlx.data.cifar import CIFARDataset
from hjepa_mlx.data.imagefolder import ImageFolderDataset, imagenet100
from hjepa_mlx.data.stl10 import STL10Dataset
from hjepa_mlx.data.synthetic import SyntheticDataset
from hjepa_mlx.errors import UserError

NAMES = ("synthetic", "cifar10", "cifar100", "stl10", "imagefolder", "imagenet100")
_SPLITS = {"cifar10": {"train": "train", "val": "test", "test": "test"},
           "cifar100": {"train": "train", "val": "test", "test": "test"},
           "stl10": {"train": "train", "train_labelled": "train", "unlabeled": "unlabeled",
                     "train+unlabeled": "train+unlabeled", "val": "test", "test": "test"},
           "imagefolder": {"train": "train", "val": "val"},
           "imagenet100": {"train": "train", "val": "val"}}


def build_dataset(name: str, root: str, split: str = "train", **options):
    """The dataset `name` (module docstring) read from directory `root`, split `split`.

    options: explicit keyword arguments of the dataset class (synthetic: num_images, num_classes,
    image_size, seed, name; cifar: label_type; imagefolder: classes, name). Every dataset offers len(ds),
    ds.load(i) -> (uint8 HWC RGB, int label), ds.num_classes, ds.name, ds.labelled.
    """
    if name not in NAMES:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")
    if name == "synthetic":
        return SyntheticDataset(**options)
    splits = _SPLITS[name]
    if split not in splits:
        raise UserError(f"{name} has no split {split!r}; use one of {', '.join(splits)}")
    split = splits[split]
    if name in ("cifar10", "cifar100"):
        return CIFARDataset(root, split, variant=name, **options)
    if name == "stl10":
        return STL10Dataset(root, split, **options)
    if name == "imagefolder":
        return ImageFolderDataset(root, split, **options)
    return imagenet100(root, split, **options)
