"""What the optional logging keys produce: mask overlays (log_images), attention maps (log_attention),
gradient histograms (log_gradients) and per-dataset sample counts (log_dataset_distribution)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from hjepa_mlx.data.transforms import MEAN, STD
from hjepa_mlx.run_logging import mask_overlay


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A normalised float HWC image back to uint8 for display."""
    return np.clip((image * STD + MEAN) * 255.0, 0, 255).astype(np.uint8)


def mask_image(image: np.ndarray, context_idx: np.ndarray, target_idx: np.ndarray, patch_size: int) -> np.ndarray:
    return mask_overlay(to_uint8(image), context_idx, list(target_idx), patch_size)


def attention_heatmap(encoder, params, image: np.ndarray) -> np.ndarray:
    """Attention of the last block of `encoder` (with `params`) on one image: the attention each patch
    receives, averaged over heads and queries, as a uint8 heatmap upsampled to the image size."""
    encoder.update(params)
    x = mx.array(image[None])
    tokens = encoder.patch_embed(x) + encoder._pos
    for block in encoder.blocks[:-1]:
        tokens = block(tokens)
    last = encoder.blocks[-1]
    attn = last.attn
    b, n, d = tokens.shape
    qkv = attn.qkv(last.norm1(tokens)).reshape(b, n, 3, attn.num_heads, attn.head_dim).transpose(2, 0, 3, 1, 4)
    weights = mx.softmax((qkv[0] * attn.scale) @ qkv[1].swapaxes(-1, -2), axis=-1)      # (1, H, N, N)
    received = np.array(weights.mean(axis=(0, 1, 2)))                                   # (N,)
    gh, gw = encoder.grid
    grid = received.reshape(gh, gw)
    grid = (grid - grid.min()) / max(float(grid.max() - grid.min()), 1e-12)
    scale = image.shape[0] // gh
    heat = np.kron(grid, np.ones((scale, scale)))
    return (np.stack([heat, heat * 0.6, 1.0 - heat], axis=-1) * 255).astype(np.uint8)


def gradient_histograms(grads) -> dict[str, np.ndarray]:
    """One histogram per top-level module (encoder, predictor, fpn) of all its gradient values."""
    groups: dict[str, list[np.ndarray]] = {}
    for key, value in tree_flatten(grads):
        groups.setdefault(key.split(".", 1)[0], []).append(np.array(value, dtype=np.float32).reshape(-1))
    return {f"gradients/{name}": np.concatenate(parts) for name, parts in groups.items()}


def dataset_counts(dataset_ids: np.ndarray, names: list[str]) -> dict[str, int]:
    counts = np.bincount(dataset_ids, minlength=len(names))
    return {f"dataset_samples/{name}": int(c) for name, c in zip(names, counts)}
