"""`Batch`: what travels from the loader to the train step - one batch's images, labels and masks.

The loader's workers fill it on the host (NumPy: decoded, augmented, masks drawn beside the images);
`device_batch` stacks the k micro-batches of one optimizer step into the pytree the compiled step
takes: a dict of MLX arrays with a leading axis k -

  images (k, B, H, W, 3), context_idx (k, B, Nc), target_idx (k, B, M, K); with two views also
  images_view2 and context_idx_view2; with multi-crop local_crops (k, B, L, h, w, 3).

The hierarchy levels' cells are not sent: the model derives them from target_idx (hjepa_mlx/levels.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import mlx.core as mx
import numpy as np

from hjepa_mlx.masks import MaskBatch


@dataclass(frozen=True)
class Batch:
    images: np.ndarray                       # (B, H, W, 3) float32, view 1 (multi-crop: crops[0])
    labels: np.ndarray                       # (B,) int32
    dataset_ids: np.ndarray                  # (B,) int32: which dataset of a multi-dataset run
    images_view2: np.ndarray | None = None   # (B, H, W, 3) float32, the second augmented view
    local_crops: np.ndarray | None = None    # (B, L, h, w, 3) float32, multi-crop's local crops
    crops: list | None = None                # a transform returning several crops: one array per crop
    crops_view2: list | None = None
    masks: MaskBatch | None = None           # drawn with the images when the loader has a mask source

    def __len__(self) -> int:
        return len(self.labels)

    def keys(self) -> list[str]:
        """The names of the fields this batch holds (for error messages)."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def device_batch(batches: list[Batch], two_views: bool) -> dict:
    """Stack one optimizer step's k micro-batches (each with its masks) into the step's input: a dict of
    MLX arrays with a leading axis k (module docstring)."""
    def stack(get):
        return mx.array(np.stack([get(b) for b in batches]))

    out = {"images": stack(lambda b: b.images)}
    if two_views:
        out["images_view2"] = stack(lambda b: b.images_view2)
        out["context_idx_view2"] = stack(lambda b: b.masks.context_idx_view2)
    if batches[0].local_crops is not None:
        out["local_crops"] = stack(lambda b: b.local_crops)
    out["context_idx"] = stack(lambda b: b.masks.context_idx)
    out["target_idx"] = stack(lambda b: b.masks.target_idx)
    return out


def first_micro(batch: dict) -> dict:
    """The first micro-batch of a stacked step input (the leading axis k removed)."""
    return {key: value[0] for key, value in batch.items()}
