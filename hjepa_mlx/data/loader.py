"""Fixed-shape batches, deterministic given (seed, epoch), sharded by (rank, world_size), prefetched.

Order: a permutation from `default_rng([seed, epoch])` (or the multi-dataset's epoch order); rank r
takes positions r, r + world_size, ... so ranks partition the epoch; the last partial batch is dropped.
Each sample's augmentation uses `default_rng([seed, epoch, position])`, so a batch is the same whatever
num_workers or the number of ranks. `start_batch` continues a resumed epoch without replaying it.
With num_workers > 0, a background thread assembles the next batches while samples load in a thread
pool (Pillow and NumPy release the GIL in their heavy parts).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class BatchLoader:
    def __init__(self, dataset, batch_size: int, transform, *, views: int = 1, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, shuffle: bool = True, prefetch: int = 2):
        self.dataset, self.batch_size, self.transform = dataset, batch_size, transform
        self.views, self.seed, self.rank, self.world_size = views, seed, rank, world_size
        self.num_workers, self.shuffle, self.prefetch = num_workers, shuffle, prefetch

    def order(self, epoch: int) -> np.ndarray:
        if hasattr(self.dataset, "epoch_order"):
            full = self.dataset.epoch_order(self.seed, epoch)
        elif self.shuffle:
            full = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
        else:
            full = np.arange(len(self.dataset))
        return full[self.rank::self.world_size]

    def __len__(self) -> int:
        return len(self.order(0)) // self.batch_size

    def _sample(self, epoch: int, position: int, index: int) -> dict:
        loaded = self.dataset.load(int(index))
        img, label = loaded[0], loaded[1]
        dataset_id = loaded[2] if len(loaded) > 2 else 0
        rng = np.random.default_rng([self.seed, epoch, position])
        out = {"images": self.transform(img, rng), "labels": label, "dataset_ids": dataset_id}
        if self.views == 2:
            out["images_view2"] = self.transform(img, rng)
        return out

    def _batch(self, epoch: int, order: np.ndarray, b: int, pool) -> dict:
        lo = b * self.batch_size
        positions = [(lo + i) * self.world_size + self.rank for i in range(self.batch_size)]
        args = [(epoch, p, order[lo + i]) for i, p in enumerate(positions)]
        samples = list(pool.map(lambda a: self._sample(*a), args)) if pool else [self._sample(*a) for a in args]
        batch = {"images": np.stack([s["images"] for s in samples]),
                 "labels": np.array([s["labels"] for s in samples], dtype=np.int32),
                 "dataset_ids": np.array([s["dataset_ids"] for s in samples], dtype=np.int32)}
        if self.views == 2:
            batch["images_view2"] = np.stack([s["images_view2"] for s in samples])
        return batch

    def epoch(self, epoch: int, start_batch: int = 0):
        order = self.order(epoch)
        count = len(order) // self.batch_size
        if self.num_workers <= 0:
            for b in range(start_batch, count):
                yield self._batch(epoch, order, b, None)
            return
        yield from self._prefetched(epoch, order, range(start_batch, count))

    def _prefetched(self, epoch, order, batches):
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def produce():
            try:
                with ThreadPoolExecutor(self.num_workers) as pool:
                    for b in batches:
                        if stop.is_set():
                            return
                        q.put(self._batch(epoch, order, b, pool))
                q.put(done)
            except BaseException as exc:  # surface loader errors in the consumer
                q.put(exc)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
