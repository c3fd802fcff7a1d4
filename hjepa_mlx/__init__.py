"""hjepa-mlx: H-JEPA (hierarchical I-JEPA) on Apple MLX.

`hjepa_mlx.blas` runs first on purpose: on Linux it loads an optimized BLAS
before anything imports `mlx.core` (see that module).
"""

from hjepa_mlx import blas as _blas  # noqa: F401  (must precede any mlx import)

__version__ = "0.1.0"
