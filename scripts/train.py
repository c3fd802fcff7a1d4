#!/usr/bin/env python
"""Train H-JEPA: python scripts/train.py CONFIG [--set key=value] [--dry-run] ..."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also runs from a checkout without install

from hjepa_mlx.cli.train import main  # noqa: E402  (imports hjepa_mlx, which loads the BLAS before MLX)

if __name__ == "__main__":
    raise SystemExit(main())
