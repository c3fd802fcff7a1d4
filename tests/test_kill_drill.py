"""The kill -9 drill (slow): a run killed at random moments - some while a checkpoint is being written -
and resumed each time ends with weights bit-identical to an uninterrupted run, and a metrics.jsonl
that logs every step exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = TINY_RUN + ["data.batch_size=4", "data.synthetic.num_train=44", "data.synthetic.num_val=8",
                       "logging.log_frequency=1", "training.epochs=5", "training.warmup_epochs=1",
                       "logging.use_tensorboard=false", "logging.collapse_frequency=0",
                       "checkpoint.save_every_steps=1", "checkpoint.keep_last_k=2"]
KILLS = 12


def command(out: Path) -> list[str]:
    args = [sys.executable, str(ROOT / "scripts/train.py"), str(ROOT / "configs/quickstart.yaml"),
            "--output-dir", str(out), "--resume", "auto"]
    for item in SETTINGS:
        args += ["--set", item]
    return args


def final_weights(out: Path) -> dict:
    latest = (out / "checkpoints" / "latest").read_text().strip()
    return {k: np.array(v) for k, v in mx.load(str(out / "checkpoints" / latest)).items()}


def rows(out: Path) -> list[tuple]:
    got = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], tuple(sorted(k for k in r if k not in ("time", "images_per_s", "memory_gb")))) for r in got]


def newest(ckdir: Path) -> str:
    try:
        return (ckdir / "latest").read_text()
    except OSError:
        return ""


def temp_files(ckdir: Path) -> set:
    try:
        return {(e.name, e.inode(), e.stat().st_mtime_ns) for e in os.scandir(ckdir) if e.name.endswith(".tmp")}
    except OSError:     # the directory does not exist yet, or the file went away under us
        return set()


def kill_when(proc, ready, delay: float, limit: float = 600.0) -> None:
    """SIGKILL `delay` seconds after `ready()` first holds (polled every 0.5 ms), so the kill lands in
    training whatever the machine's speed; at `limit` seconds at the latest."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.0005)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    straight = tmp_path / "straight"
    done = subprocess.run(command(straight), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    rng = random.Random(16)
    kills, during_write, attempts = 0, 0, 0
    while kills < KILLS and attempts < 3 * KILLS:
        attempts += 1
        proc = subprocess.Popen(command(cut), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        ckdir = cut / "checkpoints"
        if kills % 2:       # while a checkpoint is being written (a new temp file exists)
            left = temp_files(ckdir)      # a temp file left by the previous kill does not count
            kill_when(proc, lambda: bool(temp_files(ckdir) - left), 0.0)
        else:               # at a random moment after the run has saved one more checkpoint
            before = newest(ckdir)
            kill_when(proc, lambda: newest(ckdir) != before, rng.uniform(0.0, 0.4))
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            during_write += kills % 2 == 0
        else:
            assert proc.returncode == 0, proc.stderr.read()
            break       # finished before the kill; the remaining kills have nothing left to hit
    finish = subprocess.run(command(cut), capture_output=True, text=True, timeout=900)
    assert finish.returncode == 0, finish.stderr
    assert "Traceback" not in finish.stderr
    assert kills >= 10, f"only {kills} kills landed before the run finished"
    a, b = final_weights(straight), final_weights(cut)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert rows(cut) == rows(straight)
    print(f"kill drill: {kills} kills ({during_write} aimed at a checkpoint write), final weights bit-identical")
