"""hjepa-mlx: H-JEPA (hierarchical I-JEPA) on Apple MLX.

`hjepa_mlx.blas` runs first on purpose: on Linux it loads an optimized BLAS
before anything imports `mlx.core` (see that module); `hjepa_mlx.allocator` then tells glibc to keep
freed memory (MLX's CPU backend has no buffer cache).

`hjepa_mlx.load_encoder(path)` loads a trained encoder (see `hjepa_mlx.pretrained`); it is imported on
first use, so `import hjepa_mlx` stays light.
"""

from hjepa_mlx import blas as _blas  # noqa: F401  (must precede any mlx import)
from hjepa_mlx import allocator as _allocator  # noqa: F401  (before MLX allocates: keep freed buffers)

__version__ = "0.1.0"


def __getattr__(name):
    if name == "load_encoder":
        from hjepa_mlx.pretrained import load_encoder
        return load_encoder
    raise AttributeError(f"module 'hjepa_mlx' has no attribute {name!r}")
