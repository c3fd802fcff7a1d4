"""The optimized BLAS is loaded before MLX, and MLX's matmul agrees with NumPy's (float64 reference)."""

import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx import blas

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(sys.platform != "linux", reason="the BLAS preload only acts on Linux")
def test_optimized_blas_is_loaded_on_linux():
    assert blas.CHOICE.optimized, blas.CHOICE.reason
    assert blas.CHOICE.path and Path(blas.CHOICE.path).is_file()


def test_matmul_matches_float64_reference():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 96)), rng.standard_normal((96, 80))
    out = np.array(mx.array(a.astype(np.float32)) @ mx.array(b.astype(np.float32)))
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-4)


def test_switch_off_is_reported():
    code = "import hjepa_mlx; from hjepa_mlx import blas; print(blas.describe(measure=False))"
    env = {**os.environ, "HJEPA_BLAS": "off"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if sys.platform == "linux":
        assert "HJEPA_BLAS=off switched the optimized BLAS off" in out.stdout, out.stderr


def test_blas_benchmark_prints_both_rates(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/blas.py"), "--n", "256", "--repeats", "2",
                          "--out", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "mlx" in out.stdout and "numpy" in out.stdout and (tmp_path / "b.json").exists()
