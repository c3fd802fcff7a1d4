"""What a run shows and leaves behind while it runs: the console (in place on a terminal, plain lines
elsewhere), the compile time said once, the measured estimate, steady-state img/s and ETA in metrics.jsonl,
run.json, and the pictures on disk (plots/curves.png, images/masks_*.png, images/attention_*.png)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from hjepa_mlx.cli.train import main
from hjepa_mlx.console import Console, progress_text
from hjepa_mlx.plots import draw_curves, draw_eval
from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_console_rewrites_in_place_on_a_terminal_and_prints_lines_elsewhere():
    tty = Console(FakeTTY())
    tty.live("step 1")
    tty.live("step 2")
    tty.line("epoch 1: val_loss 0.5")
    tty.status("validating ...")
    tty.close()
    out = tty.stream.getvalue()
    assert out == ("\r\033[Kstep 1" "\r\033[Kstep 2" "\r\033[Kepoch 1: val_loss 0.5\nstep 2"
                   "\r\033[Kvalidating ..." "\r\033[Kvalidating ...\n")
    plain = Console(io.StringIO())
    plain.live("step 1")                      # no live line in a file
    plain.status("validating ...")
    plain.line("epoch 1: val_loss 0.5")
    assert plain.stream.getvalue() == "validating ...\nepoch 1: val_loss 0.5\n"


def test_progress_text_shows_each_regulariser_separately():
    text = progress_text(epoch=1, epochs=3, step_in_epoch=30, steps_per_epoch=48, step=78, total_steps=144,
                         scalars={"loss_prediction": 0.45649, "vicreg_loss": 21.834, "vicreg_invariance": 0.0625,
                                  "vicreg_variance": 0.7993, "vicreg_covariance": 0.2905, "contrastive_loss": 1.5,
                                  "lr": 3.964e-4},
                         images_per_s=31.24, eta_s=216.0, peak_memory_gb=0.1)
    assert text == ("ep 2/3 step 30/48 [ 54%] | 31.2 img/s | ETA 3.6 min | pred 0.4565 | vicreg 21.83 (inv 0.0625 "
                    "var 0.7993 cov 0.2905) | nt-xent 1.5 | lr 3.96e-04 | peak 0.10 GB")


def test_a_run_leaves_its_estimate_rates_and_pictures(tmp_path):
    out = tmp_path / "run"
    args = [str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(out), "--budget", "10h"]
    for item in TINY_RUN + ["data.batch_size=4", "data.synthetic.num_train=28", "data.synthetic.num_val=8",
                            "logging.log_frequency=2", "training.epochs=2", "training.warmup_epochs=1",
                            "logging.plot_frequency=6", "logging.image_frequency=6", "logging.log_images=true",
                            "logging.log_attention=true", "logging.use_tensorboard=false"]:
        args += ["--set", item]
    assert main(args) == 0
    log = (out / "train.log").read_text()
    assert log.count("compiled the train step in ") == 1
    assert "# measured estimate (measured on this machine: the first 5 steady steps" in log
    assert "budget        : 10.0 h: fits:" in log
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    assert all(r["images_per_s"] > 0 and r["eta_s"] >= 0 and r["peak_memory_gb"] > 0 for r in train)
    # (how the ETA falls is tested on a fake clock in test_preflight.py: here it follows the wall clock,
    # and a slow activity measured late may raise it, so comparing two rows would make the test flaky)
    info = json.loads((out / "run.json").read_text())
    assert info["total_steps"] == 12 and info["steps_per_epoch"] == 6 and info["budget_s"] == 36000
    # pictures: at steps 6 and 12; curves redrawn, finally at the end
    for step in (6, 12):
        for kind in ("masks", "attention"):
            with Image.open(out / "images" / f"{kind}_step{step:08d}.png") as img:
                assert img.size[0] >= 4 * 300 and img.size[1] >= 400     # four images, each large enough to see
    with Image.open(out / "plots" / "curves.png") as img:
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.shape[0] > 500 and pixels.std() > 10                   # panels drawn, not a blank canvas


def test_curves_skip_what_was_not_logged_and_eval_bars(tmp_path):
    assert draw_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    records = [{"step": s, "loss_prediction": 1.0 / s, "lr": 1e-3, "momentum": 0.996} for s in range(1, 6)]
    assert draw_curves(records, tmp_path / "c.png").stat().st_size > 5000
    rows = {"trained": {"knn_top1_k20": 0.3, "linear_top1": 0.35, "rankme": 8.4},
            "random-init": {"knn_top1_k20": 0.23, "linear_top1": 0.33, "rankme": 3.8}}
    assert draw_eval(rows, tmp_path / "e.png").stat().st_size > 5000
