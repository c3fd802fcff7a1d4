"""STL-10 binaries: <root>/stl10_binary/{train,test,unlabeled}_X.bin (uint8 3x96x96, column-major) and
{train,test}_y.bin (labels 1..10 -> 0..9). Memory-mapped: unlabeled_X.bin is 2.7 GB."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hjepa_mlx.errors import UserError

_IMAGE_BYTES = 3 * 96 * 96


class STL10Dataset:
    num_classes = 10

    def __init__(self, root: str | Path, split: str = "train"):
        self.folder = Path(root) / "stl10_binary"
        self.name = "stl10"
        parts = {"train": ["train"], "test": ["test"], "unlabeled": ["unlabeled"],
                 "train+unlabeled": ["train", "unlabeled"]}.get(split)
        if parts is None:
            raise ValueError(f"unknown STL-10 split {split!r}")
        self.labelled = "unlabeled" not in parts
        self.parts = []
        for part in parts:
            xs = self.folder / f"{part}_X.bin"
            if not xs.is_file():
                raise UserError(f"stl10 not found: expected {xs} (layout stl10_binary/{{train,test,unlabeled}}_X.bin, "
                                f"{{train,test}}_y.bin); download it with python scripts/download_data.py stl10 "
                                f"--root {root}")
            size = xs.stat().st_size
            if size == 0 or size % _IMAGE_BYTES:
                raise UserError(f"{xs} has {size} bytes, not a whole number of 96x96x3 images; the file is "
                                f"truncated or corrupt - download it again")
            images = np.memmap(xs, dtype=np.uint8, mode="r").reshape(-1, 3, 96, 96)
            if part == "unlabeled":
                labels = np.full(len(images), -1, dtype=np.int64)
            else:
                ys = self.folder / f"{part}_y.bin"
                if not ys.is_file():
                    raise UserError(f"stl10 labels not found: {ys}")
                labels = np.fromfile(ys, dtype=np.uint8).astype(np.int64) - 1
                if len(labels) != len(images) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
                    raise UserError(f"{ys}: {len(labels)} labels in 1..10 expected for {len(images)} images; "
                                    f"the file is corrupt")
            self.parts.append((images, labels))
        self.offsets = np.cumsum([0] + [len(p[0]) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, index: int):
        p = int(np.searchsorted(self.offsets, index, side="right") - 1)
        images, labels = self.parts[p]
        i = index - self.offsets[p]
        # stored column-major per channel: (3, 96, 96) with x and y swapped
        return np.ascontiguousarray(images[i].transpose(2, 1, 0)), int(labels[i])
