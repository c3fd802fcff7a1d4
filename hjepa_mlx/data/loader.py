"""Fixed-shape batches, deterministic given (seed, epoch), sharded by (rank, world_size), prefetched.

Order: a permutation from `default_rng([seed, epoch])` (a multi-dataset supplies its own epoch order),
cut to a multiple of world_size so every rank gets the same number of samples; rank r takes positions
r, r + world_size, ...; the last partial batch of each rank is dropped (fixed shapes) unless
drop_last=False. Each sample's augmentation for view v uses `default_rng([seed, epoch, position, v])`,
where position is the sample's place in the whole epoch, so a batch is identical whatever num_workers
or the number of ranks. `start_batch` continues a resumed epoch without replaying the batches before it.
With num_workers > 0, samples are decoded and augmented in a thread pool (Pillow and NumPy release the
GIL in their heavy parts), `prefetch` batches ahead of the consumer. A `masks` source (masks.MaskSource)
draws each batch's masks in the same workers, so they arrive with the images (`Batch.masks`).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from hjepa_mlx.batch import Batch


class BatchLoader:
    """Args:
      dataset: len(dataset) and dataset.load(i) -> (uint8 HWC image, label[, dataset id]); a dataset with
        `epoch_order(seed, epoch, shuffle)` (MultiDataset) decides the epoch's order itself.
      batch_size: samples per batch and rank.
      transform: fn(img, rng) -> float32 HWC array, or a list of them (multi-crop).
      views: 1, or 2 to apply the transform twice with independent random draws (`images_view2`).
      seed: base seed of the order and of every augmentation.
      rank, world_size: this process's shard of the epoch.
      num_workers: threads that load and transform samples (0: in the caller's thread).
      shuffle: permute the order each epoch (False: dataset order).
      prefetch: batches in flight ahead of the consumer when num_workers > 0.
      drop_last: drop each rank's last partial batch (True keeps shapes fixed for training; use False
        to evaluate every image).
      local_transform, num_local: multi-crop's small crops: `num_local` draws of local_transform per
        sample, local crop i from `default_rng([seed, epoch, position, 2 + i])`, batched as
        `local_crops` float32 (B, num_local, h, w, 3).
      masks: fn(epoch, batch index) -> MaskBatch (masks.MaskSource), run in the workers; None: no masks.
    Batches are `Batch`es (hjepa_mlx/batch.py) of NumPy arrays: `images` float32 (B, H, W, 3), `labels`
    int32 (B,), `dataset_ids` int32 (B,), `images_view2` with views=2, `crops` (a list of (B, h, w, 3),
    `images` = crops[0]) when the transform returns a list, and `masks`.
    """

    def __init__(self, dataset, batch_size: int, transform, *, views: int = 1, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, shuffle: bool = True, prefetch: int = 2,
                 drop_last: bool = True, local_transform=None, num_local: int = 0, masks=None):
        if batch_size < 1 or views not in (1, 2) or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"BatchLoader needs batch_size >= 1, views in (1, 2) and 0 <= rank < world_size "
                             f"(got {batch_size}, {views}, {rank}, {world_size})")
        self.dataset, self.batch_size, self.transform = dataset, batch_size, transform
        self.views, self.seed, self.rank, self.world_size = views, seed, rank, world_size
        self.num_workers, self.shuffle, self.prefetch = num_workers, shuffle, max(1, prefetch)
        self.drop_last = drop_last
        if num_local and local_transform is None:
            raise ValueError("BatchLoader: num_local > 0 needs a local_transform")
        self.local_transform, self.num_local = local_transform, num_local
        self.masks = masks

    def samples_per_rank(self) -> int:
        return len(self.dataset) // self.world_size

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        n = self.samples_per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """This rank's dataset indices for `epoch`, in order."""
        if hasattr(self.dataset, "epoch_order"):
            full = self.dataset.epoch_order(self.seed, epoch, shuffle=self.shuffle)
        elif self.shuffle:
            full = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
        else:
            full = np.arange(len(self.dataset))
        return full[:self.samples_per_rank() * self.world_size][self.rank::self.world_size]

    def _sample(self, epoch: int, position: int, index: int) -> dict:
        loaded = self.dataset.load(int(index))
        img, label = loaded[0], loaded[1]
        out = {"label": label, "dataset_id": loaded[2] if len(loaded) > 2 else 0}
        for v in range(self.views):
            out[v] = self.transform(img, np.random.default_rng([self.seed, epoch, position, v]))
        out["local"] = [self.local_transform(img, np.random.default_rng([self.seed, epoch, position, 2 + i]))
                        for i in range(self.num_local)]
        return out

    def _jobs(self, epoch: int, order: np.ndarray, b: int) -> list[tuple[int, int, int]]:
        lo, hi = b * self.batch_size, min(len(order), (b + 1) * self.batch_size)
        return [(epoch, j * self.world_size + self.rank, order[j]) for j in range(lo, hi)]

    def _collate(self, samples: list[dict], masks=None) -> Batch:
        fields = {"labels": np.array([s["label"] for s in samples], dtype=np.int32),
                  "dataset_ids": np.array([s["dataset_id"] for s in samples], dtype=np.int32), "masks": masks}
        for v, key in enumerate(("images", "images_view2")[:self.views]):
            first = samples[0][v]
            if isinstance(first, (list, tuple)):             # multi-crop: one stacked array per crop
                crops = [np.stack([s[v][c] for s in samples]) for c in range(len(first))]
                fields[key] = crops[0]
                fields["crops" if v == 0 else "crops_view2"] = crops
            else:
                fields[key] = np.stack([s[v] for s in samples])
        if self.num_local:
            fields["local_crops"] = np.stack([np.stack(s["local"]) for s in samples])
        return Batch(**fields)

    def _masks(self, epoch: int, b: int):
        return None if self.masks is None else self.masks(epoch, b)

    def epoch(self, epoch: int, start_batch: int = 0):
        """Yield this rank's batches of `epoch`, starting at batch `start_batch` (0 <= start_batch <= len)."""
        order = self.order(epoch)
        count = len(self)
        if not 0 <= start_batch <= count:
            raise ValueError(f"start_batch {start_batch} outside 0..{count}")
        if self.num_workers <= 0:
            for b in range(start_batch, count):
                yield self._collate([self._sample(*job) for job in self._jobs(epoch, order, b)], self._masks(epoch, b))
            return
        yield from self._prefetched(epoch, order, range(start_batch, count))

    def _prefetched(self, epoch: int, order: np.ndarray, batches: range):
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="hjepa-data")
        pending: deque = deque()
        upcoming = iter(batches)

        def submit_next():
            b = next(upcoming, None)
            if b is not None:
                pending.append((pool.submit(self._masks, epoch, b),
                                [pool.submit(self._sample, *job) for job in self._jobs(epoch, order, b)]))

        try:
            for _ in range(self.prefetch):
                submit_next()
            while pending:
                masks, futures = pending.popleft()
                submit_next()                              # keep `prefetch` batches in flight
                yield self._collate([f.result() for f in futures], masks.result())   # re-raises a worker's error
        finally:                                           # also when the consumer stops early
            pool.shutdown(wait=True, cancel_futures=True)
