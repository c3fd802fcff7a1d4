"""Checkpoints are the whole train state plus what resuming needs (config, step, epoch, data position,
seeds, best metric).

On disk, in one directory (a run's `checkpoints/`):
  step_00001200.safetensors   every array of the state, flattened with `mlx.utils.tree_flatten` keys
                              (`params.encoder.blocks.0.attn.qkv.weight`); the JSON metadata is also
                              embedded in the safetensors header, so the file stands alone
  step_00001200.json          the metadata, readable by people and by `scripts/evaluate.py`
  latest                      text: the file name of the newest complete checkpoint
  best                        text: the file name of the checkpoint with the best metric (if any)

Writes are atomic: each file goes to a hidden temp file in the same directory, is flushed to disk, then
renamed over its final name (`os.replace`); the pointer is written last. A save that fails at any
point (full disk, a crash, a non-serialisable metadata value) leaves the previous checkpoints and both
pointers as they were. Pruning keeps the newest `keep_last_k` step checkpoints plus `latest` and `best`.

Loading rebuilds the template state's exact structure and key order (a different order would make the
compiled train step retrace), checks every key, shape and dtype, and turns a missing, truncated or
corrupt file, or a state from another model, into a `UserError` naming the file and what to do.
Python numbers in the state (ints, floats, bools) are stored as 0-d arrays and come back as Python
numbers of the template's type; float64 (arrays or Python floats) is stored as its raw bits in uint64
(MLX's safetensors writer has no float64); `None` leaves are skipped.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from hjepa_mlx.checkpoint_integrity import (HASH_KEY, CorruptCheckpoint, check_state_step, content_hash,
                                           nonfinite_keys, validate_metadata, verify_arrays)
from hjepa_mlx.errors import UserError

FORMAT_VERSION = 2
# Top-level state entries an older format version saved and today's state no longer has: loading such a
# file drops them (they still count in its content hash). Version 1 kept a PRNG key nothing read.
RETIRED = {1: ("key",)}
LATEST, BEST = "latest", "best"
SUFFIX = ".safetensors"
EMBEDDED_KEY = "hjepa_metadata"          # the metadata JSON's key inside the safetensors header
_STEP_NAME = re.compile(r"^step_(\d+)\.safetensors$")


def checkpoint_name(step: int) -> str:
    """The default base name of the checkpoint written after `step` optimizer steps."""
    return f"step_{int(step):08d}"


# ------------------------------------------------------------------ atomic files

def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); harmless where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """write(f) into a hidden temp file beside `path`, flush it to disk, rename it over `path`.
    On any failure the temp file is removed and `path` is untouched."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


# ------------------------------------------------------------------ state <-> flat arrays

def _to_array(key: str, leaf) -> mx.array:
    """The array stored for one leaf. float64 (arrays, and Python floats) is stored as its raw 64 bits
    in a uint64 array, because MLX's safetensors writer has no float64; `_from_saved` reverses it."""
    if isinstance(leaf, bool):   # before int: bool is an int subclass
        return mx.array(leaf, dtype=mx.bool_)
    if isinstance(leaf, int):
        return mx.array(leaf, dtype=mx.int64)
    if isinstance(leaf, float):
        leaf = mx.array(leaf, dtype=mx.float64)
    if not isinstance(leaf, mx.array):
        raise TypeError(f"state leaf '{key}' is a {type(leaf).__name__}; a checkpoint holds mx arrays and "
                        f"Python numbers only (put other values in the metadata)")
    return leaf.view(mx.uint64) if leaf.dtype == mx.float64 else leaf


def flatten_state(state) -> dict[str, mx.array]:
    """{dotted key: array} for every leaf of `state` that is not None, in `tree_flatten` order."""
    return {key: _to_array(key, leaf) for key, leaf in tree_flatten(state) if leaf is not None}


def _describe(a) -> str:
    return f"{tuple(a.shape)} {str(a.dtype).replace('mlx.core.', '')}"


