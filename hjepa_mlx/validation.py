"""The validation loss: the training loss terms on every held-out image (data.val_holdout per dataset),
without gradients."""

from __future__ import annotations

import numpy as np

from hjepa_mlx.batch import device_batch, first_micro


def validation_loss(eval_step, state, loader, two_views: bool) -> float:
    """Mean loss over `loader`'s batches. The loader draws fixed masks and views (seeded by the batch
    index, not the step: build.build_loaders), so values at different steps are comparable. With several
    ranks each evaluates its share of every batch and eval_step averages over the ranks."""
    losses = [float(eval_step(state, first_micro(device_batch([batch], two_views)))["loss"].item())
              for batch in loader.epoch(0)]
    return float(np.mean(losses)) if losses else float("nan")
