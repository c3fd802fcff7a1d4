"""ImageFolder (<root>/{train,val}/<class>/<image>, extensions case-insensitive) and ImageNet-100 (the
same layout restricted to the fixed list of 100 WNIDs). Decoded with Pillow and converted to RGB."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hjepa_mlx.data.imagenet100_wnids import IMAGENET100_WNIDS
from hjepa_mlx.data.transforms import to_rgb
from hjepa_mlx.errors import UserError

# Pixels per image decoded at most (Pillow's own bomb guard is 89 M and only warns below 179 M); a
# 8 k x 8 k photo fits, a 64 k x 64 k PNG of zeros (a few kB on disk, 12 GB decoded) does not.
MAX_PIXELS = 64_000_000
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


class ImageFolderDataset:
    """Labelled images, one sub-directory per class; labels are the classes' indices in sorted order
    (or in the order of `classes` when given).

    Args:
      root: directory holding train/ and val/.
      split: sub-directory to read ('train' or 'val').
      classes: restrict to (and order by) these class directories; an error names the missing ones.
      name: dataset name in messages and logs.
    """

    labelled = True

    def __init__(self, root: str | Path, split: str = "train", classes: tuple[str, ...] | None = None,
                 name: str = "imagefolder"):
        self.name, self.split = name, split
        folder = Path(root) / split
        layout = f"{root}/{{train,val}}/<class>/<image>.{{jpg,jpeg,png,...}}"
        if not folder.is_dir():
            extra = (" (ImageNet cannot be downloaded by a script: get it from image-net.org and arrange the "
                     "100 WNID folders of hjepa_mlx/data/imagenet100_wnids.py)") if name == "imagenet100" else ""
            raise UserError(f"{name} not found: expected the directory {folder} (layout {layout}){extra}")
        present = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        if classes is not None:
            have = set(present)
            missing = [c for c in classes if c not in have]
            if missing:
                raise UserError(f"{name}: {folder} lacks {len(missing)} of the {len(classes)} classes "
                                f"(first: {', '.join(missing[:5])}); layout {layout}")
            present = list(classes)
        if not present:
            raise UserError(f"{name}: no class directories in {folder} (layout {layout})")
        self.classes = present
        self.num_classes = len(present)
        self.samples = [(os.path.join(folder, c, f), label) for label, c in enumerate(present)
                        for f in sorted(os.listdir(folder / c))
                        if f.lower().endswith(EXTENSIONS) and not f.startswith(".")]
        counts = np.bincount([label for _, label in self.samples], minlength=len(present))
        empty = [c for c, n in zip(present, counts) if n == 0]
        if self.samples and empty:   # a class with no images would shift every later label's meaning
            raise UserError(f"{name}: the class folder {folder / empty[0]} holds no images ({len(empty)} empty "
                            f"class folder(s)); add its images or remove the folder")
        if not self.samples:
            raise UserError(f"{name}: no images under {folder} (extensions {', '.join(EXTENSIONS)}, any case)")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        """(uint8 HWC RGB image, label); a file Pillow cannot decode raises UserError naming it."""
        path, label = self.samples[index]
        try:
            with Image.open(path) as pil:
                if pil.width * pil.height > MAX_PIXELS:   # refuse before decoding (decompression bombs)
                    raise UserError(f"image {path} is {pil.width}x{pil.height} pixels, more than the limit of "
                                    f"{MAX_PIXELS:,} (a decompression bomb or a mistake); resize or remove it")
                pil.load()
                return np.asarray(to_rgb(pil)), label
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UserError(f"cannot decode image {path} ({exc}); the file is corrupt or truncated - remove or "
                            f"replace it") from None


def imagenet100(root: str | Path, split: str = "train") -> ImageFolderDataset:
    """ImageNet-100 (CMC's 100 WNIDs, hjepa_mlx/data/imagenet100_wnids.py) from an ImageNet-style folder;
    other class folders are ignored, a missing WNID is an error."""
    return ImageFolderDataset(root, split, classes=IMAGENET100_WNIDS, name="imagenet100")
