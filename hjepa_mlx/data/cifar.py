"""CIFAR-10 / CIFAR-100 from the official python pickles, read with a restricted unpickler.

Layout: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch} and <root>/cifar-100-python/{train,test}.
Pickles can run code when loaded, so only the names these files contain may be resolved.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from hjepa_mlx.errors import UserError

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("copy_reg", "_reconstructor"),
            ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object"),
            # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, 'latin1'): harmless.
            ("_codecs", "encode")}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch")


def read_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"{path} is not a valid CIFAR batch ({exc}); delete it and run "
                        f"python scripts/download_data.py again") from None


DOWNLOAD_HINT = "python scripts/download_data.py {name} --root {root}"


class CIFARDataset:
    labelled = True

    def __init__(self, root: str | Path, split: str = "train", variant: str = "cifar10", label_type: str = "fine"):
        root = Path(root)
        self.name = variant
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
            raise UserError(f"{variant} not found: expected {folder}/{{{','.join(files)}}}; download it with "
                            + DOWNLOAD_HINT.format(name=variant, root=root))
        images, labels = [], []
        for f in files:
            batch = read_batch(folder / f)
            try:
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                labels.extend(int(v) for v in batch[label_key])
            except (KeyError, TypeError) as exc:
                raise UserError(f"{folder / f} lacks the CIFAR field {exc}; the file is corrupt") from None
            if data.ndim != 2 or data.shape[1] != 3072:
                raise UserError(f"{folder / f}: data has shape {data.shape}, expected (N, 3072); the file is corrupt")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        self.images = np.concatenate(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise UserError(f"{folder}: {len(self.images)} images but {len(self.labels)} labels; the files are corrupt")

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int):
        return self.images[index], int(self.labels[index])
