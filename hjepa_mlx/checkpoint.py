"""Checkpoints are the whole state: safetensors (arrays) + JSON (config, step, epoch, data position, seeds,
best metric), each written to a temp file and renamed; a `latest` pointer; keep_last_k; a `best` pointer.

Loading puts the arrays back into the template state's structure and key order (a different order
would retrace the compiled step) and checks every key, shape and dtype. A missing, truncated or
corrupt file is a `UserError` naming it; a failed save leaves the previous checkpoints and pointers intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from hjepa_mlx.errors import UserError


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_save_arrays(path: Path, arrays: dict) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.safetensors")
    mx.save_safetensors(str(tmp), arrays)
    os.replace(tmp, path)


def load_state(path: Path, template: dict) -> dict:
    """Arrays of the checkpoint at `path` in the template's structure and order."""
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        arrays = mx.load(str(path))
    except Exception as exc:  # mlx raises RuntimeError/ValueError for truncated or foreign files
        raise UserError(f"checkpoint {path} is unreadable ({exc}); it may be truncated or corrupt - "
                        f"resume from another checkpoint in the same directory") from None
    flat = tree_flatten(template)
    missing = [k for k, _ in flat if k not in arrays]
    if missing:
        raise UserError(f"checkpoint {path} lacks '{missing[0]}' ({len(missing)} keys missing); it was written "
                        f"by a different model or config")
    extra = sorted(set(arrays) - {k for k, _ in flat})
    if extra:
        raise UserError(f"checkpoint {path} has '{extra[0]}', which this model does not; it was written by a "
                        f"different model or config")
    out = []
    for key, ref in flat:
        value = arrays[key]
        if value.shape != ref.shape or value.dtype != ref.dtype:
            raise UserError(f"checkpoint {path}: '{key}' has shape {value.shape} {value.dtype}, the model expects "
                            f"{ref.shape} {ref.dtype}; it was written by a different model or config")
        out.append((key, value))
    return tree_unflatten(out)


class CheckpointManager:
    def __init__(self, directory: str | Path, *, keep_last_k: int = 3, metric: str = "val_loss", mode: str = "min"):
        self.dir = Path(directory)
        self.keep_last_k = keep_last_k
        self.metric, self.mode = metric, mode

    # pointers ---------------------------------------------------------
    def _pointer(self, name: str) -> str | None:
        p = self.dir / name
        return p.read_text().strip() if p.is_file() else None

    def latest(self) -> Path | None:
        name = self._pointer("latest")
        return self.dir / name if name else None

    def best(self) -> Path | None:
        name = self._pointer("best")
        return self.dir / name if name else None

    def _best_value(self):
        best = self.best()
        if best is None:
            return None
        meta = best.with_suffix(".json")
        try:
            return json.loads(meta.read_text()).get("metric_value")
        except (OSError, json.JSONDecodeError):
            return None

    # save / load ------------------------------------------------------
    def save(self, state: dict, metadata: dict, *, epoch: int, metric_value: float | None = None) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        step = int(metadata.get("step", 0))
        name = f"step_{step:08d}"
        arrays = dict(tree_flatten(state))
        _atomic_save_arrays(self.dir / f"{name}.safetensors", arrays)
        meta = {**metadata, "epoch": epoch, "metric": self.metric, "metric_value": metric_value}
        _atomic_write_text(self.dir / f"{name}.json", json.dumps(meta, indent=1))
        _atomic_write_text(self.dir / "latest", f"{name}.safetensors")
        if metric_value is not None:
            best = self._best_value()
            better = best is None or (metric_value < best if self.mode == "min" else metric_value > best)
            if better:
                _atomic_write_text(self.dir / "best", f"{name}.safetensors")
        self._prune(keep=name)
        return self.dir / f"{name}.safetensors"

    def _prune(self, keep: str) -> None:
        files = sorted(self.dir.glob("step_*.safetensors"))
        protected = {keep + ".safetensors"}
        best = self._pointer("best")
        if best:
            protected.add(best)
        surplus = [f for f in files if f.name not in protected][:max(0, len(files) - self.keep_last_k)]
        for f in surplus:
            f.unlink(missing_ok=True)
            f.with_suffix(".json").unlink(missing_ok=True)

    def load(self, where: str | Path, template: dict):
        """where: 'auto' (latest here, or None when there is none) or a checkpoint path. -> (state, metadata)."""
        if str(where) == "auto":
            path = self.latest()
            if path is None:
                return None
        else:
            path = Path(where)
            if path.is_dir():
                manager = CheckpointManager(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
                path = manager.latest()
                if path is None:
                    raise UserError(f"no checkpoint in {where} (no 'latest' pointer)")
        state = load_state(path, template)
        meta_path = path.with_suffix(".json")
        try:
            metadata = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"checkpoint metadata {meta_path} is missing or corrupt ({exc})") from None
        return state, metadata
