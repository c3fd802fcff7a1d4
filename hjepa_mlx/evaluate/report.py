"""Evaluation reports: a text table that always puts the random-init baseline beside the trained numbers
(a trained score means little without it), and a JSON writer for the same data."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np


def format_report(rows: dict[str, dict], baseline_name: str = "random-init",
                  floors: tuple[str, ...] = ("raw-pixels",)) -> str:
    """A table with one line per metric and one column per encoder, the baselines last (`baseline_name`,
    then any of `floors` present, e.g. raw pixels); with exactly one other encoder, one final column per
    baseline gives its difference to that baseline.

    Args:
      rows: {encoder name: {metric name: value}}; values are numbers, bools or strings; a metric missing
        for an encoder shows as '-'. Metrics keep their first-seen order.
      baseline_name: the row that must be present (ValueError otherwise).
      floors: further baseline rows, shown (and differenced) when present.
    """
    if baseline_name not in rows:
        raise ValueError(f"the report needs the {baseline_name!r} baseline row beside the trained ones; "
                         f"got only {sorted(rows)}")
    baselines = [baseline_name] + [f for f in floors if f in rows and f != baseline_name]
    others = [n for n in rows if n not in baselines]
    names = others + baselines
    metrics = list(dict.fromkeys(m for n in names for m in rows[n]))
    deltas = baselines if len(others) == 1 else []
    header = ["metric", *names] + [f"{others[0]} - {b}" for b in deltas]
    table = [header]
    for m in metrics:
        cells = [m] + [_cell(rows[n].get(m)) for n in names]
        for b in deltas:
            a, z = rows[others[0]].get(m), rows[b].get(m)
            cells.append(_cell(a - z) if _is_number(a) and _is_number(z) else "")
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_json(path: str | os.PathLike, data) -> Path:
    """Write `data` as indented JSON, atomically (temp file, then rename); creates parent folders.

    NumPy scalars/arrays become numbers/lists, tuples lists, dict keys strings, NaN/Inf null (JSON has no
    NaN). Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in (x.tolist() if isinstance(x, np.ndarray) else x)]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.number)) and not isinstance(x, (bool, np.bool_))


def _cell(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if _is_number(x):
        return f"{x:.4g}"
    return str(x)
