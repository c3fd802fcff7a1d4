"""Validation images held out of a training split: the run never trains on them, and they are not the test
split that evaluation reports on.

`split_holdout(dataset, count, seed)` draws `count` images of the dataset (a permutation seeded by
`seed`, so the same config always holds out the same images, on every rank and after resume) and returns
(train part, held-out part), both `Subset`s that behave like the dataset they come from.
"""

from __future__ import annotations

import numpy as np

from hjepa_mlx.errors import UserError

# Mixed into the seed so the hold-out draw is independent of the epoch orders seeded with (seed, epoch).
_STREAM = 0x5EED_4E1D


class Subset:
    """The images of `dataset` at `indices` (in that order), with the dataset's name, classes and labels."""

    def __init__(self, dataset, indices: np.ndarray):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.name = dataset.name
        self.num_classes = getattr(dataset, "num_classes", 0)
        self.labelled = getattr(dataset, "labelled", True)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int):
        if not 0 <= index < len(self.indices):
            raise IndexError(f"{self.name} subset index {index} out of range 0..{len(self.indices) - 1}")
        return self.dataset.load(int(self.indices[index]))


def split_holdout(dataset, count: int, seed: int) -> tuple[Subset, Subset]:
    """(train, held out): `count` images drawn by `seed`; the train part keeps the dataset's order."""
    n = len(dataset)
    if not 0 < count < n:
        raise UserError(f"data.val_holdout asks for {count} validation images of {dataset.name}, which has {n}; "
                        f"hold out between 1 and {n - 1} images (fewer than the training split)")
    held = np.random.default_rng([seed, _STREAM]).permutation(n)[:count]
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return Subset(dataset, np.flatnonzero(keep)), Subset(dataset, np.sort(held))
