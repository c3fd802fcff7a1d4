"""The data and throughput benchmarks run (tiny settings) and write their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
TINY = TINY_MODEL + ["data.batch_size=4"]


def run(script, *args, tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "machine:" in proc.stdout and "BLAS:" in proc.stdout
    return proc.stdout, json.loads(out.read_text())


def test_data_benchmark(tmp_path):
    sets = [a for s in TINY for a in ("--set", s)]
    stdout, payload = run("data.py", str(ROOT / "configs/quickstart.yaml"), *sets, "--workers", "0",
                          "--batches", "2", tmp_path=tmp_path)
    assert payload["rows"][0]["images_per_s_median"] > 0


def test_throughput_benchmark(tmp_path):
    sets = [a for s in TINY + ["model.mlp_activation=gelu"] for a in ("--set", s)]
    stdout, payload = run("throughput.py", str(ROOT / "configs/quickstart.yaml"), *sets, "--repeats", "1",
                          "--warmup", "1", "--breakdown", tmp_path=tmp_path)
    rows = payload["results"]
    assert set(rows) == {"no_recompute", "recompute"}
    assert all(r["images_per_s"] > 0 and r["traces"] == 1 for r in rows.values())
    assert 0 < rows["no_recompute"]["mfu"] and payload["gemm_gflops"]["best"] > 0
    for variant, r in rows.items():
        b = r["breakdown"]
        assert all(t > 0 for t in b["phases_s"].values()), b["phases_s"]
        assert all(b["classes_s"][c] > 0 for c in ("matmul", "activation", "attention core", "layer norm", "gather"))
        modes = {op["mode"] for op in b["ops"]}
        # the target encoder runs forward only; recomputed blocks run their forward twice
        assert "fwd" in modes and ("fwd+bwd+fwd" in modes) == (variant == "recompute")
    assert "breakdown, recompute:" in stdout and "attention core" in stdout


def test_throughput_compare_reports_each_variants_own_peak(tmp_path):
    """--compare times two configs in turn; each row's peak memory is its own (one counter would give both
    the larger): recomputing every block (all) needs less than recomputing none (fit on a roomy machine)."""
    # batch 128: activations, not weights and optimizer state, set the peak
    sets = [a for s in TINY_MODEL + ["data.batch_size=128", "training.use_gradient_checkpointing=true"]
            for a in ("--set", s)]
    stdout, payload = run("throughput.py", str(ROOT / "configs/quickstart.yaml"), *sets, "--repeats", "1",
                          "--warmup", "1", "--no-recompute-variant", "--compare", "training.recompute=fit",
                          tmp_path=tmp_path)
    row = payload["results"]["recompute"]
    assert 0 < row["peak_memory_gb"] < row["compared"]["peak_memory_gb"], row
    assert "with training.recompute=fit" in stdout and "peak" in stdout


def test_kernels_benchmark(tmp_path):
    stdout, payload = run("kernels.py", "--batch", "1", "--repeats", "1", "--warmup", "0", tmp_path=tmp_path)
    rows = payload["rows"]
    assert {(r["kernel"], r["mode"]) for r in rows} == {(k, m) for k in ("gelu", "softmax", "layer_norm")
                                                        for m in ("fwd", "fwd+bwd")}
    assert all(r["ns_per_element"] > 0 for r in rows) and "kernels:" in stdout


def test_quality_benchmark_on_tiny_cifar_files(tmp_path):
    """benchmarks/quality.py end to end on tiny generated CIFAR-10 files (never the dev set): trained,
    random-init and raw-pixel rows with the issue's four keys, a learning curve and the pass/fail checks."""
    from test_trainer import _write_cifar10
    _write_cifar10(tmp_path / "data")
    extra = TINY + ["data.batch_size=8", "data.val_holdout=8", "logging.collapse_frequency=1",
                    "logging.collapse_probe_images=8", "data.num_workers=0"]
    sets = [a for s in extra for a in ("--set", s)]
    stdout, payload = run("quality.py", str(ROOT / "configs/cifar10_cpu.yaml"), "--data-path", str(tmp_path / "data"),
                          "--steps", "3", "--no-linear", "--output-dir", str(tmp_path / "run"), *sets,
                          tmp_path=tmp_path)
    for row in ("trained", "random_init", "raw_pixels"):
        assert set(payload[row]) >= {"knn_top1_k1", "knn_top1_k20", "linear_top1", "rankme", "full"}
        assert 0.0 <= payload[row]["knn_top1_k20"] <= 1.0
    assert payload["steps"] == 3 and payload["curve"]["rankme"] and payload["curve"]["knn_top1_k20"]
    assert "k-NN@20 >= 50 %" in payload["checks"] and "learning curve" in stdout


def test_supervised_benchmark_on_tiny_cifar_files(tmp_path):
    """benchmarks/supervised.py (the supervised ceiling beside quality.py) on tiny generated CIFAR-10 files."""
    from test_trainer import _write_cifar10
    _write_cifar10(tmp_path / "data")
    sets = [a for s in TINY + ["data.num_workers=0"] for a in ("--set", s)]
    stdout, payload = run("supervised.py", str(ROOT / "configs/cifar10_cpu.yaml"), "--data-path",
                          str(tmp_path / "data"), "--steps", "3", *sets, tmp_path=tmp_path)
    assert payload["steps"] == 3 and payload["bank"] == 80 and payload["test"] == 16
    assert all(0.0 <= payload[k] <= 1.0 for k in ("test_accuracy", "knn_top1_k1", "knn_top1_k20"))
    assert "supervised cifar10_cpu, 3 steps" in stdout


@pytest.mark.slow
def test_throughput_benchmark_two_ranks(tmp_path):
    """--world 2: mlx.launch on localhost; rank 0 reports per-rank and global img/s and the all-reduce."""
    sets = [a for s in TINY + ["data.batch_size=8"] for a in ("--set", s)]
    stdout, payload = run("throughput.py", str(ROOT / "configs/quickstart.yaml"), *sets, "--repeats", "1",
                          "--warmup", "1", "--no-recompute-variant", "--world", "2", tmp_path=tmp_path)
    (row,) = payload["results"].values()
    assert row["world_size"] == 2 and row["allreduce_buckets"] >= 1 and row["allreduce_s"] > 0
    assert row["global_images_per_s"] == pytest.approx(2 * row["per_rank_images_per_s"])
    assert "img/s global; gradient all-reduce" in stdout


def test_masks_benchmark_runs_on_its_own(tmp_path):
    stdout, payload = run("masks.py", "--images", "64", "--batch", "32", "--repeats", "1", tmp_path=tmp_path)
    assert "I-JEPA reference" in stdout and len(payload["results"]) == 3


def test_benchmarks_do_not_import_the_tests():
    # what a benchmark shares with a test lives in the package (e.g. hjepa_mlx/mask_stats.py)
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        assert "from tests" not in script.read_text() and "import tests" not in script.read_text(), script.name
