"""When a run draws its pictures and what goes into them (plots.py draws): `plots/curves.png` every
`logging.plot_frequency` steps (and at the end), `images/masks_step{N}.png` (log_images) and
`images/attention_step{N}.png` (log_attention) every `logging.image_frequency` steps, from the step's own
training images and masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from hjepa_mlx.diagnostics import to_uint8
from hjepa_mlx.plots import draw_attention, draw_curves, draw_masks
from hjepa_mlx.runfiles import read_metrics

IMAGES_SHOWN = 4     # training images per picture


def attention_received(encoder, params, images: np.ndarray) -> list[np.ndarray]:
    """The attention each patch receives in the last block (mean over heads and queries), one (gh, gw) map
    per image."""
    encoder.update(params)
    weights = np.array(encoder.last_attention(mx.array(images)))              # (B, H, N, N)
    received = weights.mean(axis=(1, 2))                                      # (B, N)
    gh, gw = encoder.grid
    return [r.reshape(gh, gw) for r in received]


@dataclass(frozen=True)
class PictureSettings:
    """logging.plot_frequency / image_frequency (steps, 0: never), log_images (masks) / log_attention,
    the encoder's patch size, experiment.name (the plots' title)."""
    plot_every: int
    image_every: int
    masks: bool
    attention: bool
    patch_size: int
    name: str


class Pictures:
    def __init__(self, run_dir: str | Path, settings: PictureSettings, *, enabled: bool = True):
        """enabled False (a data-parallel rank other than 0): nothing is ever due."""
        self.run_dir = Path(run_dir)
        self.plot_every, self.image_every = (settings.plot_every, settings.image_every) if enabled else (0, 0)
        self.masks_on, self.attention_on = settings.masks, settings.attention
        self.patch_size = settings.patch_size
        self.name = settings.name

    def plots_due(self, step: int) -> bool:
        return self.plot_every > 0 and step % self.plot_every == 0

    def images_due(self, step: int) -> bool:
        return self.image_every > 0 and (self.masks_on or self.attention_on) and step % self.image_every == 0

    def plots(self) -> Path | None:
        return draw_curves(read_metrics(self.run_dir / "metrics.jsonl"), self.run_dir / "plots" / "curves.png",
                           title=f"{self.name}: {self.run_dir}")

    def images(self, step: int, model, state, batch) -> list[Path]:
        """batch: the step's first micro-batch (`Batch`, with its masks: the images it trained on)."""
        raw = batch.images[:IMAGES_SHOWN]
        shown = [to_uint8(img) for img in raw]
        out = []
        if self.masks_on:
            m = batch.masks
            out.append(draw_masks(shown, [m.context_idx[i] for i in range(len(shown))],
                                  [m.target_idx[i] for i in range(len(shown))], self.patch_size,
                                  self.run_dir / "images" / f"masks_step{step:08d}.png",
                                  title=f"step {step}: context and target blocks on training images (view 1)"))
        if self.attention_on:
            maps = attention_received(model.target_encoder, state["target"], raw)
            out.append(draw_attention(shown, maps, self.run_dir / "images" / f"attention_step{step:08d}.png",
                                      title=f"step {step}: target encoder attention"))
        return out
