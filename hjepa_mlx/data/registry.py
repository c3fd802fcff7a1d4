"""The datasets a config can name: one `DatasetEntry` each, registered with `register_dataset`.

A dataset (what `entry.open` returns) offers len(ds), ds.load(i) -> (uint8 HWC RGB, int label),
ds.num_classes, ds.name and ds.labelled. The built-ins are registered at the end of this module (here
rather than in their own modules, so importing any one of them cannot change the order names are listed).

Built-in names and splits:
- synthetic: any split (options num_images, num_classes, image_size, seed; the caller picks a different
  seed for held-out data).
- cifar10, cifar100: 'train', 'val' (= the official 'test' split; 'test' is accepted too). Option
  label_type='fine'|'coarse' (CIFAR-100).
- stl10: 'train' (5 K labelled), 'train_labelled' (the same), 'unlabeled' (100 K), 'train+unlabeled'
  (105 K, for self-supervised training), 'val' (= 'test', 8 K).
- imagefolder, imagenet100: 'train', 'val' (the sub-directories of root).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hjepa_mlx.data.cifar import CIFARDataset
from hjepa_mlx.data.imagefolder import ImageFolderDataset, imagenet100
from hjepa_mlx.data.stl10 import STL10Dataset
from hjepa_mlx.data.synthetic import SyntheticDataset
from hjepa_mlx.errors import UserError
from hjepa_mlx.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    """name: what data.dataset / data.datasets[i].name say.
    open(root, split, **options) -> dataset: `split` already translated through `splits`.
    splits: the split names a caller may ask for -> the split `open` receives; None accepts any split.
    nominal_train_size: images in ssl_train_split, shown by --dry-run before the files are read (None:
      unknown until read).
    ssl_train_split: the split self-supervised training reads (STL-10 adds its unlabeled images).
    labelled_train_split: the labelled split k-NN and linear probes use as their train set.
    reads_files: False for images made in memory (synthetic, test doubles): opening is instant, so the
      plan opens the dataset for its exact size instead of showing a nominal one.
    """
    name: str
    open: Callable[..., object]
    splits: Mapping[str, str] | None
    nominal_train_size: int | None = None
    ssl_train_split: str = "train"
    labelled_train_split: str = "train"
    reads_files: bool = True


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(entry: DatasetEntry) -> None:
    DATASETS.add(entry.name, entry)


def unregister_dataset(name: str) -> None:
    DATASETS.remove(name)


def dataset_entry(name: str) -> DatasetEntry:
    """The entry named `name`; UserError listing the known names otherwise."""
    return DATASETS.get(name)


def dataset_names() -> tuple[str, ...]:
    return DATASETS.names()


def build_dataset(name: str, root: str, split: str = "train", **options):
    """The dataset `name` (module docstring) read from directory `root`, split `split`.

    options: explicit keyword arguments of the dataset class (synthetic: num_images, num_classes,
    image_size, seed, name; cifar: label_type; imagefolder: classes, name).
    """
    entry = dataset_entry(name)
    if entry.splits is not None:
        if split not in entry.splits:
            raise UserError(f"{name} has no split {split!r}; use one of {', '.join(entry.splits)}")
        split = entry.splits[split]
    return entry.open(root, split, **options)


_TRAIN_VAL = {"train": "train", "val": "val"}
_OFFICIAL_TEST = {"train": "train", "val": "test", "test": "test"}   # no validation split of their own

register_dataset(DatasetEntry("synthetic", lambda root, split, **o: SyntheticDataset(**o), None, reads_files=False))
register_dataset(DatasetEntry("cifar10", lambda root, split, **o: CIFARDataset(root, split, variant="cifar10", **o),
                              _OFFICIAL_TEST, nominal_train_size=50_000))
register_dataset(DatasetEntry("cifar100", lambda root, split, **o: CIFARDataset(root, split, variant="cifar100", **o),
                              _OFFICIAL_TEST, nominal_train_size=50_000))
# Self-supervised training reads train + unlabeled (105 K, as the seed documents count it); the probes the
# 5 K labelled train images ('train_labelled', an explicit name for 'train').
register_dataset(DatasetEntry("stl10", STL10Dataset,
                              {"train": "train", "train_labelled": "train", "unlabeled": "unlabeled",
                               "train+unlabeled": "train+unlabeled", "val": "test", "test": "test"},
                              nominal_train_size=105_000, ssl_train_split="train+unlabeled",
                              labelled_train_split="train_labelled"))
register_dataset(DatasetEntry("imagefolder", ImageFolderDataset, _TRAIN_VAL))
register_dataset(DatasetEntry("imagenet100", imagenet100, _TRAIN_VAL, nominal_train_size=126_689))
