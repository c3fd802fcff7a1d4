"""Checkpoints: bit-exact round trip in the template's structure and order, pointers, pruning,
atomicity under a crash mid-save, and a clear UserError for every broken or mismatched file."""

from __future__ import annotations

import json
import os

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from hjepa_mlx import checkpoint
from hjepa_mlx.checkpoint import CheckpointManager
from hjepa_mlx.errors import UserError


def state(seed=0):
    rng = np.random.default_rng(seed)
    return {"params": {"b": mx.array(rng.standard_normal(3).astype(np.float32)),
                       "a": [mx.array(rng.standard_normal((2, 2)).astype(np.float32))]},
            "opt": {"count": mx.array(seed, dtype=mx.int32)},
            "step": mx.array(seed, dtype=mx.int32), "key": mx.random.key(seed),
            "half": mx.array(rng.standard_normal(2).astype(np.float32)).astype(mx.bfloat16)}


def assert_bit_identical(a, b):
    fa, fb = tree_flatten(a), tree_flatten(b)
    assert [k for k, _ in fa] == [k for k, _ in fb]
    for (k, x), (_, y) in zip(fa, fb):
        assert type(x) is type(y), k
        if isinstance(x, mx.array):
            assert x.dtype == y.dtype and x.shape == y.shape, k
            # compare the raw bits (a view as unsigned ints), so -0.0 / NaN payloads count too
            bits = {1: mx.uint8, 2: mx.uint16, 4: mx.uint32, 8: mx.uint64}[x.itemsize]
            assert mx.array_equal(x.view(bits), y.view(bits)).item(), k
        else:
            assert x == y, k


def test_round_trip_is_bit_identical_in_template_order(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last_k=2)
    saved = state(3)
    manager.save(saved, {"step": 3, "config": {"lr": 1e-3}, "seeds": [1, 2]}, epoch=1)
    # the template lists its keys in another order: the loaded state follows the template
    template = state(0)
    template = {"half": template["half"], "key": template["key"], "step": template["step"],
                "opt": template["opt"], "params": {"a": template["params"]["a"], "b": template["params"]["b"]}}
    loaded, meta = manager.load("auto", template)
    assert list(loaded) == ["half", "key", "step", "opt", "params"] and list(loaded["params"]) == ["a", "b"]
    reordered = {k: saved[k] for k in template}
    reordered["params"] = {"a": saved["params"]["a"], "b": saved["params"]["b"]}
    assert_bit_identical(reordered, loaded)
    assert meta["step"] == 3 and meta["epoch"] == 1 and meta["config"] == {"lr": 1e-3} and meta["seeds"] == [1, 2]


def test_python_numbers_tuples_none_and_digit_keys_keep_their_structure(tmp_path):
    saved = {"n": 7, "x": 2.5, "flag": True, "t": (mx.array([1, 2], dtype=mx.uint8), None),
             "by_level": {"0": mx.array([1.5]), "1": mx.array([2.5])}, "big": mx.array(2 ** 40, dtype=mx.int64),
             "f64": mx.array([0.1, -0.0], dtype=mx.float64)}
    path = checkpoint.save_checkpoint(tmp_path, saved, {"step": 1}, name="custom")
    template = {"n": 0, "x": 0.0, "flag": False, "t": (mx.zeros((2,), dtype=mx.uint8), None),
                "by_level": {"0": mx.zeros((1,)), "1": mx.zeros((1,))}, "big": mx.array(0, dtype=mx.int64),
                "f64": mx.zeros((2,), dtype=mx.float64)}
    loaded, _ = checkpoint.load_checkpoint(path, template)
    assert isinstance(loaded["by_level"], dict) and isinstance(loaded["t"], tuple) and loaded["t"][1] is None
    assert_bit_identical(saved, loaded)
    assert loaded["x"] == 2.5 and loaded["n"] == 7 and loaded["flag"] is True and loaded["f64"][0].item() == 0.1
    assert (tmp_path / "latest").read_text().strip() == "custom.safetensors"


