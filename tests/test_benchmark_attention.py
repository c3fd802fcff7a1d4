"""benchmarks/attention.py --quick runs, exits 0 and writes the JSON fields the README quotes."""

import json
import subprocess
import sys
from pathlib import Path

from hjepa_mlx import kernels

ROOT = Path(__file__).resolve().parents[1]


def test_quick_attention_benchmark_writes_its_json(tmp_path):
    out = tmp_path / "attention.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "attention.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "BLAS:" in proc.stdout and "MLX" in proc.stdout
    data = json.loads(out.read_text())
    assert {"machine", "device", "mlx", "settings", "results"} <= data.keys()
    assert data["results"], "no benchmark rows"
    for row in data["results"]:
        assert {"model", "heads", "head_dim", "seq_len", "batch", "pass", "fused", "reference", "speedup",
                "max_abs_diff", "max_rel_diff"} <= row.keys()
        for path in ("fused", "reference"):
            assert {"median_s", "min_s", "max_s", "repeats", "peak_memory_bytes"} <= row[path].keys()
            assert row[path]["median_s"] > 0
        assert row["max_rel_diff"] <= 2e-6, row      # the C++ softmax on the CPU: float32 rounding apart
        if kernels.available():                      # the C++ attention kernel's column, the same numbers
            assert row["kernel"]["median_s"] > 0 and row["kernel_speedup"] > 0
            assert row["kernel_max_rel_diff"] <= 2e-6, row
    assert {row["pass"] for row in data["results"]} == {"forward", "fwd+bwd"}
