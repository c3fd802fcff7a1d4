"""Mask statistics shared by tests/test_masks.py and benchmarks/masks.py: which patches a batch of index
sets covers, a positional-bias test (flip asymmetry), and a NumPy port of I-JEPA's MaskCollator to
compare against (its masked fraction, and proof that the bias test can fail).
"""

from __future__ import annotations

import math

import numpy as np


def ijepa_reference_masks(rng, n_images, batch_size, gh, gw, num_masks=4, pred_scale=(0.15, 0.2),
                          aspect=(0.75, 1.5), enc_scale=(0.85, 1.0), min_keep=10):
    """facebookresearch/ijepa src/masks/multiblock.py (nenc 1, allow_overlap False), ported to NumPy with
    its quirks: one uniform draw sets both scale and aspect; block sizes are drawn once per batch and
    clipped below the grid size; corners come from randint(0, H - h), which excludes the last position;
    the context is truncated to the batch minimum in raster order. -> (targets (n, M, H, W), context (n, H, W))."""
    def size(scale, ar_range):
        r = rng.random()
        keep = int(gh * gw * (scale[0] + r * (scale[1] - scale[0])))
        ar = ar_range[0] + r * (ar_range[1] - ar_range[0])
        h, w = int(round(math.sqrt(keep * ar))), int(round(math.sqrt(keep / ar)))
        return min(h, gh - 1), min(w, gw - 1)

    def block(h, w, regions=()):
        tries, timeout = 0, 20
        while True:
            top, left = rng.integers(0, gh - h), rng.integers(0, gw - w)
            mask = np.zeros((gh, gw), bool)
            mask[top:top + h, left:left + w] = True
            for region in regions[:max(len(regions) - tries, 0)]:
                mask &= region
            if mask.sum() > min_keep:
                return mask
            timeout -= 1
            if timeout == 0:
                tries, timeout = tries + 1, 20

    targets, contexts = [], []
    for start in range(0, n_images, batch_size):
        (ph, pw), (eh, ew) = size(pred_scale, aspect), size(enc_scale, (1.0, 1.0))
        batch_t = [np.stack([block(ph, pw) for _ in range(num_masks)]) for _ in range(min(batch_size, n_images - start))]
        batch_c = [block(eh, ew, list(~t)) for t in batch_t]
        keep = min(int(c.sum()) for c in batch_c)
        for c in batch_c:
            flat = np.zeros(gh * gw, bool)
            flat[np.flatnonzero(c)[:keep]] = True
            contexts.append(flat.reshape(gh, gw))
        targets.extend(batch_t)
    return np.array(targets), np.array(contexts)


def index_union(target_idx: np.ndarray, cells: int) -> np.ndarray:
    """(B, M, K) patch indices -> (B, cells) boolean: which patches appear in any of the M sets."""
    union = np.zeros((target_idx.shape[0], cells), bool)
    np.put_along_axis(union, target_idx.reshape(len(target_idx), -1), True, axis=1)
    return union


def flip_asymmetry_z(hits: np.ndarray) -> float:
    """hits (n, H, W): whether each patch was masked in each of n independent images. The largest |z| of
    a paired test between each patch and its up-down, left-right and 180-degree mirror (paired per
    image, so the correlation between the two patches is accounted for): ~3-4 for an unbiased sampler
    on a 14 x 14 grid, tens for a biased one."""
    hits = hits.astype(np.float64)
    n = len(hits)
    worst = 0.0
    for flipped in (hits[:, ::-1], hits[:, :, ::-1], hits[:, ::-1, ::-1]):
        diff = hits - flipped
        se = diff.std(axis=0) / math.sqrt(n)
        z = np.where(se > 0, np.abs(diff.mean(axis=0)) / np.maximum(se, 1e-12), 0.0)
        worst = max(worst, float(z.max()))
    return worst
