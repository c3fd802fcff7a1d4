"""ImageFolder (<root>/{train,val}/<class>/*.jpg|jpeg|png|...) and ImageNet-100 (the same layout,
restricted to the fixed list of 100 WNIDs). Images are decoded with Pillow and converted to RGB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from hjepa_mlx.data.imagenet100_wnids import IMAGENET100_WNIDS
from hjepa_mlx.data.transforms import to_rgb
from hjepa_mlx.errors import UserError

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


class ImageFolderDataset:
    labelled = True

    def __init__(self, root: str | Path, split: str = "train", classes: tuple[str, ...] | None = None,
                 name: str = "imagefolder"):
        self.name = name
        folder = Path(root) / split
        layout = f"{root}/{{train,val}}/<class>/<image>.jpg"
        if not folder.is_dir():
            raise UserError(f"{name} not found: expected the directory {folder} (layout {layout})")
        present = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if classes is not None:
            missing = [c for c in classes if c not in present]
            if missing:
                raise UserError(f"{name}: {folder} lacks {len(missing)} of the {len(classes)} classes "
                                f"(first: {', '.join(missing[:3])}); layout {layout}")
            present = list(classes)
        if not present:
            raise UserError(f"{name}: no class directories in {folder} (layout {layout})")
        self.classes = present
        self.num_classes = len(present)
        self.samples = [(str(f), label) for label, c in enumerate(present)
                        for f in sorted((folder / c).iterdir()) if f.suffix.lower() in EXTENSIONS]
        if not self.samples:
            raise UserError(f"{name}: no images under {folder} (extensions {', '.join(sorted(EXTENSIONS))})")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        path, label = self.samples[index]
        try:
            with Image.open(path) as pil:
                pil.load()
                return np.asarray(to_rgb(pil)), label
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise UserError(f"cannot decode image {path} ({exc}); the file is corrupt or truncated - remove or "
                            f"replace it") from None


def imagenet100(root: str | Path, split: str = "train") -> ImageFolderDataset:
    return ImageFolderDataset(root, split, classes=IMAGENET100_WNIDS, name="imagenet100")
