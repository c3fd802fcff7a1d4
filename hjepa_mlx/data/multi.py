"""Several datasets as one: weighted, balanced or concatenated sampling; labels stay per dataset.

Epoch length is the sum of the datasets' lengths for every strategy. `concat` visits every image once
per epoch (shuffled); `weighted` draws each position's dataset with probability weight/sum(weights)
and an image uniformly within it (with replacement), so a small dataset with a large weight repeats;
`balanced` is `weighted` with equal weights. Each sample carries its dataset id; labels are never
merged into one label space (evaluation runs per dataset).
"""

from __future__ import annotations

import numpy as np


class MultiDataset:
    def __init__(self, datasets: list, weights: list[float], strategy: str = "weighted"):
        if strategy not in ("weighted", "balanced", "concat"):
            raise ValueError(strategy)
        self.datasets = list(datasets)
        w = np.ones(len(datasets)) if strategy == "balanced" else np.asarray(weights, dtype=np.float64)
        self.weights = w / w.sum()
        self.strategy = strategy
        self.offsets = np.concatenate([[0], np.cumsum([len(d) for d in datasets])])
        self.name = "+".join(d.name for d in datasets)
        self.labelled = all(getattr(d, "labelled", True) for d in datasets)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, index: int):
        d = int(np.searchsorted(self.offsets, index, side="right") - 1)
        img, label = self.datasets[d].load(int(index - self.offsets[d]))[:2]
        return img, label, d

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch, 7])
        n = len(self)
        if self.strategy == "concat":
            return rng.permutation(n)
        which = rng.choice(len(self.datasets), size=n, p=self.weights)
        sizes = np.array([len(d) for d in self.datasets])
        within = np.floor(rng.random(n) * sizes[which]).astype(np.int64)
        return self.offsets[which] + within

    def counts(self, order: np.ndarray) -> dict[str, int]:
        ids = np.searchsorted(self.offsets, order, side="right") - 1
        return {d.name: int((ids == i).sum()) for i, d in enumerate(self.datasets)}
