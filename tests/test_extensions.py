"""Extending from outside the package: a dataset and an evaluator registered in a few lines, then
validated, planned, trained on and evaluated like the built-ins; unregistered afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hjepa_mlx.cli.evaluate import main as evaluate_main
from hjepa_mlx.cli.train import main as train_main
from hjepa_mlx.data.registry import DatasetEntry, dataset_names, register_dataset, unregister_dataset
from hjepa_mlx.errors import UserError
from hjepa_mlx.evaluate.evaluators import evaluator_names, register_evaluator, unregister_evaluator
from hjepa_mlx.evaluate.protocols import evaluate_features
from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
TINY = TINY_RUN + ["data.dataset=flat", "data.batch_size=8", "training.epochs=1", "training.warmup_epochs=0"]


# ---- the extension, as a user writes it: a dataset and an evaluator
class Flat:
    """24 flat 32 px images: dark ones are class 0, bright ones class 1."""
    num_classes, name, labelled = 2, "flat", True

    def __len__(self):
        return 24

    def load(self, i):
        return np.full((32, 32, 3), 60 + 120 * (i % 2), np.uint8), i % 2


def majority(tx, ty, vx, vy, *, k_values, temperature, seed):
    return {"majority_top1": float(np.mean(vy == np.bincount(ty).argmax()))}   # always the commonest label


@pytest.fixture
def extended():
    register_dataset(DatasetEntry("flat", lambda root, split: Flat(), splits=None, reads_files=False))
    register_evaluator("majority", majority)
    yield
    unregister_dataset("flat")
    unregister_evaluator("majority")
# ---- end of the extension


def _args(out, *extra):
    args = [str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(out)]
    for item in TINY:
        args += ["--set", item]
    return args + list(extra)


def test_registered_dataset_validates_plans_trains_and_evaluates(extended, tmp_path, capsys):
    assert train_main(_args(tmp_path / "dry", "--dry-run", "--no-calibrate")) == 0
    assert "dataset       : flat [train] at ./data, weight 1, 16 images\n" in capsys.readouterr().out
    out = tmp_path / "run"
    assert train_main(_args(out)) == 0                                   # 24 - 8 held out = 2 steps of 8
    assert evaluate_main([str(out), "--protocol", "majority,knn", "--max-train", "24", "--max-test", "24",
                          "--batch-size", "8"]) == 0
    rows = json.loads((out / "eval_flat.json").read_text())["datasets"]["flat"]
    assert list(rows["trained"]) == ["knn_top1_k1", "knn_top1_k5", "knn_top1_k20", "majority_top1"]
    assert rows["raw-pixels"]["knn_top1_k1"] == 1.0 and rows["raw-pixels"]["majority_top1"] == 0.5


def test_registered_evaluator_runs_after_the_built_ins_and_names_are_listed(extended, tmp_path, capsys):
    rng = np.random.default_rng(0)
    tx, vx, ty, vy = rng.normal(size=(20, 8)), rng.normal(size=(10, 8)), np.arange(20) % 2, np.arange(10) % 2
    metrics = evaluate_features(tx, ty, vx, vy, ["majority", "knn"], k_values=(1,), temperature=0.07, seed=0)
    assert list(metrics) == ["knn_top1_k1", "majority_top1"] and metrics["majority_top1"] == 0.5
    with pytest.raises(UserError, match="unknown evaluator 'foo'; known: knn, linear, quality, majority"):
        evaluate_features(tx, ty, vx, vy, ["foo"], k_values=(1,), temperature=0.07, seed=0)
    assert evaluate_main(["/nonexistent", "--protocol", "foo"]) == 2
    assert "'foo' is not one of knn, linear, quality, majority" in capsys.readouterr().err
    assert train_main(_args(tmp_path, "--set", "data.dataset=mnist", "--dry-run")) == 2
    err = capsys.readouterr().err
    assert "choose one of synthetic, cifar10, cifar100, stl10, imagefolder, imagenet100, flat" in err
    with pytest.raises(ValueError, match="dataset 'flat' is already registered"):
        register_dataset(DatasetEntry("flat", lambda root, split: Flat(), splits=None))


def test_extensions_are_gone_after_teardown():
    assert "flat" not in dataset_names() and "majority" not in evaluator_names()