def _from_saved(source: Path, key: str, saved: mx.array, ref):
    """The leaf for template leaf `ref` from its stored array, after checking shape and dtype."""
    if isinstance(ref, mx.array):
        stored = mx.uint64 if ref.dtype == mx.float64 else ref.dtype
        ok = saved.shape == ref.shape and saved.dtype == stored
        expected = _describe(ref)
    else:
        stored = {bool: mx.bool_, int: mx.int64, float: mx.uint64}[type(ref)]
        ok = saved.ndim == 0 and saved.dtype == stored
        expected = f"a Python {type(ref).__name__}"
    if not ok:
        raise UserError(f"checkpoint {source}: '{key}' has shape {_describe(saved)} there, the model expects "
                        f"{expected}; it was written by a different model or config - resume with the "
                        f"config saved beside it ({source.with_suffix('.json').name}) or start a new run "
                        f"in another --output-dir")
    if isinstance(ref, float) or (isinstance(ref, mx.array) and ref.dtype == mx.float64):
        saved = saved.view(mx.float64)
    return saved if isinstance(ref, mx.array) else type(ref)(saved.item())


def restore_state(arrays: dict[str, mx.array], template, source: Path):
    """The saved `arrays` in the structure and key order of `template`, after checking that both hold
    exactly the same keys with the same shapes and dtypes. `source` names the file in messages."""
    flat = [(key, leaf) for key, leaf in tree_flatten(template) if leaf is not None]
    missing = [key for key, _ in flat if key not in arrays]
    if missing:
        raise UserError(f"checkpoint {source} lacks '{missing[0]}' ({len(missing)} of the model's {len(flat)} "
                        f"arrays missing); it was written by a different model or config - resume with the "
                        f"config it was trained with, or start a new run in another --output-dir")
    extra = sorted(set(arrays) - {key for key, _ in flat})
    if extra:
        raise UserError(f"checkpoint {source} has '{extra[0]}' ({len(extra)} arrays this model does not have); "
                        f"it was written by a different model or config - resume with the config it was "
                        f"trained with, or start a new run in another --output-dir")
    values = {key: _from_saved(source, key, arrays[key], leaf) for key, leaf in flat}

    def rebuild(node, prefix: str):
        # Mirrors tree_flatten's key scheme, but follows the template instead of guessing lists from
        # integer-like keys as tree_unflatten does.
        join = (lambda k: f"{prefix}.{k}") if prefix else str
        if isinstance(node, dict):
            return {k: rebuild(v, join(k)) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(rebuild(v, join(i)) for i, v in enumerate(node))
        if node is None:
            return None
        return values[prefix]

    return rebuild(template, "")


# ------------------------------------------------------------------ save / load one checkpoint

def save_checkpoint(directory: str | Path, state, metadata: dict, *, name: str) -> Path:
    """Write `<name>.safetensors` and `<name>.json` in `directory` atomically, then point `latest` at it.

    state: the train state tree (mx arrays, Python numbers, None). metadata: JSON-serialisable dict.
    name: base file name without suffix (see `checkpoint_name`). Returns the .safetensors path.
    Everything that can fail on bad input (serialising the metadata, unsupported leaves) fails before
    the first byte is written. Pruning and the `best` pointer are `CheckpointManager`'s job.
    """
    directory = Path(directory)
    if Path(name).name != name or name in (LATEST, BEST) or not name:
        raise ValueError(f"checkpoint name {name!r} must be a plain file name other than {LATEST!r}/{BEST!r}")
    arrays = flatten_state(state)
    poisoned = nonfinite_keys(arrays)
    if poisoned:   # never let a NaN state replace the good checkpoints (or move `latest` to it)
        raise UserError(f"refusing to save a checkpoint: the state holds NaN/Inf ('{poisoned[0]}' and "
                        f"{len(poisoned) - 1} more); the checkpoints in {directory} were left as they were")
    meta_text = json.dumps({**metadata, "format_version": FORMAT_VERSION, HASH_KEY: content_hash(arrays)},
                           indent=1, allow_nan=True)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".*.tmp"):   # temp files left by a save that was killed
        stale.unlink(missing_ok=True)
    path = directory / f"{name}{SUFFIX}"
    _atomic_write(path, lambda f: mx.save_safetensors(f, arrays, metadata={EMBEDDED_KEY: meta_text}))
    _atomic_write_text(path.with_suffix(".json"), meta_text)
    _atomic_write_text(directory / LATEST, path.name + "\n")
    return path


