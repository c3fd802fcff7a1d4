"""STL-10 binaries: <root>/stl10_binary/{train,test,unlabeled}_X.bin and {train,test}_y.bin.

Each image is 3 x 96 x 96 uint8 stored column-major (per channel, x varies slowest), so a (3, 96, 96)
read is indexed [channel, x, y] and needs a transpose to HWC. Labels are uint8 1..10, mapped to 0..9.
The X files are memory-mapped (unlabeled_X.bin is 2.7 GB); nothing is read until an image is loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hjepa_mlx.errors import UserError

_IMAGE_BYTES = 3 * 96 * 96
SPLITS = {"train": ("train",), "test": ("test",), "unlabeled": ("unlabeled",),
          "train+unlabeled": ("train", "unlabeled")}
_LAYOUT = "stl10_binary/{train,test,unlabeled}_X.bin and {train,test}_y.bin"


def _class_names(path: Path) -> list[str]:
    try:
        names = path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not readable UTF-8 text ({exc}); delete it (class names then default to "
                        f"0..9) or download the dataset again") from None
    if len(names) != 10:
        raise UserError(f"{path} names {len(names)} classes, STL-10 has 10; delete it or download the dataset again")
    return names


class STL10Dataset:
    """STL-10, memory-mapped.

    Args:
      root: directory holding stl10_binary/.
      split: 'train' (5,000 labelled), 'test' (8,000), 'unlabeled' (100,000, labels -1) or
        'train+unlabeled' (105,000, for self-supervised training). The registry maps 'val' to 'test'.
    `labelled` is False as soon as the split contains unlabeled images.
    """

    num_classes = 10

    def __init__(self, root: str | Path, split: str = "train"):
        self.folder = Path(root) / "stl10_binary"
        self.name, self.split = "stl10", split
        parts = SPLITS.get(split)
        if parts is None:
            raise UserError(f"stl10: unknown split {split!r}; use one of {', '.join(SPLITS)}")
        self.labelled = "unlabeled" not in parts
        names = self.folder / "class_names.txt"
        self.classes = _class_names(names) if names.is_file() else [str(i) for i in range(10)]
        self.parts = [self._part(Path(root), part) for part in parts]
        self.offsets = np.cumsum([0] + [len(images) for images, _ in self.parts])

    def _part(self, root: Path, part: str):
        xs = self.folder / f"{part}_X.bin"
        ys = self.folder / f"{part}_y.bin"
        hint = f"download it with python scripts/download_data.py stl10 --root {root}"
        if not xs.is_file() or (part != "unlabeled" and not ys.is_file()):
            missing = xs if not xs.is_file() else ys
            raise UserError(f"stl10 not found: {missing} is missing (expected layout {root}/{_LAYOUT}); {hint}")
        size = xs.stat().st_size
        if size == 0 or size % _IMAGE_BYTES:
            raise UserError(f"{xs} has {size} bytes, not a whole number of 96x96x3 images; the file is "
                            f"truncated or corrupt - delete it and {hint}")
        images = np.memmap(xs, dtype=np.uint8, mode="r").reshape(-1, 3, 96, 96)
        if part == "unlabeled":
            return images, np.full(len(images), -1, dtype=np.int64)
        labels = np.fromfile(ys, dtype=np.uint8).astype(np.int64) - 1
        if len(labels) != len(images):
            raise UserError(f"{ys}: {len(labels)} labels for the {len(images)} images of {xs.name} (one each "
                            f"expected); the file is truncated or corrupt - delete it and {hint}")
        outside = np.flatnonzero((labels < 0) | (labels > 9))
        if len(outside):
            raise UserError(f"{ys}: {len(outside)} label(s) outside 1..10 (the first, at position {outside[0]}, is "
                            f"{labels[outside[0]] + 1}); the file is corrupt - delete it and {hint}")
        return images, labels

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """(uint8 (96, 96, 3) RGB image, label in 0..9 or -1 for unlabeled)."""
        if not 0 <= index < len(self):
            raise IndexError(f"stl10 index {index} out of range 0..{len(self) - 1}")
        p = int(np.searchsorted(self.offsets, index, side="right") - 1)
        images, labels = self.parts[p]
        i = index - int(self.offsets[p])
        return np.ascontiguousarray(images[i].transpose(2, 1, 0)), int(labels[i])   # [c, x, y] -> [y, x, c]
