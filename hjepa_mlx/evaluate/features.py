"""Features of a frozen encoder over a labelled split, gathered into host NumPy arrays for k-NN, the linear
probe and the quality metrics.

`extract_features` takes any `encode_fn(images (B, H, W, 3) mx.array) -> (B, D) mx.array`;
`make_pooled_encoder` builds the standard one: the frozen target encoder + `level_features`, compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import mlx.core as mx
import numpy as np

from hjepa_mlx.batch import Batch
from hjepa_mlx.errors import UserError
from hjepa_mlx.normalize import l2_normalize


def extract_features(encode_fn: Callable[[mx.array], mx.array], batches: Iterable[Batch], *,
                     max_batches: int | None = None, max_images: int | None = None):
    """Run `encode_fn` over `batches` and collect the outputs.

    Args:
      encode_fn: images (B, H, W, 3) mx.array -> features (B, D) mx.array (frozen, ideally compiled).
      batches: iterable of `Batch`es (NumPy `images` (B, H, W, 3), `labels` (B,) ints, `dataset_ids` (B,)
        ints or None for zeros).
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
        if batch.labels is None:
            raise UserError(f"feature extraction needs batches with 'images' and 'labels'; got "
                            f"{batch.keys()} (is this split labelled?)")
        y = np.asarray(batch.labels).reshape(-1)
        if len(y) != len(batch.images):
            raise UserError(f"a batch has {len(batch.images)} images but {len(y)} labels; the dataset is "
                            "inconsistent, check its label file")
        out = encode_fn(mx.array(batch.images))
        if out.ndim != 2 or out.shape[0] != len(y):
            raise ValueError(f"encode_fn must return (B, D) = ({len(y)}, D), got {tuple(out.shape)}")
        mx.async_eval(out)
        if pending is not None:
            feats.append(np.array(pending, dtype=np.float32))
        pending = out
        labels.append(y.astype(np.int64))
        ids.append(np.zeros(len(y), np.int32) if batch.dataset_ids is None
                   else np.asarray(batch.dataset_ids, dtype=np.int32).reshape(-1))
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
    from hjepa_mlx.levels import level_grid, parent_cells
    from hjepa_mlx.models.hierarchy import pool_to_level

    b, n, d = tokens.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"a {h}x{w} patch grid has {h * w} tokens; got tokens of shape {tuple(tokens.shape)}")
    if level == 0:
        return tokens.mean(axis=1)
    hl, wl = level_grid(grid, level)
    cells = mx.broadcast_to(parent_cells(mx.arange(n), grid, level), (b, 1, n))
    pooled, _ = pool_to_level(tokens[:, None], cells, hl * wl)
    return l2_normalize(pooled[:, 0], 1e-6).mean(axis=1)    # every cell holds >= 1 patch


def make_pooled_encoder(model, target_params, level: int = 0):
    """Compiled images -> `level_features` of the (frozen) target encoder's tokens after its affine-free
    layer norm. (`model.encode_target(params, images) -> (B, N, D)`; `model.grid` its patch grid.)"""
    grid = model.grid

    def encode(images):
        return level_features(model.encode_target(target_params, images), grid, level)
    return mx.compile(encode)
