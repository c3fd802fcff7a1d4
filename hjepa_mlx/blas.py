"""Load an optimized BLAS into the process before MLX, on Linux.

The Linux `mlx-cpu` wheel links a reference BLAS: fp32 matmul runs at ~2 GFLOP/s
on x86, 50-100x below an optimized library. The dynamic loader binds MLX's
`cblas_sgemm` to the first definition in the global scope, so loading an optimized
library with RTLD_GLOBAL *before* `import mlx.core` makes MLX use it (no re-exec).

Choice, in order: `HJEPA_BLAS=off` (keep MLX's own BLAS), `HJEPA_BLAS=/path/lib.so`
(that library), Intel MKL from the `mkl` wheel (a dependency on Linux x86_64),
Debian's OpenBLAS (`libopenblas0-pthread`). On macOS nothing is loaded: MLX uses
Accelerate / Metal there.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "HJEPA_BLAS"

_DEBIAN_OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")


@dataclass(frozen=True)
class BlasChoice:
    name: str          # what a person reads: "Intel MKL", "MLX bundled reference BLAS", ...
    path: str | None   # the library loaded, None when nothing was loaded
    optimized: bool    # False means matmul runs at reference-BLAS speed
    reason: str        # why this was chosen


def _mkl_candidates() -> list[Path]:
    # The mkl wheel installs its libraries as data files into <prefix>/lib.
    roots = {sysconfig.get_path("data"), sys.prefix, sys.base_prefix,
             sysconfig.get_config_var("userbase") or ""}
    names = ("libmkl_rt.so.3", "libmkl_rt.so.2")
    return [Path(r) / "lib" / n for r in sorted(roots) if r for n in names]


def _load(path: Path) -> None:
    if "mkl" in path.name:
        # GNU OpenMP (libgomp) avoids mixing Intel's and GNU's OpenMP runtimes.
        os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
        # libgomp's workers spin ~300k iterations after each parallel region; MLX's own CPU thread and
        # the data-loader threads then starve (measured: a 60x slowdown with two processes on 2 cores).
        # A short spin keeps single-process speed (27.3 vs 27.2 img/s on the quick start) without that.
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def user_disabled() -> bool:
    """True when the user switched the optimized BLAS off on purpose (then slow runs are allowed)."""
    return os.environ.get(ENV_VAR, "").strip().lower() in {"off", "0", "none", "false"}


def _choose() -> BlasChoice:
    if sys.platform != "linux":
        return BlasChoice("platform BLAS (Accelerate on macOS)", None, True,
                          "not Linux: MLX's own BLAS is already optimized")
    setting = os.environ.get(ENV_VAR, "").strip()
    if user_disabled():
        return BlasChoice("MLX bundled reference BLAS", None, False,
                          f"{ENV_VAR}={setting} switched the optimized BLAS off")
    if "mlx.core" in sys.modules:
        return BlasChoice("MLX bundled reference BLAS", None, False,
                          "mlx.core was imported before hjepa_mlx, too late to load a BLAS; "
                          "import hjepa_mlx first")
    if setting:
        path = Path(setting)
        if not path.is_file():
            raise SystemExit(f"error: {ENV_VAR}={setting} is not a file; point it at a BLAS "
                             f"shared library exporting cblas_sgemm, or set {ENV_VAR}=off")
        _load(path)
        return BlasChoice(path.name, str(path), True, f"from {ENV_VAR}")
    errors = []
    for path, name in [(p, "Intel MKL") for p in _mkl_candidates()] + [(_DEBIAN_OPENBLAS, "OpenBLAS (Debian)")]:
        if not path.is_file():
            continue
        try:
            _load(path)
        except OSError as exc:  # found but unloadable: try the next one, say why at the end
            errors.append(f"{path}: {exc}")
            continue
        return BlasChoice(name, str(path), True, "preloaded before mlx.core")
    detail = ("; ".join(errors)) if errors else "no MKL wheel and no Debian libopenblas0-pthread found"
    return BlasChoice("MLX bundled reference BLAS", None, False,
                      f"{detail}; install with `pip install mkl` (x86_64)")


CHOICE: BlasChoice = _choose()



def matmul_gflops(n: int = 512, repeats: int = 3) -> float:
    """Measured fp32 `mx.matmul` rate on the default device (n x n x n, best of repeats)."""
    import mlx.core as mx

    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a @ b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def describe(measure: bool = True) -> str:
    """One line naming the BLAS in use (and, on Linux, its measured matmul rate)."""
    line = f"BLAS: {CHOICE.name}"
    if CHOICE.path:
        line += f" ({CHOICE.path})"
    line += f" - {CHOICE.reason}"
    if measure and sys.platform == "linux":
        line += f"; 512^3 fp32 matmul {matmul_gflops():.1f} GFLOP/s"
    if not CHOICE.optimized:
        line += "  [slow: ~2 GFLOP/s reference BLAS]"
    return line
