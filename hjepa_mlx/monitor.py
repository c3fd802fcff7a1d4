"""A terminal dashboard of one or more run directories, read from their files only (metrics.jsonl, run.json,
train.log, checkpoints/): works on a run that is going, finished, crashed, or copied from another machine.

Per run: progress and ETA, rate, the loss terms over time as small charts (sparklines), RankMe / feature
std with the collapse alarm's state, the last validation loss and k-NN, the best checkpoint, and the time
since the last metric (flagged as stalled when it is far beyond the run's usual interval).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from hjepa_mlx.budget import format_duration
from hjepa_mlx.errors import UserError
from hjepa_mlx.runfiles import best_checkpoint, last, latest_checkpoint, log_tail, read_json, read_metrics, series

BARS = "▁▂▃▄▅▆▇█"
CHARTS = [("loss_prediction", "prediction"), ("vicreg_invariance", "vicreg inv"), ("vicreg_variance", "vicreg var"),
          ("vicreg_covariance", "vicreg cov"), ("contrastive_loss", "nt-xent"), ("val_loss", "val loss"),
          ("lr", "lr"), ("knn_top1", "k-NN top-1"), ("rankme", "RankMe"), ("feature_std", "feature std")]
STALL_FACTOR, STALL_MIN_S = 5.0, 120.0     # stalled: no metric for 5x the usual interval (at least 2 min)


def sparkline(values: list[float], width: int) -> str:
    """The last `width` values (averaged into `width` buckets when there are more) as block characters."""
    if not values:
        return ""
    if len(values) > width:
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:]) if b > a]
    lo, hi = min(values), max(values)
    span = hi - lo
    return "".join(BARS[0 if span == 0 else min(int((v - lo) / span * len(BARS)), len(BARS) - 1)] for v in values)


def _num(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4g}"


@dataclass
class Snapshot:
    name: str
    step: int = 0
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    since_last_s: float | None = None
    usual_interval_s: float | None = None
    finished: bool = False
    stalled: bool = False
    alarm: str = "no check yet"
    lines: dict = field(default_factory=dict)    # label -> (last value, sparkline)
    val: str = "-"
    knn: str = "-"
    best: str = "-"
    warning: str = ""


def snapshot(run_dir: str | Path, *, now: float | None = None, chart_width: int = 24) -> Snapshot:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory; pass a run directory (e.g. runs/quickstart)")
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl: not a run directory, or the run has not logged a "
                        f"metric yet (the first comes after logging.log_frequency steps)")
    now = time.time() if now is None else now
    records = read_metrics(run_dir / "metrics.jsonl")
    info = read_json(run_dir / "run.json")
    snap = Snapshot(name=str(run_dir), total_steps=info.get("total_steps"), epochs=info.get("epochs"))
    if not records:
        started = info.get("started")
        snap.warning = ("no metric logged yet" + (f" ({format_duration(now - started)} since the run started; the "
                                                  f"first comes after logging.log_frequency steps)" if started else ""))
        return snap
    train = [r for r in records if "loss" in r]
    snap.step = max(int(r["step"]) for r in records)
    snap.epoch = records[-1].get("epoch")
    latest_time = max(float(r.get("time", 0)) for r in records)
    snap.since_last_s = max(now - latest_time, 0.0)
    times = [float(r["time"]) for r in train if "time" in r]
    gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
    snap.usual_interval_s = statistics.median(gaps) if gaps else None
    tail = log_tail(run_dir, 400)
    snap.finished = any(line.startswith("done:") for line in tail[-5:]) or (
        snap.total_steps is not None and snap.step >= snap.total_steps and not (run_dir / "run.json").exists())
    if not snap.finished and snap.since_last_s is not None:
        limit = max(STALL_FACTOR * (snap.usual_interval_s or 0.0), STALL_MIN_S)
        snap.stalled = snap.since_last_s > limit
    rate = last(records, "images_per_s")
    snap.images_per_s = rate.get("images_per_s") if rate else None
    eta = last(records, "eta_s")
    if eta and not snap.finished:
        snap.eta_s = max(eta["eta_s"] - (now - float(eta.get("time", now))), 0.0)
    for name, label in CHARTS:
        steps, values = series(records, name)
        if values:
            snap.lines[label] = (values[-1], sparkline(values, chart_width))
    check = last(records, "collapse_alarm")
    if check:
        patience = info.get("collapse_patience")
        state = "RAISED" if check["collapse_alarm"] else "quiet"
        snap.alarm = (f"{state} (last check step {check['step']}" + (f"; raises after {patience} bad checks in a row)"
                                                                     if patience else ")"))
    v = last(records, "val_loss")
    if v:
        snap.val = f"{_num(v['val_loss'])} at step {v['step']}"
    k = last(records, "knn_top1")
    if k:
        ks = " ".join(f"k={key.rsplit('_k', 1)[1]} {_num(val)}" for key, val in k.items()
                      if key.startswith("knn_top1_k") and key[10:].isdigit())
        snap.knn = f"{_num(k['knn_top1'])} at step {k['step']}" + (f" ({ks})" if ks else "")
    best = best_checkpoint(run_dir)
    if best:
        snap.best = f"{best['name']} (step {best['step']}, {best['metric']} {_num(best['value'])})"
    elif latest_checkpoint(run_dir):
        snap.best = f"none marked best; latest {latest_checkpoint(run_dir)}"
    warnings = [line for line in tail if line.startswith(("warning:", "stopping:", "error:"))]
    snap.warning = warnings[-1] if warnings else ""
    return snap


def render(snap: Snapshot, width: int = 60) -> list[str]:
    """The lines of one run's panel, each at most `width` characters."""
    lines = [snap.name if len(snap.name) <= width else "…" + snap.name[-(width - 1):]]
    if snap.total_steps:
        frac = min(snap.step / snap.total_steps, 1.0)
        bar_w = max(width - 28, 5)
        filled = int(frac * bar_w)
        lines.append(f"[{'#' * filled}{'.' * (bar_w - filled)}] {frac:6.1%} {snap.step:,}/{snap.total_steps:,}")
    else:
        lines.append(f"step {snap.step:,}")
    epoch = f"epoch {snap.epoch + 1}/{snap.epochs}" if snap.epoch is not None and snap.epochs else ""
    state = ("finished" if snap.finished else
             f"ETA {format_duration(snap.eta_s)}" if snap.eta_s is not None else "ETA -")
    rate = f"{snap.images_per_s:.1f} img/s" if snap.images_per_s else "- img/s"
    lines.append(f"{epoch}  {rate}  {state}".strip())
    since = format_duration(snap.since_last_s) if snap.since_last_s is not None else "-"
    usual = f" (usual {format_duration(snap.usual_interval_s)})" if snap.usual_interval_s else ""
    lines.append(f"last metric {since} ago{usual}" + ("  ** STALLED? **" if snap.stalled else ""))
    for label, (value, spark) in snap.lines.items():
        lines.append(f"{label:>12} {_num(value):>9} {spark}")
    lines.append(f"collapse alarm: {snap.alarm}")
    lines.append(f"val loss: {snap.val}")
    lines.append(f"k-NN: {snap.knn}")
    lines.append(f"best: {snap.best}")
    if snap.warning:
        words, line = snap.warning.split(), ""
        wrapped = []
        for word in words:
            if line and len(line) + 1 + len(word) > width:
                wrapped.append(line)
                line = "  " + word
            else:
                line = f"{line} {word}" if line else word
        wrapped.append(line)
        lines.extend(wrapped[:4])
    return [line[:width] for line in lines]


def side_by_side(panels: list[list[str]], width: int, gap: int = 3) -> str:
    height = max(len(p) for p in panels)
    rows = []
    for i in range(height):
        rows.append((" " * gap).join((p[i] if i < len(p) else "").ljust(width) for p in panels).rstrip())
    return "\n".join(rows)


def frame(run_dirs: list, *, total_width: int = 120, now: float | None = None) -> str:
    """One dashboard frame: the runs side by side (stacked when they do not fit the width)."""
    n = len(run_dirs)
    per_row = max(1, min(n, total_width // 48))
    width = max((total_width - 3 * (per_row - 1)) // per_row, 40)
    chart = max(width - 24, 8)
    panels = [render(snapshot(d, now=now, chart_width=chart), width) for d in run_dirs]
    stamp = time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))
    blocks = [side_by_side(panels[i:i + per_row], width) for i in range(0, n, per_row)]
    return f"hjepa monitor  {stamp}\n" + "\n\n".join(blocks)
