"""What makes a checkpoint trustworthy: a content hash of its arrays, finite values, sane metadata.

The hash (SHA-256 over every array's key, dtype, shape and bytes, in key order) is computed from the
state before it is written and stored in the metadata (sidecar JSON and the copy inside the
safetensors header); loading recomputes it, so a flipped byte, a truncated tensor or a file swapped
under a sidecar is caught instead of trained on. A state holding NaN/Inf is refused on save (a good
checkpoint is never replaced by a poisoned one) and on load (so resume falls back to an older one).
"""

from __future__ import annotations

import hashlib
import numbers

import mlx.core as mx
import numpy as np

from hjepa_mlx.errors import UserError

HASH_KEY = "content_sha256"
_FLOAT_TYPES = (mx.float16, mx.bfloat16, mx.float32)


class CorruptCheckpoint(UserError):
    """The file itself is damaged or poisoned (as opposed to belonging to another model): an older
    checkpoint of the same run may be used instead."""


def _host_bytes(a: mx.array) -> bytes:
    if a.dtype == mx.bfloat16:   # NumPy has no bfloat16: hash its raw 16-bit words
        a = a.view(mx.uint16)
    return np.ascontiguousarray(np.array(a, copy=False)).tobytes()


def content_hash(arrays: dict[str, mx.array]) -> str:
    """SHA-256 (hex) of the arrays' keys, dtypes, shapes and bytes, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = arrays[key]
        h.update(f"{key}|{a.dtype}|{tuple(a.shape)}|".encode())
        h.update(_host_bytes(a))
    return h.hexdigest()


def nonfinite_keys(arrays: dict[str, mx.array]) -> list[str]:
    """Keys of floating-point arrays holding a NaN or an infinity (float64 is stored as uint64 bits and
    skipped; the train state keeps none)."""
    floats = [k for k, a in arrays.items() if a.dtype in _FLOAT_TYPES]
    if not floats:
        return []
    flags = [mx.all(mx.isfinite(arrays[k])) for k in floats]
    mx.eval(flags)
    return [k for k, ok in zip(floats, flags) if not ok.item()]


def verify_arrays(path, arrays: dict[str, mx.array], meta: dict) -> None:
    """CorruptCheckpoint when the arrays do not match the hash in `meta` or hold non-finite values.
    A checkpoint written before hashes existed (no HASH_KEY) is only checked for finiteness."""
    expected = meta.get(HASH_KEY)
    if expected is not None and content_hash(arrays) != expected:
        raise CorruptCheckpoint(f"checkpoint {path} does not match its content hash (the file was altered or "
                                f"damaged after it was written)")
    bad = nonfinite_keys(arrays)
    if bad:
        raise CorruptCheckpoint(f"checkpoint {path} holds NaN/Inf values ('{bad[0]}' and {len(bad) - 1} more); "
                                f"it cannot be trained on")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def validate_metadata(path, meta) -> dict:
    """The metadata dict, or CorruptCheckpoint naming the first field of the wrong type or range."""
    if not isinstance(meta, dict):
        raise CorruptCheckpoint(f"checkpoint metadata of {path} is a {type(meta).__name__}, not a mapping")
    for key in ("step", "epoch", "batch_in_epoch"):
        if key in meta and not (_is_int(meta[key]) and 0 <= meta[key] < 2 ** 62):
            raise CorruptCheckpoint(f"checkpoint metadata of {path}: '{key}' is {meta[key]!r}; it must be a "
                                    f"non-negative integer")
    for key in ("metric_value", "best_metric"):
        v = meta.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise CorruptCheckpoint(f"checkpoint metadata of {path}: '{key}' is {v!r}; it must be a number or null")
    if HASH_KEY in meta and not (isinstance(meta[HASH_KEY], str) and len(meta[HASH_KEY]) == 64):
        raise CorruptCheckpoint(f"checkpoint metadata of {path}: '{HASH_KEY}' is not a SHA-256 hex digest")
    if "config" in meta and not isinstance(meta["config"], dict):
        raise CorruptCheckpoint(f"checkpoint metadata of {path}: 'config' is not a mapping")
    return meta


def check_state_step(path, meta: dict, state) -> None:
    """The metadata's step must be the step counter stored in the state itself."""
    if "step" in meta and isinstance(state, dict) and "step" in state:
        held = int(np.array(state["step"]))
        if held != meta["step"]:
            raise CorruptCheckpoint(f"checkpoint {path}: its metadata says step {meta['step']} but the state it "
                                    f"holds is at step {held}")
