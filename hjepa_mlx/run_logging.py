"""What a run writes: metrics.jsonl, train.log (the console lines), TensorBoard events (tensorboardX),
and the console progress line with ETAs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class RunLogger:
    def __init__(self, run_dir: str | Path, *, use_tensorboard: bool = True, log_frequency: int = 50):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_frequency = log_frequency
        self._jsonl = open(self.dir / "metrics.jsonl", "a", encoding="utf-8")
        self._log = open(self.dir / "train.log", "a", encoding="utf-8")
        self._tb = None
        if use_tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        self._start = time.time()

    def log_scalars(self, step: int, scalars: dict, *, epoch: int | None = None) -> None:
        record = {"step": step, "epoch": epoch, "time": round(time.time() - self._start, 3),
                  **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb:
            for name, value in scalars.items():
                self._tb.add_scalar(name, float(value), step)

    def log_histograms(self, step: int, arrays: dict) -> None:
        if self._tb:
            for name, value in arrays.items():
                self._tb.add_histogram(name, np.asarray(value, dtype=np.float32), step)

    def log_images(self, step: int, images: dict) -> None:
        """images: name -> uint8 HWC."""
        if self._tb:
            for name, img in images.items():
                self._tb.add_image(name, np.asarray(img), step, dataformats="HWC")

    def log_line(self, text: str) -> None:
        print(text, flush=True)
        self._log.write(text + "\n")
        self._log.flush()

    def log_text(self, text: str) -> None:
        self._log.write(text + "\n")
        self._log.flush()
        if self._tb:
            self._tb.add_text("plan", "    " + text.replace("\n", "\n    "), 0)

    def close(self) -> None:
        self._jsonl.close()
        self._log.close()
        if self._tb:
            self._tb.close()


class ProgressLine:
    """'epoch 2/10 step 40/100 loss 0.4123 lr 1.2e-04 img/s 35.2 ETA epoch 01:20 run 0:14:05'."""

    def __init__(self, *, epochs: int, steps_per_epoch: int):
        self.epochs, self.steps = epochs, steps_per_epoch

    def format(self, epoch: int, step_in_epoch: int, scalars: dict, elapsed_epoch_s: float,
               steps_done_this_epoch: int | None = None) -> str:
        done = steps_done_this_epoch or step_in_epoch
        per_step = elapsed_epoch_s / max(done, 1)
        eta_epoch = per_step * (self.steps - step_in_epoch)
        eta_run = eta_epoch + per_step * self.steps * (self.epochs - epoch - 1)
        return (f"epoch {epoch + 1}/{self.epochs} step {step_in_epoch}/{self.steps} "
                f"loss {scalars.get('loss', float('nan')):.4f} lr {scalars.get('lr', 0.0):.2e} "
                f"img/s {scalars.get('images_per_s', 0.0):.1f} ETA epoch {_duration(eta_epoch)} "
                f"run {_duration(eta_run)}")


def mask_overlay(image: np.ndarray, context_idx, target_blocks, patch_size: int) -> np.ndarray:
    """uint8 HWC image with dropped patches darkened and each target block tinted its own colour."""
    img = image.astype(np.float32).copy()
    grid_w = img.shape[1] // patch_size
    keep = np.zeros((img.shape[0] // patch_size) * grid_w, dtype=bool)
    keep[np.asarray(context_idx)] = True
    colours = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180]], np.float32)

    def cell(i):
        r, c = divmod(int(i), grid_w)
        return slice(r * patch_size, (r + 1) * patch_size), slice(c * patch_size, (c + 1) * patch_size)

    for i in np.flatnonzero(~keep):
        rs, cs = cell(i)
        img[rs, cs] *= 0.35
    for b, block in enumerate(target_blocks):
        for i in np.asarray(block):
            rs, cs = cell(i)
            img[rs, cs] = 0.5 * img[rs, cs] / 0.35 + 0.5 * colours[b % len(colours)]
    return np.clip(img, 0, 255).astype(np.uint8)
