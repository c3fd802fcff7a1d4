"""When a run draws its pictures and what goes into them (plots.py draws): `plots/curves.png` every
`logging.plot_frequency` steps (and at the end), `images/masks_step{N}.png` (log_images) and
`images/attention_step{N}.png` (log_attention) every `logging.image_frequency` steps, from the step's own
training images and masks."""

from __future__ import annotations

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


class Pictures:
    def __init__(self, run_dir: str | Path, config, plan, *, enabled: bool = True):
        """enabled False (a data-parallel rank other than 0): nothing is ever due."""
        lg = config.logging
        self.run_dir = Path(run_dir)
        self.plot_every, self.image_every = (lg.plot_frequency, lg.image_frequency) if enabled else (0, 0)
        self.masks_on, self.attention_on = lg.log_images, lg.log_attention
        self.patch_size = plan.encoder.patch_size
        self.name = config.experiment.name

    def plots_due(self, step: int) -> bool:
        return self.plot_every > 0 and step % self.plot_every == 0

    def images_due(self, step: int) -> bool:
        return self.image_every > 0 and (self.masks_on or self.attention_on) and step % self.image_every == 0

    def plots(self) -> Path | None:
        return draw_curves(read_metrics(self.run_dir / "metrics.jsonl"), self.run_dir / "plots" / "curves.png",
                           title=f"{self.name}: {self.run_dir}")

    def images(self, step: int, model, state, host: list[dict], masks: list) -> list[Path]:
        """host, masks: the step's first micro-batch and its masks (the images it trained on)."""
        raw = host[0]["images"][:IMAGES_SHOWN]
        shown = [to_uint8(img) for img in raw]
        out = []
        if self.masks_on:
            m = masks[0]
            out.append(draw_masks(shown, [m.context_idx[i] for i in range(len(shown))],
                                  [m.target_idx[i] for i in range(len(shown))], self.patch_size,
                                  self.run_dir / "images" / f"masks_step{step:08d}.png",
                                  title=f"step {step}: context and target blocks on training images (view 1)"))
        if self.attention_on:
            maps = attention_received(model.target_encoder, state["target"], raw)
            out.append(draw_attention(shown, maps, self.run_dir / "images" / f"attention_step{step:08d}.png",
                                      title=f"step {step}: target encoder attention"))
        return out
