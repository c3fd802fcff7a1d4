"""A run is owned and never lost: the run-directory lock, checkpoint integrity and fallback, resume that
checks its config (and forks with --resume-with-changes), mid-epoch checkpoints that resume bit-
identically, metrics.jsonl without duplicate steps, and best-checkpoint selection that does not depend
on save and eval frequencies lining up."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.checkpoint import CheckpointManager, save_checkpoint
from hjepa_mlx.checkpoint_integrity import HASH_KEY, CorruptCheckpoint, content_hash
from hjepa_mlx.cli.train import main
from hjepa_mlx.config import load_config, to_dict
from hjepa_mlx.errors import UserError
from hjepa_mlx.config.plan import make_plan
from hjepa_mlx.resume_check import check_position, check_resume, config_differences, truncate_metrics
from hjepa_mlx.run_lock import RunLock
from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs/quickstart.yaml"


def state(step=0, fill=None):
    rng = np.random.default_rng(step)
    w = rng.standard_normal((3, 2)).astype(np.float32) if fill is None else np.full((3, 2), fill, np.float32)
    return {"params": {"w": mx.array(w)}, "step": mx.array(step, dtype=mx.int32)}


def tree_digest(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ checkpoint integrity

def two_checkpoints(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last_k=5)
    manager.save(state(1), {"step": 1}, epoch=0)
    newest = manager.save(state(2), {"step": 2}, epoch=0)
    return manager, newest


def flip_last_byte(path: Path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x40
    path.write_bytes(bytes(data))


def write_nan_checkpoint(path: Path):
    """A NaN state with a matching hash: the file is intact, its values are poisoned."""
    arrays = {"params.w": mx.full((3, 2), float("nan")), "step": mx.array(2, dtype=mx.int32)}
    meta = json.dumps({"step": 2, "epoch": 0, HASH_KEY: content_hash(arrays)})
    mx.save_safetensors(str(path), arrays, metadata={"hjepa_metadata": meta})
    path.with_suffix(".json").write_text(meta)


@pytest.mark.parametrize("damage", ["flip", "truncate", "nan", "dangling latest", "negative step",
                                    "step mismatch"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_good_one(damage, tmp_path, capsys):
    manager, newest = two_checkpoints(tmp_path)
    if damage == "flip":
        flip_last_byte(newest)
    elif damage == "truncate":
        newest.write_bytes(newest.read_bytes()[:-7])
    elif damage == "nan":
        write_nan_checkpoint(newest)
    elif damage == "dangling latest":
        (tmp_path / "latest").write_text("step_00000009.safetensors\n")
    elif damage == "negative step":
        save_checkpoint(tmp_path, state(2), {"step": -2, "epoch": 0}, name=newest.stem)
    elif damage == "step mismatch":
        save_checkpoint(tmp_path, state(2), {"step": 7, "epoch": 0}, name=newest.stem)
    good = 2 if damage == "dangling latest" else 1       # step 2 itself is intact there
    loaded, meta = manager.load("auto", state(0))
    assert meta["step"] == good and int(loaded["step"].item()) == good
    np.testing.assert_array_equal(np.array(loaded["params"]["w"]), np.array(state(good)["params"]["w"]))
    assert f"falling back to step_0000000{good}.safetensors, the newest good checkpoint" in capsys.readouterr().out
    if damage != "dangling latest":      # named explicitly, the damaged file is an error, not a fallback
        with pytest.raises(CorruptCheckpoint):
            manager.load(newest, state(0))


def test_every_checkpoint_damaged_is_one_user_error(tmp_path):
    manager, newest = two_checkpoints(tmp_path)
    for p in manager.step_checkpoints():
        flip_last_byte(p)
    with pytest.raises(UserError, match="no usable checkpoint in .*content hash"):
        manager.load("auto", state(0))


def test_a_sidecar_that_disagrees_with_the_embedded_metadata_loses(tmp_path, capsys):
    manager, newest = two_checkpoints(tmp_path)
    sidecar = newest.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "epoch": 999}))
    _, loaded = manager.load(newest, state(0))
    assert loaded["epoch"] == 0 and "using the copy of the metadata stored inside" in capsys.readouterr().out


def test_a_nan_state_is_never_saved_over_good_checkpoints(tmp_path):
    manager, newest = two_checkpoints(tmp_path)
    before = tree_digest(tmp_path)
    with pytest.raises(UserError, match="refusing to save a checkpoint: the state holds NaN"):
        manager.save(state(3, fill=float("nan")), {"step": 3}, epoch=0)
    assert tree_digest(tmp_path) == before


def test_impossible_positions_are_refused():
    config = load_config(QUICK).config
    plan = make_plan(config)                  # 48 steps per epoch
    check_position({"epoch": 1, "batch_in_epoch": 5, "step": 53}, plan, False)
    for meta, named in [({"epoch": 999, "batch_in_epoch": 0, "step": 47952}, "epoch 999"),
                        ({"epoch": 1, "batch_in_epoch": 400, "step": 448}, "batch 400"),
                        ({"epoch": 1, "batch_in_epoch": 5, "step": 7}, "which is step 53"),
                        ({"epoch": "1", "batch_in_epoch": 5, "step": 53}, "lacks epoch")]:
        with pytest.raises(UserError, match=named):
            check_position(meta, plan, False)


# ------------------------------------------------------------------ the run-directory lock

def test_a_second_process_on_a_locked_run_directory_exits_2(tmp_path, capsys):
    run = tmp_path / "run"
    with RunLock(run):
        code = main([str(QUICK), "--output-dir", str(run), *sum([["--set", s] for s in TINY_RUN], [])])
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and f"in use by another training process (pid {os.getpid()})" in err
        assert "\n" not in err
    assert sorted(p.name for p in run.iterdir()) == [".lock"]       # nothing else written


def test_a_lock_left_by_a_killed_process_is_reported_and_taken_over(tmp_path, capsys):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill()
    proc.wait()
    (tmp_path / ".lock").write_text(f"pid {proc.pid}\n")
    with RunLock(tmp_path) as lock:
        assert f"stale lock from pid {proc.pid}" in lock.stale_note
        assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()}\n"
    assert f"stale lock from pid {proc.pid}" in capsys.readouterr().out


# ------------------------------------------------------------------ resume checks its config

def test_config_differences_split_safe_from_math_changing_keys(tmp_path, capsys):
    base = load_config(QUICK).config
    saved = to_dict(base)
    changed = load_config(QUICK, ["training.lr=0.002", "data.batch_size=16", "logging.log_frequency=5",
                                  "training.epochs=4"]).config
    diffs = {k for k, _, _ in config_differences(saved, to_dict(changed))}
    assert diffs == {"training.lr", "data.batch_size", "logging.log_frequency", "training.epochs"}
    plan = make_plan(changed, output_dir=str(tmp_path))
    meta = {"config": saved, "epoch": 1, "batch_in_epoch": 0, "step": 48}
    with pytest.raises(UserError, match=r"resume refused: .*data.batch_size: 32 -> 16; training.lr: 0.001 -> 0.002"):
        check_resume(to_dict(changed), meta, plan, tmp_path, allow_changes=False)
    (tmp_path / "config.yaml").write_text("original\n")
    fork = check_resume(to_dict(changed), meta, plan, tmp_path, allow_changes=True)
    assert fork == tmp_path / "checkpoints-fork1"
    assert "--resume-with-changes: data.batch_size: 32 -> 16" in (tmp_path / "train.log").read_text()
    assert (tmp_path / "config-fork1-from.yaml").read_text() == "original\n"
    safe = load_config(QUICK, ["logging.log_frequency=5", "training.epochs=4"]).config
    assert check_resume(to_dict(safe), meta, make_plan(safe), tmp_path, allow_changes=False) is None
    assert f"training.epochs changed ({base.training.epochs} -> 4)" in capsys.readouterr().out


def test_truncate_metrics_drops_rows_after_the_checkpoint_and_torn_lines(tmp_path):
    rows = [{"step": s, "loss": 1.0} for s in (1, 2, 3, 4)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(text + '{"step": 5, "lo')
    assert truncate_metrics(tmp_path, {"step": 2}, checkpoint_in_run=True) == 3
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    (tmp_path / "metrics.jsonl").write_text(text)      # the byte offset recorded at save time wins
    cut = len(json.dumps(rows[0]) + "\n")
    assert truncate_metrics(tmp_path, {"step": 4, "metrics_bytes": cut}, checkpoint_in_run=True) == 3


# ------------------------------------------------------------------ runs (tiny model, a few steps)

TINY = TINY_RUN + ["data.batch_size=4", "data.synthetic.num_train=28", "data.synthetic.num_val=8",
                   "logging.log_frequency=1", "training.epochs=2", "training.warmup_epochs=1",
                   "checkpoint.keep_last_k=10", "logging.use_tensorboard=false", "logging.collapse_frequency=0"]


def train(out: Path, *extra, resume=False):
    """main() on the tiny config; `extra`: --set items, and flags (starting with --, with their values)."""
    flags = [a for i, a in enumerate(extra) if a.startswith("--") or (i and extra[i - 1] == "--resume")]
    args = [str(QUICK), "--output-dir", str(out)] + (["--resume", "auto"] if resume else []) + flags
    for item in TINY + [a for a in extra if a not in flags]:
        args += ["--set", item]
    return main(args)


def weights(run_dir: Path, series="checkpoints") -> dict:
    latest = (run_dir / series / "latest").read_text().strip()
    return {k: np.array(v) for k, v in mx.load(str(run_dir / series / latest)).items()}


def metric_rows(run_dir: Path) -> list[tuple]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # the console's timing keys (live.py) depend on the clock and on when the steady state begins
    clock = ("time", "images_per_s", "memory_gb", "eta_s", "peak_memory_gb")
    return [(r["step"], tuple(sorted(k for k in r if k not in clock))) for r in rows]


def test_mid_epoch_checkpoints_resume_bit_identically_and_forks_keep_the_original(tmp_path, capsys):
    straight = tmp_path / "straight"
    # 6 steps per epoch, 2 epochs; a save every 4 steps; epoch-end saves every 3 epochs (so epoch 1 is
    # saved only because its validation loss is the best so far)
    assert train(straight, "checkpoint.save_every_steps=4", "checkpoint.save_frequency=3") == 0
    ckpts = straight / "checkpoints"
    metas = {p.stem: json.loads(p.read_text()) for p in ckpts.glob("step_*.json")}
    assert metas["step_00000004"]["batch_in_epoch"] == 4 and metas["step_00000004"]["epoch"] == 0
    assert metas["step_00000006"]["metric_value"] is not None          # the epoch-1 best was saved
    best = json.loads((ckpts / (ckpts / "best").read_text().strip()).with_suffix(".json").read_text())
    vals = [json.loads(x)["val_loss"] for x in (straight / "metrics.jsonl").read_text().splitlines()
            if "val_loss" in json.loads(x)]
    assert best["metric_value"] == min(vals) and len(vals) == 2

    # a kill right after the step-4 save: later checkpoints never written, metrics rows up to step 12 exist
    cut = tmp_path / "cut"
    shutil.copytree(straight, cut)
    for p in (cut / "checkpoints").glob("step_*"):
        if p.stem != "step_00000004":
            p.unlink()
    (cut / "checkpoints" / "latest").write_text("step_00000004.safetensors\n")
    assert train(cut, "checkpoint.save_every_steps=4", "checkpoint.save_frequency=3", resume=True) == 0
    a, b = weights(straight), weights(cut)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert metric_rows(cut) == metric_rows(straight)                # no step logged twice, none missing

    # from the step-8 checkpoint, a changed lr is refused and changes nothing; --resume-with-changes forks
    step8 = str(cut / "checkpoints" / "step_00000008.safetensors")
    before = tree_digest(cut)
    capsys.readouterr()
    assert train(cut, "training.lr=0.002", "--resume", step8) == 2
    err = capsys.readouterr().err
    assert "resume refused" in err and "training.lr: 0.001 -> 0.002" in err
    assert {k: v for k, v in tree_digest(cut).items() if k != ".lock"} == \
           {k: v for k, v in before.items() if k != ".lock"}
    assert train(cut, "training.lr=0.002", "--resume-with-changes", "--resume", step8) == 0
    after = tree_digest(cut)
    for name, digest in before.items():
        if name.startswith("checkpoints/"):
            assert after[name] == digest, name                        # the original series is untouched
    assert after["metrics-fork1-from.jsonl"] == before["metrics.jsonl"]
    assert after["config-fork1-from.yaml"] == before["config.yaml"]
    fork_meta = json.loads((cut / "checkpoints-fork1" / "step_00000012.json").read_text())
    assert fork_meta["config"]["training"]["lr"] == 0.002 and fork_meta["step"] == 12
