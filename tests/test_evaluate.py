"""scripts/evaluate.py on a checkpoint from a short quick-start run: rebuilt from its own config,
trained and random-init rows, JSON beside the run; bad inputs are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hjepa_mlx.cli.evaluate import main as evaluate_main
from hjepa_mlx.cli.train import main as train_main
from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
TINY = TINY_RUN + ["data.batch_size=8", "data.synthetic.num_train=32", "data.synthetic.num_val=16",
                   "training.epochs=1", "training.warmup_epochs=0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    args = [str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(out)]
    for item in TINY:
        args += ["--set", item]
    assert train_main(args) == 0
    return out


def test_evaluate_reports_trained_and_random_init(run_dir, capsys):
    assert evaluate_main([str(run_dir), "--protocol", "knn,linear,quality", "--max-train", "32",
                          "--max-test", "16", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "trained" in out and "random-init" in out and "raw-pixels" in out
    payload = json.loads((run_dir / "eval_synthetic.json").read_text())   # one file per dataset
    assert (run_dir / "eval_synthetic.png").stat().st_size > 10_000        # the table as bars
    assert "synthetic: encoding up to 32 train images" not in out and "trained: encoding up to 32 train images" in out
    rows = payload["datasets"]["synthetic"]
    assert set(rows) == {"trained", "random-init", "raw-pixels"}
    for row in rows.values():
        assert 0.0 <= row["knn_top1_k1"] <= 1.0 and 0.0 <= row["linear_top1"] <= 1.0 and row["rankme"] > 0


def test_evaluate_level_1_and_checkpoint_path(run_dir):
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    assert evaluate_main([str(ckpt), "--protocol", "knn", "--level", "1", "--max-train", "16", "--max-test", "8",
                          "--batch-size", "8", "--out", str(run_dir / "l1.json")]) == 0
    assert json.loads((run_dir / "l1.json").read_text())["level"] == 1
    assert (run_dir / "l1_synthetic.png").is_file() and not (run_dir / "eval_synthetic_level1.json").exists()


def test_evaluate_token_energy_rows(run_dir, capsys):
    """--token-energy N: tokens_* rows for the two encoders that have tokens (raw pixels show '-'), the four
    fractions summing to 1, and the trained and random-init encoders measured apart."""
    assert evaluate_main([str(run_dir), "--protocol", "knn", "--max-train", "16", "--max-test", "16",
                          "--batch-size", "8", "--token-energy", "12", "--out", str(run_dir / "te.json")]) == 0
    assert "tokens_image" in capsys.readouterr().out
    rows = json.loads((run_dir / "te.json").read_text())["datasets"]["synthetic"]
    parts = ("tokens_common", "tokens_positional", "tokens_image", "tokens_local")
    for name in ("trained", "random-init"):
        assert sum(rows[name][p] for p in parts) == pytest.approx(1.0, abs=1e-6)
        assert -1.0 <= rows[name]["tokens_pooled_mean_cosine"] <= 1.0
    assert rows["trained"]["tokens_common"] != rows["random-init"]["tokens_common"]
    assert "tokens_common" not in rows["raw-pixels"]


@pytest.mark.parametrize("args,message", [
    (["{run}", "--token-energy", "1"], "at least 2 test images"),
    (["{missing}"], "does not exist"),
    (["{run}", "--protocol", "knn,foo"], "'foo' is not one of"),
    (["{run}", "--level", "5"], "--level 5"),
    (["{empty}"], "no checkpoint in"),
])
def test_evaluate_user_errors(run_dir, tmp_path, capsys, args, message):
    fill = {"missing": str(tmp_path / "nope"), "run": str(run_dir), "empty": str(tmp_path)}
    assert evaluate_main([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
