"""What the optional logging keys produce: mask overlays (log_images), attention maps (log_attention),
gradient histograms (log_gradients) and per-dataset sample counts (log_dataset_distribution)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from hjepa_mlx.data.transforms import MEAN, STD
from hjepa_mlx.run_logging import attention_map_image, mask_overlay


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A normalised float HWC image back to uint8 for display."""
    return np.clip((image * STD + MEAN) * 255.0, 0, 255).astype(np.uint8)


def mask_image(image: np.ndarray, context_idx: np.ndarray, target_idx: np.ndarray, patch_size: int) -> np.ndarray:
    return mask_overlay(to_uint8(image), context_idx, list(target_idx), patch_size)


def attention_heatmap(encoder, params, image: np.ndarray) -> np.ndarray:
    """Attention of the last block of `encoder` (with `params`) on one image: the attention each patch
    receives, averaged over heads and queries, as a uint8 heatmap at the image size."""
    encoder.update(params)
    weights = encoder.last_attention(mx.array(image[None]))[0]                           # (H, N, N)
    return attention_map_image(np.array(weights), encoder.grid, scale=image.shape[0] // encoder.grid[0])


def gradient_histograms(grads) -> dict[str, np.ndarray]:
    """One histogram per top-level module (encoder, predictor, fpn) of all its gradient values."""
    groups: dict[str, list[np.ndarray]] = {}
    for key, value in tree_flatten(grads):
        groups.setdefault(key.split(".", 1)[0], []).append(np.array(value, dtype=np.float32).reshape(-1))
    return {f"gradients/{name}": np.concatenate(parts) for name, parts in groups.items()}


def dataset_counts(dataset_ids: np.ndarray, names: list[str]) -> dict[str, int]:
    counts = np.bincount(dataset_ids, minlength=len(names))
    return {f"dataset_samples/{name}": int(c) for name, c in zip(names, counts)}
