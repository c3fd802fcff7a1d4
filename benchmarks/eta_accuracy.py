"""How right was a finished run's ETA, and its console img/s?

python benchmarks/eta_accuracy.py RUN_DIR [--at 0.1,0.25,0.5,0.75]

Reads the run's metrics.jsonl (each training record carries the console's `eta_s` and steady-state
`images_per_s`) and the time its train.log was last written (the "done:" line, the end of the run). For
each fraction of the run prints the ETA the console showed at the first record past it beside the time
that actually remained, and the median logged img/s (compare with benchmarks/throughput.py). JSON next to it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hjepa_mlx.runfiles import read_json, read_metrics  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--at", default="0.1,0.25,0.5,0.75", help="fractions of the run's steps")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    log = run / "train.log"
    if not log.is_file() or "done:" not in log.read_text():
        print(f"error: {run} has no finished train.log (the run must have ended with its 'done:' line)",
              file=sys.stderr)
        return 2
    end = log.stat().st_mtime
    total = read_json(run / "run.json").get("total_steps")
    train = [r for r in read_metrics(run / "metrics.jsonl") if "eta_s" in r]
    if not total or not train:
        print(f"error: {run} has no run.json or no ETA in metrics.jsonl (a run from before the live console)",
              file=sys.stderr)
        return 2
    print(f"{run}: {total} steps; run ended {end - train[0]['time']:.0f} s after the first ETA")
    print(f"{'at':>6} {'step':>6} {'ETA shown':>10} {'remained':>10} {'error':>8}")
    rows = []
    for frac in (float(x) for x in args.at.split(",")):
        r = next((r for r in train if r["step"] >= frac * total), None)
        if r is None:
            continue
        actual = end - r["time"]
        rows.append({"fraction": frac, "step": r["step"], "eta_s": r["eta_s"], "actual_s": actual,
                     "error": r["eta_s"] / actual - 1})
        print(f"{frac:6.0%} {r['step']:6d} {r['eta_s']:9.0f}s {actual:9.0f}s {rows[-1]['error']:+8.1%}")
    ips = [r["images_per_s"] for r in train if "images_per_s" in r]
    print(f"console img/s: median {statistics.median(ips):.2f} (min {min(ips):.2f}, max {max(ips):.2f}) over "
          f"{len(ips)} log lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
