"""What a resume must check before it continues a run: the config it was trained with, the position the
checkpoint claims, and the metrics written after that checkpoint.

Keys in SAFE_TO_CHANGE change neither the math nor the data order (logging, evaluation, checkpointing,
worker threads, where the data lives, and `training.epochs`, which extends or shortens the run: the
lr and EMA schedules are stretched over the new length, and a note says so). Any other difference is
refused with the list of differences, unless `--resume-with-changes`: then the run forks into a new
checkpoint series (`checkpoint_series.py`); the original checkpoints are never touched, and the original
`config.yaml` and `metrics.jsonl` are kept as `config-fork<N>-from.yaml` / `metrics-fork<N>-from.jsonl`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from hjepa_mlx.errors import UserError

SAFE_TO_CHANGE = ("experiment.name", "experiment.description", "experiment.output_dir", "data.num_workers",
                  "data.data_path", "data.datasets[*].path", "logging.", "checkpoint.", "evaluation.", "device",
                  "training.epochs", "training.max_nonfinite_steps", "training.stop_on_collapse")


def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(tree, (list, tuple)) and any(isinstance(v, dict) for v in tree):
        out[f"{prefix}.length"] = len(tree)
        for i, value in enumerate(tree):
            out.update(_flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = list(tree) if isinstance(tree, tuple) else tree
    return out


def _safe(path: str) -> bool:
    generic = path.split("[")[0] + ("[*]" + path.split("]", 1)[1] if "[" in path else "")
    return any(generic == s or (s.endswith(".") and generic.startswith(s)) for s in SAFE_TO_CHANGE)


def _normalised(saved: dict) -> dict:
    """The saved config through today's loader (fills keys added since, drops removed ones); the raw
    dict when today's rules refuse it."""
    from hjepa_mlx.config import load_config, to_dict

    try:
        return to_dict(load_config(None, raw=saved, resolved=True).config)
    except UserError:
        return saved


def config_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(dotted path, saved value, current value) of every leaf that differs."""
    a, b = _flatten(_normalised(saved)), _flatten(current)
    return [(k, a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_position(meta: dict, plan, changed: bool) -> None:
    """Refuse an epoch / batch position the run cannot have reached (e.g. epoch 999)."""
    epoch, batch, step = meta.get("epoch"), meta.get("batch_in_epoch"), meta.get("step")
    spe = plan.steps_per_epoch
    where = f"checkpoint at step {step}"
    if not isinstance(epoch, int) or not isinstance(batch, int) or not isinstance(step, int):
        raise UserError(f"{where}: its metadata lacks epoch / batch_in_epoch / step; it cannot be resumed")
    if epoch > plan.epochs or (epoch == plan.epochs and batch):
        raise UserError(f"{where}: its metadata says epoch {epoch}, beyond this run's training.epochs "
                        f"{plan.epochs}; raise training.epochs to continue, or the metadata is corrupt")
    if spe is not None and batch > spe:
        raise UserError(f"{where}: its metadata says batch {batch} of an epoch of {spe} steps; the metadata is "
                        f"corrupt or the epoch length changed")
    if spe is not None and not changed and step != epoch * spe + batch:
        raise UserError(f"{where}: its metadata says epoch {epoch}, batch {batch}, which is step "
                        f"{epoch * spe + batch} with {spe} steps per epoch; the metadata is corrupt")


def check_resume(config_dict: dict, meta: dict, plan, run_dir: Path, allow_changes: bool) -> Path | None:
    """None to continue in the same checkpoint series, or the new series directory to fork into.
    config_dict: this run's config (config.to_dict). Raises UserError for a config whose differences
    change the math or the data order."""
    from hjepa_mlx.checkpoint_series import next_series

    saved = meta.get("config")
    diffs = config_differences(saved, config_dict) if isinstance(saved, dict) else []
    unsafe = [d for d in diffs if not _safe(d[0])]
    listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in unsafe[:8]) + (
        f"; and {len(unsafe) - 8} more" if len(unsafe) > 8 else "")
    check_position(meta, plan, bool(unsafe))
    if any(k == "training.epochs" for k, _, _ in diffs):
        print(f"resume: training.epochs changed ({next(o for k, o, _ in diffs if k == 'training.epochs')} -> "
              f"{plan.epochs}); the lr and EMA schedules are stretched over the new length")
    if not unsafe:
        return None
    if not allow_changes:
        raise UserError(f"resume refused: the config differs from the one this checkpoint was trained with in "
                        f"keys that change the math or the data order ({listing}); resume with the original "
                        f"config ({run_dir / 'config.yaml'}), or pass --resume-with-changes to continue in a "
                        f"new checkpoint series (the original checkpoints are kept)")
    fork = next_series(run_dir)
    tag = fork.name.split("-", 1)[1]
    old_config = run_dir / "config.yaml"
    if old_config.is_file():
        os.replace(old_config, run_dir / f"config-{tag}-from.yaml")
    if (run_dir / "metrics.jsonl").is_file():    # the fork cuts rows after its checkpoint: keep the original's
        shutil.copy2(run_dir / "metrics.jsonl", run_dir / f"metrics-{tag}-from.jsonl")
    line = (f"resume: --resume-with-changes: {listing}; continuing in a new checkpoint series {fork} (the "
            f"original checkpoints are kept unchanged)")
    print(line)
    with open(run_dir / "train.log", "a", encoding="utf-8") as log:    # on record beside the run's lines
        log.write(line + "\n")
    return fork


def truncate_metrics(run_dir: Path, meta: dict, checkpoint_in_run: bool) -> int:
    """Drop metrics.jsonl rows written after the checkpoint (and a line torn by a kill), so a resumed run
    logs no step twice. Returns the number of rows dropped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0
    data = original = path.read_bytes()
    cut = meta.get("metrics_bytes")
    if checkpoint_in_run and isinstance(cut, int) and 0 <= cut < len(data):
        data = data[:cut]
    step = meta.get("step", 0)
    kept = []
    for line in data.splitlines(keepends=True):
        try:
            row = json.loads(line)
            ok = line.endswith(b"\n") and isinstance(row, dict) and isinstance(row.get("step"), int) \
                and row["step"] <= step
        except ValueError:
            ok = False
        if ok:
            kept.append(line)
    new = b"".join(kept)
    if new == original:
        return 0
    tmp = path.with_name(".metrics.jsonl.tmp")
    tmp.write_bytes(new)
    os.replace(tmp, path)
    return len(original.splitlines()) - len(kept)
