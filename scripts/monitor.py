#!/usr/bin/env python
"""Watch training runs: python scripts/monitor.py RUN_DIR [RUN_DIR ...] [--once] [--interval S]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also runs from a checkout without install

from hjepa_mlx.cli.monitor import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
