"""Checkpoints: bit-exact round trip in template order, pointers, pruning, atomicity, clear errors."""

from __future__ import annotations

import os

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from hjepa_mlx.checkpoint import CheckpointManager
from hjepa_mlx.errors import UserError


def state(seed=0):
    rng = np.random.default_rng(seed)
    return {"params": {"b": mx.array(rng.standard_normal(3).astype(np.float32)),
                       "a": [mx.array(rng.standard_normal((2, 2)).astype(np.float32))]},
            "step": mx.array(seed, dtype=mx.int32), "key": mx.random.key(seed),
            "half": mx.array(rng.standard_normal(2).astype(np.float32)).astype(mx.bfloat16)}


def test_round_trip_is_bit_identical_in_template_order(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last_k=2)
    s = state(3)
    manager.save(s, {"step": 3, "config": {}}, epoch=1)
    loaded, meta = manager.load("auto", state(0))
    assert [k for k, _ in tree_flatten(loaded)] == [k for k, _ in tree_flatten(state(0))]
    for (k, a), (_, b) in zip(tree_flatten(s), tree_flatten(loaded)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32)), err_msg=k)
    assert meta["step"] == 3 and meta["epoch"] == 1


def test_no_checkpoint_means_none_for_auto(tmp_path):
    assert CheckpointManager(tmp_path).load("auto", state()) is None


def test_keep_last_k_and_best_pointer(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last_k=2, metric="val_loss", mode="min")
    for step, value in [(1, 0.5), (2, 0.3), (3, 0.4), (4, 0.6)]:
        manager.save(state(step), {"step": step}, epoch=step, metric_value=value)
    names = sorted(p.name for p in tmp_path.glob("step_*.safetensors"))
    assert manager.best().name == "step_00000002.safetensors"
    assert "step_00000002.safetensors" in names and "step_00000004.safetensors" in names
    assert len(names) <= 3 and manager.latest().name == "step_00000004.safetensors"


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path)
    manager.save(state(1), {"step": 1}, epoch=1)
    before = (tmp_path / "latest").read_text()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        manager.save(state(2), {"step": 2}, epoch=2)
    monkeypatch.undo()
    assert (tmp_path / "latest").read_text() == before
    loaded, meta = manager.load("auto", state(0))
    assert meta["step"] == 1


def test_corrupt_truncated_and_mismatched_checkpoints_are_user_errors(tmp_path):
    manager = CheckpointManager(tmp_path)
    path = manager.save(state(1), {"step": 1}, epoch=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="unreadable"):
        manager.load("auto", state(0))
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match=str(path.name)):
        manager.load(path, state(0))
    path.write_bytes(data)
    other = state(0)
    other["params"]["b"] = mx.zeros((4,))
    with pytest.raises(UserError, match="params.b"):
        manager.load(path, other)
    other = state(0)
    other["extra"] = mx.zeros((1,))
    with pytest.raises(UserError, match="lacks 'extra'"):
        manager.load(path, other)
    with pytest.raises(UserError, match="not found"):
        manager.load(tmp_path / "nope.safetensors", state(0))
