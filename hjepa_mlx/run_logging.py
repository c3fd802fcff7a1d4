"""What a run writes besides checkpoints, and the pictures it logs.

- `RunLogger`: `metrics.jsonl` (one JSON object per `log_scalars` call: step, epoch, wall-clock time,
  the scalars), `train.log` (the lines the console shows), TensorBoard events under `tensorboard/`
  (tensorboardX: scalars, histograms, images, text).
- The console's progress line is console.py's (with live.py and eta.py).
- `mask_overlay`, `attention_map_image`: uint8 HWC pictures for `log_images` (log_images / log_attention).

Host-side only (NumPy, Python floats): call it at log time, after `.item()`, never inside compiled code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------ the run's files

class RunLogger:
    """Writes a run's metrics and log lines into `run_dir` (created if needed).

    run_dir: the run directory. use_tensorboard: also write TensorBoard events to run_dir/tensorboard
    (if tensorboardX is missing, one line says so and the run goes on without them). log_frequency:
    log every this many optimizer steps (see `should_log`). Appends to existing files, so a resumed
    run continues the same metrics.jsonl and train.log. Usable as a context manager.
    """

    def __init__(self, run_dir: str | Path, *, use_tensorboard: bool = True, log_frequency: int = 50):
        if log_frequency < 1:
            raise ValueError(f"log_frequency must be >= 1, got {log_frequency}")
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_frequency = log_frequency
        self._jsonl = open(self.dir / "metrics.jsonl", "a", encoding="utf-8")
        self._log = open(self.dir / "train.log", "a", encoding="utf-8")
        self._tb = None
        self.console = None     # a console.Console, when one draws a live line (log_line prints through it)
        if use_tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                print("logging: tensorboardX is not installed; no TensorBoard events, metrics go to "
                      "metrics.jsonl only (pip install tensorboardX to get them)")
            else:
                self._tb = SummaryWriter(str(self.dir / "tensorboard"), flush_secs=30)

    def should_log(self, step: int) -> bool:
        """True on every `log_frequency`-th step (step counted from 1 after the first update)."""
        return step % self.log_frequency == 0

    def log_scalars(self, step: int, scalars: dict, *, epoch: int | None = None) -> None:
        """One metrics.jsonl record {step, epoch, time (Unix seconds), name: value...} and one
        TensorBoard scalar per name. Values: anything `float()` accepts (Python/NumPy/0-d mx arrays).
        Non-finite values are written as NaN/Infinity (Python's json reads them back)."""
        values = {name: float(value) for name, value in scalars.items()}
        record = {"step": int(step), "epoch": epoch, "time": round(time.time(), 3), **values}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb:
            for name, value in values.items():
                self._tb.add_scalar(name, value, int(step))

    def log_histograms(self, step: int, arrays: dict) -> None:
        """TensorBoard histograms: name -> array of values (any shape; flattened)."""
        if self._tb:
            for name, value in arrays.items():
                self._tb.add_histogram(name, np.asarray(value, dtype=np.float32).reshape(-1), int(step))

    def log_images(self, step: int, images: dict) -> None:
        """TensorBoard images: name -> uint8 array (H, W, 3) or (H, W, 1)."""
        for name, img in images.items():
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (1, 3):
                raise ValueError(f"image {name!r} must be uint8 HWC with 1 or 3 channels, got "
                                 f"{img.dtype} {img.shape}")
            if self._tb:
                self._tb.add_image(name, img, int(step), dataformats="HWC")

    def log_line(self, text: str, *, echo: bool = True) -> None:
        """Print `text` on the console (unless echo is False) and append it to train.log."""
        if echo:
            self.console.line(text) if self.console else print(text, flush=True)
        self._log.write(text + "\n")
        self._log.flush()

    def log_text(self, text: str, *, tag: str = "plan", step: int = 0) -> None:
        """Append `text` (may span lines) to train.log and log it as TensorBoard text under `tag`
        (indented, so TensorBoard's markdown shows it verbatim). Not printed."""
        self._log.write(text + "\n")
        self._log.flush()
        if self._tb:
            self._tb.add_text(tag, "    " + text.replace("\n", "\n    "), int(step))

    def close(self) -> None:
        """Flush and close every file (idempotent)."""
        for f in (self._jsonl, self._log):
            if not f.closed:
                f.close()
        if self._tb:
            self._tb.close()
            self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------ pictures

# Distinct tints for the target blocks (cycled when there are more blocks).
BLOCK_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                          [70, 240, 240]], dtype=np.float32)
DROPPED_SHADE = 0.35     # brightness kept by patches in neither the context nor a target
TINT = 0.5               # how much of a target patch is its block colour


