"""CIFAR-10 / CIFAR-100 from the official python pickles, read with a restricted unpickler.

Layout: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch} and <root>/cifar-100-python/{train,test}.
Each file is a protocol-2 pickle of a dict: b'data' (N x 3072 uint8: R, G, B planes of 32 x 32, row-major)
and b'labels' (CIFAR-10) or b'fine_labels' / b'coarse_labels' (CIFAR-100).
Pickles can run arbitrary code when loaded, so only the few globals a CIFAR batch needs may be resolved.
"""

from __future__ import annotations

import _codecs
import pickle
from pathlib import Path

import numpy as np

from hjepa_mlx.errors import UserError

# What a numpy array in a pickle needs (numpy 1.x writes numpy.core, numpy 2.x numpy._core).
_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype")}

DOWNLOAD_HINT = "python scripts/download_data.py {name} --root {root}"


def _latin1_encode(text, encoding="latin1", errors="strict"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, 'latin1'); allow only that.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return _codecs.encode(text, encoding, errors)


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only numpy's array-reconstruction globals (and latin-1 bytes); everything else is refused."""

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")


def read_batch(path: Path) -> dict:
    """One CIFAR pickle as a dict (keys as bytes), or UserError naming the file when it is unusable."""
    try:
        with open(path, "rb") as fh:
            batch = RestrictedUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as exc:
        raise UserError(f"{path} is not a valid CIFAR batch ({exc}); delete it and run "
                        f"python scripts/download_data.py again") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path} holds a {type(batch).__name__}, not a CIFAR batch dict; the file is corrupt")
    # files re-saved by Python 3 may use str keys
    return {k.encode() if isinstance(k, str) else k: v for k, v in batch.items()}


def _pixels(path: Path, raw) -> np.ndarray:
    """The pixel array as uint8, refusing any other dtype: casting float pixels in [0, 1] (or values
    beyond 255) to uint8 would silently train on black or wrapped images."""
    data = np.asarray(raw)
    if data.dtype == np.uint8:
        return data
    if np.issubdtype(data.dtype, np.integer) and data.size and 0 <= data.min() and data.max() <= 255:
        return data.astype(np.uint8)
    kind = f"{data.dtype} values" + (f" in [{data.min()}, {data.max()}]" if data.size and data.dtype.kind in "iuf" else "")
    raise UserError(f"{path}: pixels are {kind}; a CIFAR batch holds uint8 values 0..255 - the file was re-saved "
                    f"in another format or is corrupt; download it again")


def _labels(path: Path, raw) -> np.ndarray:
    """Labels as int64; non-integer values (floats, strings) are refused, not truncated."""
    labels = np.asarray(raw).reshape(-1)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
            return labels.astype(np.int64)
        raise UserError(f"{path}: labels are {labels.dtype} values, not class indices; the file is corrupt")
    return labels.astype(np.int64)


class CIFARDataset:
    """CIFAR-10 or CIFAR-100, fully in memory (uint8, 150 MB for the train split).

    Args:
      root: directory holding cifar-10-batches-py/ or cifar-100-python/.
      split: 'train' or 'test' (the registry maps 'val' to 'test').
      variant: 'cifar10' or 'cifar100'.
      label_type: CIFAR-100 only: 'fine' (100 classes, default) or 'coarse' (20 superclasses).
    """

    labelled = True

    def __init__(self, root: str | Path, split: str = "train", variant: str = "cifar10", label_type: str = "fine"):
        root = Path(root)
        if split not in ("train", "test"):
            raise UserError(f"{variant}: unknown split {split!r}; use 'train' or 'test' ('val' via build_dataset)")
        if variant not in ("cifar10", "cifar100"):
            raise UserError(f"unknown CIFAR variant {variant!r}; use 'cifar10' or 'cifar100'")
        if label_type not in ("fine", "coarse"):
            raise UserError(f"{variant}: label_type {label_type!r} must be 'fine' or 'coarse'")
        self.name, self.split = variant, split
        if variant == "cifar10":
            folder = root / "cifar-10-batches-py"
            files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
            label_key, self.num_classes = b"labels", 10
        else:
            folder = root / "cifar-100-python"
            files = ["train"] if split == "train" else ["test"]
            label_key = b"fine_labels" if label_type == "fine" else b"coarse_labels"
            self.num_classes = 100 if label_type == "fine" else 20
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise UserError(f"{variant} not found: expected the files {folder}/{{{','.join(files)}}} "
                            f"(missing {', '.join(missing)}); download them with "
                            + DOWNLOAD_HINT.format(name=variant, root=root))
        images, labels = [], []
        for f in files:
            path = folder / f
            batch = read_batch(path)
            try:
                data = _pixels(path, batch[b"data"])
                batch_labels = _labels(path, batch[label_key])
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise UserError(f"{path} lacks a usable CIFAR field ({exc}); the file is corrupt") from None
            if data.ndim != 2 or data.shape[1] != 3072:
                raise UserError(f"{path}: data has shape {data.shape}, expected (N, 3072); the file is corrupt")
            if len(batch_labels) != len(data):
                raise UserError(f"{path}: {len(data)} images but {len(batch_labels)} labels; the file is corrupt")
            if len(batch_labels) and (batch_labels.min() < 0 or batch_labels.max() >= self.num_classes):
                raise UserError(f"{path}: labels outside 0..{self.num_classes - 1}; the file is corrupt")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))      # planes -> HWC
            labels.append(batch_labels)
        self.images = np.ascontiguousarray(np.concatenate(images))
        self.labels = np.concatenate(labels)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """(uint8 (32, 32, 3) RGB image, label)."""
        return self.images[index], int(self.labels[index])
