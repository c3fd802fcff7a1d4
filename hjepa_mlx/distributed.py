"""Data-parallel training on MLX's own engine: `mx.distributed` groups started by `mlx.launch`.

How one optimizer step of N ranks equals one step of a single process with the whole batch:

* `data.batch_size` is the *global* batch; each rank loads `batch_size / N` images. The loader deals
  the epoch's order round-robin (rank r takes positions r, r + N, ...), so the N ranks' batch b is the
  single process's batch b, and each image's augmentation is seeded by its position in the epoch.
* Masks are drawn for the whole global batch with the single-process seed (seed, micro-batch index)
  and each rank keeps its rows (`shard_masks`): image p gets the same masks whatever N is. The price:
  every rank draws the global batch's masks (NumPy, small next to the step).
* Gradients are averaged once per optimizer step, after accumulation and before clipping, with one
  `all_sum` per bucket of `distributed.bucket_mb` (the gradients flattened and concatenated), so
  clipping, AdamW and the EMA see the same numbers on every rank and stay identical.
* VICReg and NT-Xent need batch statistics. With `distributed.batch_statistics: global` the pooled
  features are all-gathered, so every rank computes the loss of the global batch. `all_gather`'s
  gradient is only this rank's slice of the cotangent, while the average over ranks divides by N; the
  cotangent of the gathered features is identical on every rank (same loss of the same gathered
  values), so `gather_rows` scales its slice by N - exactly what an all-reduce of the cotangents would
  give, without one. `local` skips the gather (each rank's slice alone: cheaper, a different loss).
* A rank that waits longer than `distributed.timeout_s` for the others (a peer hung, or never
  started) prints one line and exits (`Watchdog`); a peer that died is reported by the ring backend
  as a lost connection, turned into one line by `comm_error`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from hjepa_mlx.errors import UserError

EXIT_TIMEOUT = 2


@dataclass(frozen=True)
class World:
    """The processes of one run. rank 0 alone writes logs, TensorBoard and checkpoints."""

    group: object = None            # mx.distributed.Group, None for one process
    rank: int = 0
    size: int = 1
    backend: str = "none"
    batch_statistics: str = "global"
    bucket_bytes: int = 64 << 20
    timeout_s: float = 300.0
    check_every: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    def describe(self) -> str:
        if not self.is_distributed:
            return "1 process (several: mlx.launch -n N scripts/train.py CONFIG; README 'Several processes')"
        return (f"{self.size} processes ({self.backend} backend), this is rank {self.rank}; rank 0 writes logs "
                f"and checkpoints; VICReg/NT-Xent statistics over the {self.batch_statistics} batch")


SINGLE = World()
# set by mlx.launch (ring, nccl, jaccl) or mpirun for each rank
_LAUNCH_VARIABLES = ("MLX_RANK", "MLX_HOSTFILE", "MLX_WORLD_SIZE", "MLX_JACCL_COORDINATOR", "OMPI_COMM_WORLD_SIZE",
                     "PMI_SIZE")


def init_world(settings) -> World:
    """Join the group `mlx.launch` started (settings: the config's `distributed` section), or run alone.
    A missing peer makes `mx.distributed.init` wait forever, so the watchdog guards it."""
    backend = settings.backend
    if backend != "any" and not mx.distributed.is_available(backend):
        raise UserError(f"distributed.backend '{backend}' is not available in this MLX build; use 'any' or one of "
                        f"{[b for b in ('ring', 'mpi', 'nccl', 'jaccl') if mx.distributed.is_available(b)]}")
    base = World(batch_statistics=settings.batch_statistics, bucket_bytes=int(settings.bucket_mb * (1 << 20)),
                 timeout_s=settings.timeout_s, check_every=settings.check_every)
    if not any(name in os.environ for name in _LAUNCH_VARIABLES):     # nobody to wait for: no watchdog
        group = mx.distributed.init(strict=False, backend=backend)
    else:
        rank = os.environ.get("MLX_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "?"))
        with _process_watchdog(settings.timeout_s, f"error: rank {rank} waited more than {settings.timeout_s:g} s "
                               f"(distributed.timeout_s) while joining the other processes (mx.distributed.init): "
                               f"another rank died, hung or never started; stopping"):
            group = mx.distributed.init(strict=False, backend=backend)
    if group.size() == 1:
        return base
    return replace(base, group=group, rank=group.rank(), size=group.size(),
                   backend=backend if backend != "any" else _launched_backend())


def _launched_backend() -> str:
    """The backend mlx.launch set up, read from the environment it gives each rank."""
    env = os.environ
    if "MLX_IBV_DEVICES" in env or "MLX_JACCL_COORDINATOR" in env:
        return "jaccl"
    if "NCCL_HOST_IP" in env:
        return "nccl"
    if "OMPI_COMM_WORLD_SIZE" in env or "PMI_SIZE" in env:
        return "mpi"
    return "ring" if "MLX_HOSTFILE" in env else "any"


# ---------------------------------------------------------------- a rank that never answers

@contextmanager
def _process_watchdog(timeout_s: float, message: str):
    """mx.distributed.init holds the GIL while it waits for its peers, so no thread of ours can run: a
    small child process prints `message` and kills this one (SIGKILL) unless the block ends in time."""
    code = (f"import os, sys, time\ntime.sleep({timeout_s!r})\nprint({message!r}, file=sys.stderr, flush=True)\n"
            f"os.kill({os.getpid()}, 9)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL)
    try:
        yield
    finally:
        child.kill()
        child.wait()


class Watchdog:
    """`with watchdog.guard(what):` — if the block takes longer than timeout_s (a collective waiting for a
    rank that hung or never started), print one line and end the process. A daemon thread checks the
    deadline; MLX releases the GIL while it waits, so the thread runs."""

    _instances: dict = {}

    def __init__(self, timeout_s: float, rank: int):
        self.timeout_s, self.rank = timeout_s, rank
        self._deadline, self._what = None, ""
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True, name="hjepa-watchdog").start()

    @classmethod
    def for_world(cls, world: World):
        """The watchdog of this process; one that never fires for a single process (nothing to wait for)."""
        if not world.is_distributed:
            return _NoWatchdog()
        key = (world.timeout_s, world.rank)
        if key not in cls._instances:
            cls._instances[key] = cls(world.timeout_s, world.rank)
        return cls._instances[key]

    @contextmanager
    def guard(self, what: str):
        with self._lock:
            self._deadline, self._what = time.monotonic() + self.timeout_s, what
        try:
            yield
        finally:
            with self._lock:
                self._deadline = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout_s / 4))
            with self._lock:
                late = self._deadline is not None and time.monotonic() > self._deadline
                what = self._what
            if late:
                print(f"error: rank {self.rank} waited more than {self.timeout_s:g} s (distributed.timeout_s) while "
                      f"{what}: another rank died, hung or never started; stopping", file=sys.stderr, flush=True)
                os._exit(EXIT_TIMEOUT)


class _NoWatchdog:
    @contextmanager
    def guard(self, what: str):
        yield


def comm_error(exc: BaseException, world: World) -> str | None:
    """One line for a failed collective (a peer's socket closed), None for any other error."""
    text = str(exc)
    if world.is_distributed and ("[ring]" in text or "[mpi]" in text or "[nccl]" in text or "peer" in text):
        return (f"rank {world.rank}: the connection to another rank was lost ({text.strip()}); it died or was "
                f"stopped - see its own message above; resume every rank with --resume auto")
    return None


# ---------------------------------------------------------------- inside the compiled step

def mean_across(world: World):
    """tree -> the element-wise mean of `tree` over the ranks: leaves flattened and concatenated into
    buckets of at most `bucket_bytes` (per dtype), one all_sum per bucket. None for one process."""
    if not world.is_distributed:
        return None

    def mean_tree(tree):
        leaves = tree_flatten(tree)
        buckets, current, size, dtype = [], [], 0, None
        for i, (_, x) in enumerate(leaves):
            if current and (size + x.nbytes > world.bucket_bytes or x.dtype != dtype):
                buckets.append(current)
                current, size = [], 0
            current.append(i)
            size, dtype = size + x.nbytes, x.dtype
        if current:
            buckets.append(current)
        out = [None] * len(leaves)
        for bucket in buckets:
            parts = [leaves[i][1] for i in bucket]
            flat = mx.concatenate([p.reshape(-1) for p in parts]) if len(parts) > 1 else parts[0].reshape(-1)
            flat = mx.distributed.all_sum(flat, group=world.group) / world.size
            offset = 0
            for i, p in zip(bucket, parts):
                out[i] = (leaves[i][0], flat[offset:offset + p.size].reshape(p.shape))
                offset += p.size
        return tree_unflatten(out)

    return mean_tree


def bucket_count(tree, bucket_bytes: int) -> int:
    """How many all_sum calls `mean_across` makes for `tree` (for the plan and the benchmark)."""
    count, size, dtype = 0, 0, None
    for _, x in tree_flatten(tree):
        if count == 0 or size + x.nbytes > bucket_bytes or x.dtype != dtype:
            count, size = count + 1, 0
        size, dtype = size + x.nbytes, x.dtype
    return count


def _global_statistics(world: World) -> bool:
    """Whether batch statistics span every rank (distributed, distributed.batch_statistics 'global')."""
    return world.is_distributed and world.batch_statistics == "global"


def gather_rows(world: World):
    """z (B, D) -> (N * B, D), the rows of every rank (rank order), whose gradient is N times this rank's
    slice of the cotangent (see the module docstring). None unless distributed with global statistics."""
    if not _global_statistics(world):
        return None
    group, n, rank = world.group, world.size, world.rank

    @mx.custom_function
    def gather(z):
        return mx.distributed.all_gather(z, group=group)

    @gather.vjp
    def gather_vjp(primals, cotangent, output):
        z = primals[0] if isinstance(primals, (list, tuple)) else primals    # one input: the array itself
        b = z.shape[0]
        return cotangent[rank * b:(rank + 1) * b] * n

    return gather


def global_row_mean(world: World):
    """z (B, D) -> (D,), the mean of every rank's rows (equal B on every rank). None where gather_rows is None.

    Its cotangent differs on every rank (each sees only its own rows' paths, scaled by N by gather_rows),
    so the backward all-sums it: this rank's rows get the mean over ranks of the cotangents / B, which
    after the gradient average is the single-process gradient (tests/test_distributed.py)."""
    if not _global_statistics(world):
        return None
    group, n = world.group, world.size

    @mx.custom_function
    def row_mean(z):
        return mx.distributed.all_sum(z.sum(axis=0), group=group) / (n * z.shape[0])

    @row_mean.vjp
    def row_mean_vjp(primals, cotangent, output):
        z = primals[0] if isinstance(primals, (list, tuple)) else primals
        shared = mx.distributed.all_sum(cotangent, group=group) / n
        return mx.broadcast_to(shared / z.shape[0], z.shape)

    return row_mean


# ---------------------------------------------------------------- host side

def shard_masks(world: World, masks):
    """This rank's rows (rank, rank + N, ...) of a `MaskBatch` drawn for the global batch: the rows of
    the images the loader gave this rank."""
    return masks.rows(world.rank, world.size)


def per_rank_batch(world: World, batch_size: int) -> int:
    if batch_size % world.size:
        raise UserError(f"data.batch_size {batch_size} is not divisible by the {world.size} processes; it is the "
                        f"global batch, split evenly: use a multiple of {world.size}")
    return batch_size // world.size


def _checksum(tree) -> mx.array:
    """Per-leaf sums (float32): equal on two ranks iff (almost surely) the trees are equal."""
    return mx.stack([mx.sum(x.astype(mx.float32)) for _, x in tree_flatten(tree)])


def config_fingerprint(config_dict: dict) -> np.ndarray:
    digest = hashlib.sha256(json.dumps(config_dict, sort_keys=True, default=str).encode()).digest()
    return np.frombuffer(digest[:16], dtype=np.int32).copy()


def check_same(world: World, state: dict, *, config_dict: dict | None = None, when: str = "") -> None:
    """Raise UserError unless every rank holds the same config (hash), step, parameters, EMA target and AdamW
    state (per-leaf checksums, compared exactly: the ranks compute identical numbers)."""
    if not world.is_distributed:
        return
    parts = [mx.array([int(state["step"].item())], dtype=mx.int32)]
    if config_dict is not None:
        parts.append(mx.array(config_fingerprint(config_dict)))
    ints = mx.distributed.all_gather(mx.concatenate(parts)[None], group=world.group)
    sums = mx.distributed.all_gather(mx.concatenate([_checksum(state[part]) for part in ("params", "target", "opt")])[None],
                                     group=world.group)
    with Watchdog.for_world(world).guard(f"comparing the ranks' state {when}"):
        mx.eval(ints, sums)
    ints, sums = np.array(ints), np.array(sums)
    for r in range(1, world.size):
        if config_dict is not None and not np.array_equal(ints[r, 1:], ints[0, 1:]):
            raise UserError(f"rank {r}'s config differs from rank 0's; start every rank with the same config file "
                            f"and the same --set overrides")
        if ints[r, 0] != ints[0, 0]:
            raise UserError(f"rank {r} is at step {ints[r, 0]} but rank 0 at step {ints[0, 0]} {when}; every rank "
                            f"must resume from the same checkpoint (copy rank 0's run directory to every machine)")
        if not np.array_equal(sums[r], sums[0]):
            raise UserError(f"rank {r}'s parameters, EMA target or AdamW state differ from rank 0's {when}; every rank "
                            f"must start from the same checkpoint (copy rank 0's run directory to every machine)")


def stop_vote(world: World, stop):
    """An all_sum of this rank's stop request (`stop.signal`: Ctrl-C / SIGTERM), evaluated with the step,
    so every rank stops after the same step even when the signal reached them at different times. None
    alone (and `stop.signal` is not read: one process checks it after the step, as before)."""
    if not world.is_distributed:
        return None
    return mx.distributed.all_sum(mx.array([1.0 if stop.signal else 0.0]), group=world.group)
