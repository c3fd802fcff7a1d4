"""fp32 matmul rate of MLX (with the BLAS hjepa_mlx loaded) vs NumPy, on the same machine.

python benchmarks/blas.py [--n 2048] [--repeats 5] [--out benchmarks/results/blas.json]
The foundation target: MLX reaches >= 70 % of NumPy's rate at 2048^3 inside an entry point.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, time_median, write_json  # noqa: E402  (loads BLAS first)

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS / "blas.json"))
    args = p.parse_args(argv)
    info = machine()
    print_machine(info)
    n = args.n
    flops = 2.0 * n ** 3
    a_np = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b_np = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a, b = mx.array(a_np), mx.array(b_np)
    t_mlx = time_median(lambda: mx.eval(a @ b), repeats=args.repeats)
    t_np = time_median(lambda: a_np @ b_np, repeats=args.repeats)
    diff = float(np.max(np.abs(np.array(a @ b) - a_np @ b_np)))
    mlx_rate, np_rate = flops / t_mlx["median_s"] / 1e9, flops / t_np["median_s"] / 1e9
    ratio = mlx_rate / np_rate
    print(f"{n}^3 fp32 matmul: mlx {mlx_rate:.1f} GFLOP/s, numpy {np_rate:.1f} GFLOP/s, "
          f"ratio {ratio:.2f} (target >= 0.70), max |diff| {diff:.2e}")
    write_json(args.out, {"machine": info, "n": n, "mlx": t_mlx, "numpy": t_np, "mlx_gflops": mlx_rate,
                          "numpy_gflops": np_rate, "ratio": ratio, "max_abs_diff": diff})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
