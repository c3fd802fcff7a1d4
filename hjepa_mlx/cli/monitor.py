"""`python scripts/monitor.py RUN_DIR [RUN_DIR ...]`: a live terminal dashboard of training runs, read from
their run directories only (see hjepa_mlx/monitor.py). Several RUN_DIRs are shown side by side."""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from hjepa_mlx.cli.helpfmt import DefaultsFormatter
from hjepa_mlx.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="monitor.py", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (several: side by side)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    p.add_argument("--width", type=int, default=None, help="characters per line (default: the terminal's width)")
    return p


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from hjepa_mlx.monitor import frame

    if args.interval <= 0:
        raise UserError(f"--interval must be > 0 seconds, got {args.interval}")
    width = args.width or shutil.get_terminal_size((120, 40)).columns
    if args.once or not sys.stdout.isatty():
        print(frame(args.run_dirs, total_width=width))
        return 0
    try:
        while True:
            text = frame(args.run_dirs, total_width=args.width or shutil.get_terminal_size((120, 40)).columns)
            sys.stdout.write("\033[H\033[J" + text + f"\n\n(refreshing every {args.interval:g} s; Ctrl-C to quit)\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print()
        return 0


def main(argv=None) -> int:
    try:
        return run(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
