"""How far `--dry-run`'s extrapolation from small batches is from a full-batch measurement.

python benchmarks/calibration.py CONFIG [--set KEY=VALUE ...] [--repeats 2] [--small B1,B2] [--out PATH]

Times the config's train step (accumulation 1, synthetic inputs, like hjepa_mlx/calibrate.py) at the two
small batch sizes the dry-run uses when the full batch is too slow to time (default: max(2, B/8) and twice
that) and at the config's full batch B, in turn (b1, b2, B, b1, b2, B, ...) so a changing machine load hits
all alike; then extrapolates the small-batch medians linearly to B and prints the error against the
full-batch median, for the step time and for peak memory. JSON next to the table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, write_json  # noqa: E402  (loads BLAS first)

import mlx.core as mx  # noqa: E402

from hjepa_mlx.calibrate import StepTimer, extrapolate  # noqa: E402
from hjepa_mlx.config import load_config  # noqa: E402
from hjepa_mlx.errors import UserError  # noqa: E402
from hjepa_mlx.config.plan import make_plan  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per batch size (after one compiling step)")
    p.add_argument("--small", default=None, help="the two small batch sizes, e.g. 2,4 (default: max(2, B/8) and 2x)")
    p.add_argument("--out", default=None, help="JSON output (default: benchmarks/results/calibration_NAME.json)")
    args = p.parse_args(argv)
    info = machine()
    print_machine(info)
    try:
        config = load_config(args.config, args.overrides).config
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    full = config.data.batch_size
    b1 = max(2, full // 8)
    b1, b2 = (int(x) for x in args.small.split(",")) if args.small else (b1, 2 * b1)
    timer = StepTimer(config, make_plan(config))
    sizes = [b1, b2, full]
    peaks, firsts = {}, {}
    for b in sizes:     # compile each shape once, and record its peak memory on a steady step
        firsts[b] = timer.once(b)
        mx.reset_peak_memory()
        timer.once(b)
        peaks[b] = mx.get_peak_memory()
    times = {b: [] for b in sizes}
    for _ in range(args.repeats):
        for b in sizes:
            times[b].append(timer.once(b))
    med = {b: statistics.median(t) for b, t in times.items()}
    t_hat = extrapolate(b1, med[b1], b2, med[b2], full)
    m_hat = extrapolate(b1, peaks[b1], b2, peaks[b2], full)
    print(f"\n{Path(args.config).stem}: batch {full}, image {config.data.image_size}, {config.model.encoder_type}, "
          f"recomputation {config.training.use_gradient_checkpointing}")
    print(f"{'batch':>6} {'s/step (median)':>16} {'min':>8} {'max':>8} {'peak GB':>8}")
    for b in sizes:
        print(f"{b:6d} {med[b]:16.3f} {min(times[b]):8.3f} {max(times[b]):8.3f} {peaks[b] / 1e9:8.3f}")
    t_err, m_err = t_hat / med[full] - 1, m_hat / peaks[full] - 1
    print(f"extrapolated from batch {b1} and {b2} to {full}: {t_hat:.3f} s/step vs measured {med[full]:.3f} "
          f"({t_err:+.1%}); peak {m_hat / 1e9:.3f} GB vs measured {peaks[full] / 1e9:.3f} GB ({m_err:+.1%})")
    write_json(args.out or RESULTS / f"calibration_{Path(args.config).stem}.json",
               {"machine": info, "config": args.config, "overrides": args.overrides, "small": [b1, b2], "full": full,
                "times_s": times, "first_call_s": firsts, "peak_bytes": peaks,
                "extrapolated_step_s": t_hat, "measured_step_s": med[full], "step_error": t_err,
                "extrapolated_peak_bytes": m_hat, "measured_peak_bytes": peaks[full], "peak_error": m_err})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
