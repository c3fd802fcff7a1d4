"""Reading a run directory back (for plots.py and monitor.py): metrics.jsonl, run.json, train.log, the
checkpoint pointers. Works on a run that is going, finished, crashed or copied from another machine: a
half-written last line of metrics.jsonl is skipped, missing files read as empty.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (each {step, epoch, time, name: value...}), in file order; lines
    that are not complete JSON objects (a line being written right now) are skipped."""
    records = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def series(records: list[dict], name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar over the records that have it (non-finite values left out); a step
    logged twice (e.g. after a resume) keeps its last value."""
    by_step = {}
    for r in records:
        value = r.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            by_step[int(r["step"])] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def last(records: list[dict], name: str):
    """The last record holding `name` (None when none does)."""
    for r in reversed(records):
        if name in r:
            return r
    return None


def read_json(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def best_checkpoint(run_dir: str | Path) -> dict | None:
    """{'name', 'step', 'metric', 'value'} of the best checkpoint (checkpoints/best and its JSON), or None."""
    ckdir = Path(run_dir) / "checkpoints"
    try:
        name = (ckdir / "best").read_text().strip()
    except OSError:
        return None
    meta = read_json((ckdir / name).with_suffix(".json"))
    policy = meta.get("config", {}).get("checkpoint", {})
    return {"name": name, "step": meta.get("step"), "metric": policy.get("metric"), "value": meta.get("best_metric")}


def latest_checkpoint(run_dir: str | Path) -> str | None:
    try:
        return (Path(run_dir) / "checkpoints" / "latest").read_text().strip() or None
    except OSError:
        return None


def log_tail(run_dir: str | Path, lines: int = 200) -> list[str]:
    try:
        return Path(run_dir, "train.log").read_text(encoding="utf-8").splitlines()[-lines:]
    except OSError:
        return []