def test_no_checkpoint_means_none_for_auto(tmp_path):
    assert CheckpointManager(tmp_path).load("auto", state()) is None
    assert CheckpointManager(tmp_path / "missing").load("auto", state()) is None


def test_keep_last_k_keeps_the_newest_k_plus_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last_k=2, metric="val_loss", mode="min")
    for step, value in [(1, 0.5), (2, 0.3), (3, 0.4), (4, 0.6), (5, 0.35)]:
        manager.save(state(step), {"step": step}, epoch=step, metric_value=value)
    names = sorted(p.name for p in tmp_path.glob("step_*"))
    assert names == ["step_00000002.json", "step_00000002.safetensors", "step_00000004.json",
                     "step_00000004.safetensors", "step_00000005.json", "step_00000005.safetensors"]
    assert manager.best().name == "step_00000002.safetensors" and manager.best_value() == 0.3
    assert manager.latest().name == "step_00000005.safetensors"
    # pruning orders by step number, not by name: a 9-digit step is the newest
    manager.save(state(6), {"step": 123_456_789}, epoch=6)
    assert [p.name for p in manager.step_checkpoints()] == ["step_00000002.safetensors", "step_00000005.safetensors",
                                                            "step_123456789.safetensors"]


def test_best_pointer_in_max_mode_ignores_missing_and_non_finite_values(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last_k=1, metric="knn_top1", mode="max")
    manager.save(state(1), {"step": 1}, epoch=1)                          # no metric: no best yet
    assert manager.best() is None
    manager.save(state(2), {"step": 2}, epoch=2, metric_value=float("nan"))
    assert manager.best() is None
    manager.save(state(3), {"step": 3}, epoch=3, metric_value=0.4)
    manager.save(state(4), {"step": 4}, epoch=4, metric_value=0.3)
    manager.save(state(5), {"step": 5}, epoch=5, metric_value=0.5)
    assert manager.best().name == "step_00000005.safetensors"
    loaded, meta = manager.load(manager.best(), state(0))
    assert meta["metric"] == "knn_top1" and meta["metric_value"] == 0.5
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["step_00000005.safetensors"]


def _crash(*args, **kwargs):
    raise OSError("disk full")


@pytest.mark.parametrize("where", ["rename", "pointer", "metadata"])
def test_a_failed_save_leaves_the_previous_checkpoint_and_pointer_intact(tmp_path, monkeypatch, where):
    manager = CheckpointManager(tmp_path)
    manager.save(state(1), {"step": 1}, epoch=1)
    before = sorted(os.listdir(tmp_path)), (tmp_path / "latest").read_text()
    if where == "rename":            # after the temp file is written, before it replaces anything
        monkeypatch.setattr(os, "replace", _crash)
    elif where == "pointer":         # arrays and metadata written, the crash hits the 'latest' pointer
        original = checkpoint._atomic_write_text
        monkeypatch.setattr(checkpoint, "_atomic_write_text",
                            lambda path, text: _crash() if path.name == "latest" else original(path, text))
    with pytest.raises((OSError, TypeError)):
        meta = {"step": 2, "not_json": object()} if where == "metadata" else {"step": 2}
        manager.save(state(2), meta, epoch=2)
    monkeypatch.undo()
    assert (tmp_path / "latest").read_text() == before[1]
    assert not list(tmp_path.glob(".*.tmp"))                    # no temp file left behind
    if where != "pointer":
        assert sorted(os.listdir(tmp_path)) == before[0]         # nothing new at all
    loaded, meta = manager.load("auto", state(0))
    assert meta["step"] == 1
    assert_bit_identical(loaded, state(1))


