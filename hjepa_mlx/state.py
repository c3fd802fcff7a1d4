"""The training state: one dict pytree of MLX arrays, and nothing else.

{params: {encoder, predictor[, fpn]}, target: encoder params (EMA), opt: AdamW moments and count,
 step, skipped_total, skipped_run}. The target encoder starts as a copy of the online encoder. No PRNG key:
nothing in the step is random (predictor dropout is refused); the masks and views come from the host.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_map

from hjepa_mlx import optim


def init_state(model) -> dict:
    """`model`: an HJEPAModel built with fresh initial weights (build_model applied experiment.seed)."""
    params = model.trainable_parameters()
    target = tree_map(lambda p: mx.array(p), params["encoder"])
    return {
        "params": params,
        "target": target,
        "opt": optim.adamw_init(params),
        "step": mx.array(0, dtype=mx.int32),
        "skipped_total": mx.array(0, dtype=mx.int32),
        "skipped_run": mx.array(0, dtype=mx.int32),
    }
