"""`--explain`: every key with its value, its source and the modules that read it (found in the code)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from hjepa_mlx.cli.train import main
from hjepa_mlx.config.explain import _leaf_paths, _Reads, _section_paths, consumers, explain_rows
from hjepa_mlx.config.loader import _all_paths
from hjepa_mlx.config.schema import Config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["overnight_safe", "overnight_training_conservative", "overnight_training_aggressive", "quickstart",
           "cifar10_cpu"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_key_of_the_shipped_configs_has_a_consumer(name):
    rows = explain_rows(str(ROOT / f"configs/{name}.yaml"))
    paths = set(_all_paths(Config))
    leaves = {p for p in paths if not any(q.startswith(p + ".") for q in paths)}
    # the entries of data.datasets are one row (their value is the list)
    assert {r["key"] for r in rows} == {p for p in leaves if not p.startswith("data.datasets.")} | {"data.datasets"}
    assert [r["key"] for r in rows if r["consumer"] == "-"] == []


def test_sources_file_set_legacy_and_default():
    rows = {r["key"]: r for r in explain_rows(str(ROOT / "configs/overnight_training_aggressive.yaml"),
                                              ["training.lr=0.0002"])}
    assert rows["training.lr"]["source"] == "--set" and rows["training.lr"]["value"] == 0.0002
    assert rows["training.epochs"]["source"] == "file"
    assert rows["model.fpn.use_fpn"]["source"] == "file (legacy 'model.use_fpn')"
    assert rows["data.transforms.color_jitter"]["source"] == "file (legacy 'data.augmentation.color_jitter')"
    assert rows["model.predictor.shared_context"]["source"] == "default"


def test_keys_the_original_ignored_are_marked_on_the_seeds():
    rows = {r["key"]: r for r in explain_rows(str(ROOT / "configs/overnight_safe.yaml"))}
    marked = {k for k, r in rows.items() if r["original_ignored"]}
    assert {"experiment.seed", "model.ema.momentum", "masking.context_scale", "checkpoint.keep_last_k",
            "training.min_lr_ratio", "evaluation.knn.k_values", "logging.log_frequency"} <= marked
    assert not marked & {"training.lr", "data.batch_size", "model.predictor.shared_context"}


def test_consumers_are_found_in_the_code_not_listed():
    reads = consumers()
    assert "hjepa_mlx/build.py" in reads["training.lr"]
    assert "hjepa_mlx/config/run_settings.py" in reads["logging.log_images"]   # through a section alias (lg = config.logging)
    assert "hjepa_mlx/build.py" in reads["data.datasets.name"]          # through a comprehension


def test_the_reader_follows_sections_calls_and_loops():
    code = textwrap.dedent("""
        def helper(lg, n):
            return lg.log_frequency + n
        def main(config):
            t = config.training
            x = t.lr
            helper(config.logging, 3)
            names = [e.name for e in config.data.datasets]
            for e in config.data.datasets:
                e.weight
            t = 5
            t.epochs                      # t no longer holds the section
            return config.model.ema.momentum
    """)
    leaves = _leaf_paths() | {"data.datasets[].name", "data.datasets[].weight"}
    sections = set(_section_paths())
    first = _Reads(sections, leaves)
    first.visit(ast.parse(code))
    reads = _Reads(sections, leaves, first.calls)
    reads.visit(ast.parse(code))
    assert reads.found == {"training.lr", "logging.log_frequency", "data.datasets[].name",
                           "data.datasets[].weight", "model.ema.momentum"}


def test_cli_explain_prints_the_table_and_exits_0(capsys):
    assert main([str(ROOT / "configs/quickstart.yaml"), "--explain"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["key", "value", "source", "read", "by"]
    assert any(line.startswith("experiment.name ") and "hjepa_mlx/config/plan.py" in line for line in out.splitlines())