def test_corrupt_truncated_and_missing_files_are_user_errors(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = manager.save(state(1), {"step": 1}, epoch=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=f"{path.name} is unreadable.*truncated or corrupt"):
        manager.load("auto", state(0))
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match=path.name):
        manager.load(path, state(0))
    with pytest.raises(UserError, match="not found"):
        manager.load(tmp_path / "nope.safetensors", state(0))
    path.unlink()
    with pytest.raises(UserError, match="names step_00000001.safetensors, which does not exist"):
        manager.load("auto", state(0))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(UserError, match="no checkpoint in"):
        manager.load(tmp_path / "empty_dir", state(0))


def test_a_state_from_another_model_is_a_user_error_naming_key_and_shapes(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = manager.save(state(1), {"step": 1}, epoch=1)
    other = state(0)
    other["params"]["b"] = mx.zeros((4,))
    with pytest.raises(UserError, match=r"'params\.b' has shape \(3,\) float32 there, the model expects \(4,\) float32"):
        manager.load(path, other)
    other = state(0)
    other["half"] = mx.zeros((2,))
    with pytest.raises(UserError, match=r"'half' has shape \(2,\) bfloat16 there.*\(2,\) float32"):
        manager.load(path, other)
    other = state(0)
    other["extra"] = mx.zeros((1,))
    with pytest.raises(UserError, match="lacks 'extra'"):
        manager.load(path, other)
    other = state(0)
    del other["key"]
    with pytest.raises(UserError, match="has 'key'"):
        manager.load(path, other)


def test_metadata_sidecar_missing_falls_back_to_the_embedded_copy_and_says_so(tmp_path, capsys):
    manager = CheckpointManager(tmp_path)
    path = manager.save(state(1), {"step": 1, "data_position": 17}, epoch=1)
    path.with_suffix(".json").write_text("{truncated")
    _, meta = manager.load(path, state(0))
    assert meta["data_position"] == 17 and meta["epoch"] == 1
    assert "using the copy of the metadata stored inside" in capsys.readouterr().out


def test_run_directory_and_a_missing_pointer(tmp_path, capsys):
    ckdir = tmp_path / "run" / "checkpoints"
    manager = CheckpointManager(ckdir)
    manager.save(state(1), {"step": 1}, epoch=1)
    manager.save(state(2), {"step": 2}, epoch=2)
    _, meta = CheckpointManager(tmp_path / "elsewhere").load(tmp_path / "run", state(0))   # a run directory
    assert meta["step"] == 2
    (ckdir / "latest").unlink()            # e.g. a crash between the metadata and the pointer
    _, meta = manager.load("auto", state(0))
    assert meta["step"] == 2 and "no 'latest' pointer; using the newest complete checkpoint" in capsys.readouterr().out


def test_non_array_leaves_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="'bad' is a str"):
        checkpoint.save_checkpoint(tmp_path, {"bad": "text"}, {"step": 0}, name="x")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
    with pytest.raises(ValueError):
        checkpoint.save_checkpoint(tmp_path, state(), {}, name="latest")
    meta = json.loads(checkpoint.save_checkpoint(tmp_path, state(), {"step": 0}, name="ok").with_suffix(".json").read_text())
    assert meta["format_version"] == checkpoint.FORMAT_VERSION


def test_a_version_1_checkpoint_loads_without_its_retired_prng_key(tmp_path, monkeypatch):
    # Format 1 train states carried a PRNG key nothing read; today's template has none.
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 1)
    path = CheckpointManager(tmp_path).save(state(2), {"step": 2}, epoch=1)
    monkeypatch.undo()
    template = state(0)
    del template["key"]
    loaded, meta = CheckpointManager(tmp_path).load(path, template)
    assert meta["format_version"] == 1 and "key" not in loaded
    assert_bit_identical({k: v for k, v in state(2).items() if k != "key"}, loaded)
    # a version-1 file still refuses an extra entry that was never retired
    other = state(0)
    del other["half"]
    with pytest.raises(UserError, match="has 'half'"):
        CheckpointManager(tmp_path).load(path, other)
