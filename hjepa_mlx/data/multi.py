"""Several datasets as one: weighted, balanced or concatenated sampling; labels stay per dataset.

Epoch length: the sum of the datasets' lengths, for every strategy.
- `concat`: every image exactly once per epoch, in a shuffled order (or in order when not shuffled).
- `weighted`: each position of the epoch comes from dataset d with probability w_d = weight_d / sum(weights);
  within a dataset, images are taken from a fresh permutation (then another when a dataset is drawn more
  often than it has images), so an image repeats only when its dataset is over-sampled.
- `balanced`: `weighted` with equal weights.
All of it is deterministic given (seed, epoch). Each sample carries its dataset id (the index in
`datasets`); labels are never merged into one label space (evaluation runs per dataset), so
`num_classes` is a tuple with one entry per dataset.
"""

from __future__ import annotations

import numpy as np

from hjepa_mlx.errors import UserError

STRATEGIES = ("weighted", "balanced", "concat")


class MultiDataset:
    """Args:
      datasets: the member datasets (each with len, load, num_classes, name).
      weights: one non-negative weight per dataset (normalised here; ignored by 'balanced' and 'concat').
      strategy: 'weighted', 'balanced' or 'concat' (module docstring).
    """

    def __init__(self, datasets: list, weights: list[float] | None = None, strategy: str = "weighted"):
        if strategy not in STRATEGIES:
            raise UserError(f"multi-dataset sampling strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        if not datasets:
            raise UserError("a multi-dataset needs at least one dataset")
        self.datasets = list(datasets)
        n = len(self.datasets)
        w = np.ones(n) if strategy != "weighted" or weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (n,) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
            raise UserError(f"multi-dataset weights {list(np.atleast_1d(w))} must be {n} finite non-negative "
                            f"numbers with a positive sum")
        self.weights = w / w.sum()
        self.strategy = strategy
        self.sizes = np.array([len(d) for d in self.datasets], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.names = [d.name for d in self.datasets]
        self.name = "+".join(self.names)
        self.num_classes = tuple(getattr(d, "num_classes", 0) for d in self.datasets)
        self.labelled = all(getattr(d, "labelled", True) for d in self.datasets)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, index: int) -> tuple[np.ndarray, int, int]:
        """(image, label in the dataset's own label space, dataset id) of a global index (see `offsets`)."""
        if not 0 <= index < len(self):
            raise IndexError(f"multi-dataset index {index} out of range 0..{len(self) - 1}")
        d = int(np.searchsorted(self.offsets, index, side="right") - 1)
        img, label = self.datasets[d].load(int(index - self.offsets[d]))[:2]
        return img, label, d

    def epoch_order(self, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
        """The epoch's global indices (length len(self)), deterministic given (seed, epoch)."""
        n = len(self)
        if self.strategy == "concat":
            return np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        rng = np.random.default_rng([seed, epoch])
        which = rng.choice(len(self.datasets), size=n, p=self.weights)
        order = np.empty(n, dtype=np.int64)
        for d, size in enumerate(self.sizes):
            slots = np.flatnonzero(which == d)
            if len(slots) == 0:
                continue
            laps = -(-len(slots) // size)                 # permutations needed to cover the draws
            picks = np.concatenate([rng.permutation(size) for _ in range(laps)])[:len(slots)]
            order[slots] = self.offsets[d] + picks
        return order

    def dataset_ids(self, order: np.ndarray) -> np.ndarray:
        """Dataset id of each global index."""
        return np.searchsorted(self.offsets, order, side="right") - 1

    def counts(self, order: np.ndarray) -> dict[str, int]:
        """{dataset name: how many of `order` come from it}."""
        ids = self.dataset_ids(order)
        return {name: int((ids == i).sum()) for i, name in enumerate(self.names)}
