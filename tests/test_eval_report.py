"""The report table always shows the random-init baseline beside the trained encoder; JSON round-trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hjepa_mlx.evaluate.report import format_report, write_json


def test_table_shows_trained_and_baseline_side_by_side_with_the_difference():
    text = format_report({"trained": {"knn_top1_k20": 0.8125, "rank_collapse": False, "linear_lr": 0.003},
                          "random-init": {"knn_top1_k20": 0.25, "rank_collapse": True}})
    header, rule, *rows = text.splitlines()
    assert header.split() == ["metric", "trained", "random-init", "trained", "-", "random-init"]
    assert set(rule) == {"-"}
    knn = next(r for r in rows if r.startswith("knn_top1_k20")).split()
    assert knn == ["knn_top1_k20", "0.8125", "0.25", "0.5625"]
    assert next(r for r in rows if r.startswith("rank_collapse")).split() == ["rank_collapse", "no", "yes"]
    assert next(r for r in rows if r.startswith("linear_lr")).split() == ["linear_lr", "0.003", "-"]


def test_baseline_column_comes_last_with_several_encoders():
    text = format_report({"random-init": {"a": 1}, "ep10": {"a": 2}, "ep20": {"a": 3}})
    assert text.splitlines()[0].split() == ["metric", "ep10", "ep20", "random-init"]


def test_report_without_the_baseline_is_refused():
    with pytest.raises(ValueError, match="random-init"):
        format_report({"trained": {"knn": 0.8}})


def test_write_json_converts_numpy_and_non_finite_values(tmp_path):
    data = {"rows": {"trained": {1: np.float32(0.5), "flag": np.bool_(True), "nan": math.nan}},
            "k": (1, 5), "arr": np.arange(3)}
    path = write_json(tmp_path / "sub" / "eval.json", data)
    assert json.loads(path.read_text()) == {"rows": {"trained": {"1": 0.5, "flag": True, "nan": None}},
                                            "k": [1, 5], "arr": [0, 1, 2]}
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]        # no temp file left behind


def test_raw_pixel_floor_is_a_second_baseline_with_its_own_difference():
    text = format_report({"raw-pixels": {"knn": 0.33}, "trained": {"knn": 0.5}, "random-init": {"knn": 0.25}})
    header, _, row = text.splitlines()
    assert header.split() == ["metric", "trained", "random-init", "raw-pixels", "trained", "-", "random-init",
                              "trained", "-", "raw-pixels"]
    assert row.split() == ["knn", "0.5", "0.25", "0.33", "0.25", "0.17"]
