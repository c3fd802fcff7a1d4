"""A text table of evaluation rows that always shows the random-init baseline beside the trained encoder."""

from __future__ import annotations


def format_report(rows: dict[str, dict], baseline_name: str = "random-init") -> str:
    if baseline_name not in rows:
        raise ValueError(f"the report needs the {baseline_name!r} baseline row")
    columns = sorted({c for metrics in rows.values() for c in metrics})
    width = max(len(n) for n in rows) + 2
    lines = ["encoder".ljust(width) + "".join(f"{c:>16}" for c in columns)]
    for name, metrics in rows.items():
        cells = "".join(f"{metrics[c]:>16.4g}" if c in metrics else f"{'-':>16}" for c in columns)
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)
