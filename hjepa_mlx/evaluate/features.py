"""Features of a frozen encoder over a labelled split, gathered into host NumPy arrays for k-NN, the linear
probe and the quality metrics.

`extract_features` takes any `encode_fn(images (B, H, W, 3) mx.array) -> (B, D) mx.array`;
`make_pooled_encoder` builds the standard one: the frozen target encoder + `level_features`, compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import mlx.core as mx
import numpy as np

from hjepa_mlx.errors import UserError
from hjepa_mlx.normalize import l2_normalize


def extract_features(encode_fn: Callable[[mx.array], mx.array], batches: Iterable[dict], *,
                     max_batches: int | None = None, max_images: int | None = None):
    """Run `encode_fn` over `batches` and collect the outputs.

    Args:
      encode_fn: images (B, H, W, 3) mx.array -> features (B, D) mx.array (frozen, ideally compiled).
      batches: iterable of dicts with NumPy `images` (B, H, W, 3), `labels` (B,) ints and optionally
        `dataset_ids` (B,) ints (zeros when absent).
      max_batches: stop after this many batches (None: all).
      max_images: keep at most this many rows (None: all); the last batch is truncated.

    Returns (features float32 (n, D), labels int64 (n,), dataset_ids int32 (n,)); with no batches,
    (0, 0), (0,), (0,) arrays.
    """
    feats, labels, ids = [], [], []
    pending = None          # the previous batch's output, evaluated asynchronously while the next is loaded
    seen = 0
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        if max_images is not None and seen >= max_images:
            break
        if "images" not in batch or "labels" not in batch:
            raise UserError(f"feature extraction needs batches with 'images' and 'labels'; got keys "
                            f"{sorted(batch)} (is this split labelled?)")
        y = np.asarray(batch["labels"]).reshape(-1)
        if len(y) != len(batch["images"]):
            raise UserError(f"a batch has {len(batch['images'])} images but {len(y)} labels; the dataset is "
                            "inconsistent, check its label file")
        out = encode_fn(mx.array(batch["images"]))
        if out.ndim != 2 or out.shape[0] != len(y):
            raise ValueError(f"encode_fn must return (B, D) = ({len(y)}, D), got {tuple(out.shape)}")
        mx.async_eval(out)
        if pending is not None:
            feats.append(np.array(pending, dtype=np.float32))
        pending = out
        labels.append(y.astype(np.int64))
        ids.append(np.asarray(batch.get("dataset_ids", np.zeros(len(y))), dtype=np.int32).reshape(-1))
        seen += len(y)
    if pending is not None:
        feats.append(np.array(pending, dtype=np.float32))
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int32)
    n = seen if max_images is None else min(seen, max_images)
    return np.concatenate(feats)[:n], np.concatenate(labels)[:n], np.concatenate(ids)[:n]


def level_features(tokens: mx.array, grid: tuple[int, int], level: int = 0) -> mx.array:
    """Image features of hierarchy level `level` from the level-0 patch tokens: (B, H*W, D) -> (B, D).

    Level 0: the mean of all patch tokens. Level l > 0: the mean of the tokens inside each 2^l x 2^l cell
    of the patch grid (cells cut by the grid edge average the patches they hold), each cell mean
    L2-normalised, then the mean over cells - so every region counts equally, as at level l of the loss
    with normalize_embeddings. (Without the normalisation, a mean of cell means would be the level-0 mean
    again on grids the cells divide.)
    """
    from hjepa_mlx.models.hierarchy import level_grid

    b, n, d = tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"a {h}x{w} patch grid has {h * w} tokens; got tokens of shape {tuple(tokens.shape)}")
    if level == 0:
        return tokens.mean(axis=1)
    hl, wl = level_grid(grid, level)
    s = 2 ** level
    padded = mx.pad(tokens.reshape(b, h, w, d), [(0, 0), (0, hl * s - h), (0, wl * s - w), (0, 0)])
    inside = mx.pad(mx.ones((1, h, w, 1)), [(0, 0), (0, hl * s - h), (0, wl * s - w), (0, 0)])
    sums = padded.reshape(b, hl, s, wl, s, d).sum(axis=(2, 4))
    cells = sums / inside.reshape(1, hl, s, wl, s, 1).sum(axis=(2, 4))
    cells = l2_normalize(cells, 1e-6)
    return cells.reshape(b, hl * wl, d).mean(axis=1)


def make_pooled_encoder(model, target_params, level: int = 0):
    """Compiled images -> `level_features` of the (frozen) target encoder's tokens after its affine-free
    layer norm. (`model.encode_target(params, images) -> (B, N, D)`; `model.grid` its patch grid.)"""
    grid = model.grid

    def encode(images):
        return level_features(model.encode_target(target_params, images), grid, level)
    return mx.compile(encode)