def _patch_grid(shape, patch_size: int) -> tuple[int, int]:
    h, w = shape[:2]
    if patch_size < 1 or h % patch_size or w % patch_size:
        raise ValueError(f"image {h}x{w} is not a whole number of {patch_size}x{patch_size} patches")
    return h // patch_size, w // patch_size


def _upsample(grid_values: np.ndarray, factor: int) -> np.ndarray:
    """(gh, gw, ...) -> (gh*factor, gw*factor, ...) by repeating each cell."""
    return np.repeat(np.repeat(grid_values, factor, axis=0), factor, axis=1)


def mask_overlay(image: np.ndarray, context_idx, target_blocks, patch_size: int) -> np.ndarray:
    """The image with each target block tinted its own colour and the patches in neither the context
    nor a target darkened; context patches are left as they are.

    image: uint8 (H, W, 3) or (H, W, 1), H and W multiples of patch_size. context_idx: flat row-major
    patch indices of the context. target_blocks: a sequence of index arrays, one per target block
    (a patch in two blocks takes the later block's colour). Returns uint8 (H, W, 3).
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(f"image must be HWC with 1 or 3 channels, got shape {img.shape}")
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    gh, gw = _patch_grid(img.shape, patch_size)
    n = gh * gw
    shade = np.full((n, 1), DROPPED_SHADE, dtype=np.float32)
    alpha = np.zeros((n, 1), dtype=np.float32)
    colour = np.zeros((n, 3), dtype=np.float32)
    blocks = [np.asarray(block, dtype=np.int64).reshape(-1) for block in target_blocks]
    for idx in [np.asarray(context_idx, dtype=np.int64).reshape(-1), *blocks]:
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"patch index out of range 0..{n - 1} for a {gh}x{gw} grid")
    shade[np.asarray(context_idx, dtype=np.int64).reshape(-1)] = 1.0
    for b, idx in enumerate(blocks):
        shade[idx], alpha[idx], colour[idx] = 1.0, TINT, BLOCK_COLOURS[b % len(BLOCK_COLOURS)]
    per_patch = lambda a: _upsample(a.reshape(gh, gw, -1), patch_size)
    out = img * per_patch(shade) * (1.0 - per_patch(alpha)) + per_patch(alpha) * per_patch(colour)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# Viridis at 5 evenly spaced points: dark blue (low) -> yellow (high), readable in greyscale too.
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """values in [0, 1] (any shape) -> uint8 RGB (shape + (3,)), viridis-like."""
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(_VIRIDIS))
    rgb = np.stack([np.interp(x, stops, _VIRIDIS[:, c]) for c in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def attention_map_image(attn: np.ndarray, grid: tuple[int, int], *, query: int | None = None,
                        scale: int = 1) -> np.ndarray:
    """An attention map as a uint8 (gh*scale, gw*scale, 3) heatmap.

    attn: softmax weights (N, N) or (heads, N, N), rows = queries, N = gh*gw patches (heads are
    averaged). grid: (gh, gw). query: None shows the attention each patch receives (mean over
    queries); an index shows where that query patch looks. scale: pixels per patch. The map is
    min-max normalised (a constant map is all low).
    """
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim == 3:
        a = a.mean(axis=0)
    gh, gw = grid
    if a.ndim != 2 or a.shape != (gh * gw, gh * gw):
        raise ValueError(f"attention must be (N, N) or (heads, N, N) with N = {gh}*{gw}, got {np.shape(attn)}")
    values = a.mean(axis=0) if query is None else a[query]
    span = values.max() - values.min()
    normalised = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    return _upsample(colormap(normalised.reshape(gh, gw)), scale)


class SilentLogger:
    """The logger of a data-parallel rank other than 0: the same calls, no files and no console lines
    (rank 0 writes the run's metrics, train.log and TensorBoard events for every rank)."""

    def __init__(self, log_frequency: int = 50):
        self.log_frequency = log_frequency
        self.dir = None          # no run directory: nothing is written
        self.console = None

    def should_log(self, step: int) -> bool:
        return step % self.log_frequency == 0

    def log_scalars(self, step, scalars, *, epoch=None) -> None:
        pass

    def log_histograms(self, step, arrays) -> None:
        pass

    def log_images(self, step, images) -> None:
        pass

    def log_line(self, text: str, *, echo: bool = True) -> None:
        pass

    def log_text(self, text: str, *, tag: str = "plan", step: int = 0) -> None:
        pass

    def close(self) -> None:
        pass
