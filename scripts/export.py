#!/usr/bin/env python
"""Export one trained encoder: python scripts/export.py RUN_DIR|CHECKPOINT [--encoder target|context] [--format timm|mlx] [--out FILE]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also runs from a checkout without install

from hjepa_mlx.cli.export import main  # noqa: E402  (imports hjepa_mlx, which loads the BLAS before MLX)

if __name__ == "__main__":
    raise SystemExit(main())