def load_checkpoint(path: str | Path, template) -> tuple[object, dict]:
    """(state in the template's structure and key order, metadata dict) of the checkpoint file `path`.
    UserError for a missing, truncated or corrupt file, or one whose keys/shapes/dtypes differ."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; pass an existing .safetensors file or a run "
                        f"directory (its checkpoints/latest is used)")
    try:
        arrays, embedded = mx.load(str(path), format="safetensors", return_metadata=True)
        mx.eval(arrays)   # read everything now, so a truncated file fails here and not in the train step
    except Exception as exc:  # mlx raises RuntimeError/ValueError for truncated or foreign files
        raise CorruptCheckpoint(f"checkpoint {path} is unreadable ({exc}); it may be truncated or corrupt - "
                                f"resume from another checkpoint in {path.parent} by passing its path") from None
    meta = validate_metadata(path, _read_metadata(path, embedded))
    state = restore_state(_without_retired(arrays, meta, template), template, path)
    verify_arrays(path, arrays, meta)
    check_state_step(path, meta, state)
    return state, meta


def _without_retired(arrays: dict[str, mx.array], meta: dict, template) -> dict[str, mx.array]:
    """`arrays` less the entries its format version retired since, unless the template still has them."""
    version = meta.get("format_version", 1)
    retired = {name for v, names in RETIRED.items() if v >= version for name in names}
    drop = {name for name in retired if not (isinstance(template, dict) and name in template)}
    return {key: a for key, a in arrays.items() if key.split(".", 1)[0] not in drop}


def _read_metadata(path: Path, embedded: dict) -> dict:
    """The sidecar JSON; the copy inside the safetensors header when the sidecar is missing, corrupt or
    differs from it (the copy travels with the arrays it describes)."""
    meta_path = path.with_suffix(".json")
    inner = None
    if EMBEDDED_KEY in embedded:
        try:
            inner = json.loads(embedded[EMBEDDED_KEY])
        except ValueError:
            inner = None
    try:
        meta = json.loads(meta_path.read_text())
        if inner is not None and meta != inner:
            raise ValueError("it differs from the copy inside the checkpoint")
        return meta
    except (OSError, ValueError) as exc:   # JSONDecodeError is a ValueError
        if inner is not None:
            print(f"checkpoint: {meta_path.name} is missing or corrupt ({exc}); using the copy of the "
                  f"metadata stored inside {path.name}")
            return inner
        raise CorruptCheckpoint(f"checkpoint metadata {meta_path} is missing or corrupt ({exc}) and {path.name} "
                                f"holds no usable copy; resume from another checkpoint in {path.parent}") from None


# ------------------------------------------------------------------ a directory of checkpoints

class CheckpointManager:
    """Saves, prunes and finds the checkpoints of one run directory.

    directory: where the files go (created on the first save). keep_last_k: how many of the newest
    `step_*` checkpoints to keep (the `best` one is kept in addition). metric: the name recorded with
    `metric_value` (e.g. 'val_loss'). mode: 'min' or 'max', which direction of `metric` is better.
    """

    def __init__(self, directory: str | Path, *, keep_last_k: int = 3, metric: str = "val_loss",
                 mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if keep_last_k < 1:
            raise ValueError(f"keep_last_k must be >= 1, got {keep_last_k}")
        self.dir = Path(directory)
        self.keep_last_k = keep_last_k
        self.metric, self.mode = metric, mode

    # pointers ---------------------------------------------------------
    def _pointer(self, name: str) -> Path | None:
        p = self.dir / name
        if not p.is_file():
            return None
        target = p.read_text().strip()
        return self.dir / Path(target).name if target else None

    def latest(self) -> Path | None:
        """The checkpoint `latest` names, or None before the first save."""
        return self._pointer(LATEST)

    def best(self) -> Path | None:
        """The checkpoint `best` names, or None when no save carried a metric value."""
        return self._pointer(BEST)

    def best_value(self) -> float | None:
        """The metric value recorded with the best checkpoint (None if none or unreadable)."""
        best = self.best()
        if best is None:
            return None
        try:
            return json.loads(best.with_suffix(".json").read_text()).get("metric_value")
        except (OSError, json.JSONDecodeError):
            return None

    def step_checkpoints(self) -> list[Path]:
        """The `step_<n>.safetensors` files here, oldest step first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _STEP_NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def improves(self, value: float | None) -> bool:
        """Whether `value` beats the best recorded value under `mode` (a non-finite value never does)."""
        if value is None or not math.isfinite(value):
            return False
        best = self.best_value()
        return best is None or (value < best if self.mode == "min" else value > best)

    # save / load ------------------------------------------------------
    def save(self, state, metadata: dict, *, epoch: int, metric_value: float | None = None,
             name: str | None = None) -> Path:
        """Save `state` with `metadata` (+ epoch, metric, metric_value), move `latest` to it, move `best`
        to it when `metric_value` improves on the best so far, then prune. name: defaults to
        `checkpoint_name(metadata['step'])`. Returns the .safetensors path."""
        name = name or checkpoint_name(metadata.get("step", 0))
        meta = {**metadata, "epoch": epoch, "metric": self.metric, "metric_value": metric_value}
        better = self.improves(metric_value)
        path = save_checkpoint(self.dir, state, meta, name=name)
        if better:
            _atomic_write_text(self.dir / BEST, path.name + "\n")
        self._prune(keep=path)
        return path

    def _prune(self, keep: Path) -> None:
        files = self.step_checkpoints()
        protected = {keep, self.latest(), self.best(), *files[-self.keep_last_k:]}
        for f in files:
            if f not in protected:
                f.with_suffix(".json").unlink(missing_ok=True)
                f.unlink(missing_ok=True)

    def load(self, where: str | Path, template):
        """where: 'auto' (the newest good checkpoint here, or None when there is none yet), a checkpoint
        file (exactly that one), or a run / checkpoints directory (its newest good one). A corrupt,
        truncated or NaN checkpoint, or a `latest` naming a missing file, falls back to the newest good
        one with a message. -> (state, metadata)."""
        if str(where) == "auto":
            return self._newest_good(template)
        if Path(where).is_dir():
            from hjepa_mlx.checkpoint_series import current_series

            root = Path(where)
            found = CheckpointManager(current_series(root) if (root / "checkpoints").is_dir() else root)._newest_good(template)
            if found is None:
                raise UserError(f"no checkpoint in {where} (no '{LATEST}' pointer and no step_*.safetensors); "
                                f"pass a checkpoint file or a run directory that holds one")
            return found
        return load_checkpoint(Path(where), template)

    def _latest_or_newest(self) -> Path | None:
        """The file `latest` names, else (no pointer, or one naming a missing file) the newest step
        checkpoint; None when there is none. Its integrity is checked when it is loaded."""
        latest = self.latest()
        if latest is not None and latest.is_file():
            return latest
        files = self.step_checkpoints()
        if files:
            print(f"checkpoint: {self.dir} has no usable '{LATEST}' pointer; using the newest checkpoint, "
                  f"{files[-1].name}")
        return files[-1] if files else None

    def _newest_good(self, template):
        latest = self.latest()
        candidates, problems = [], []
        if latest is not None:
            if latest.is_file():
                candidates.append(latest)
            else:
                problems.append(f"{self.dir / LATEST} names {latest.name}, which does not exist")
        elif self.step_checkpoints():
            print(f"checkpoint: {self.dir} has no '{LATEST}' pointer; using the newest complete checkpoint")
        candidates += [p for p in reversed(self.step_checkpoints()) if p not in candidates]
        for path in candidates:
            try:
                found = load_checkpoint(path, template)
            except CorruptCheckpoint as exc:
                problems.append(str(exc))
                continue
            if problems:
                print(f"checkpoint: {'; '.join(problems)}; falling back to {path.name}, the newest good checkpoint")
            return found
        if problems:
            raise UserError(f"no usable checkpoint in {self.dir}: {'; '.join(problems)}; start a new run with "
                            f"--output-dir NEW_DIR")
        return None
