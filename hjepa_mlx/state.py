"""The training state: one dict pytree of MLX arrays, and nothing else.

{params: {encoder, predictor[, fpn]}, target: encoder params (EMA), opt: AdamW moments and count,
 step, key, skipped_total, skipped_run}. The target encoder starts as a copy of the online encoder.
"""

from __future__ import annotations

import mlx.core as mx
from mlx.utils import tree_map

from hjepa_mlx import optim


def init_state(model, seed: int) -> dict:
    """`model`: an HJEPAModel whose modules were built with fresh initial weights under `seed`."""
    params = model.trainable_parameters()
    target = tree_map(lambda p: mx.array(p), params["encoder"])
    return {
        "params": params,
        "target": target,
        "opt": optim.adamw_init(params),
        "step": mx.array(0, dtype=mx.int32),
        "key": mx.random.key(seed),
        "skipped_total": mx.array(0, dtype=mx.int32),
        "skipped_run": mx.array(0, dtype=mx.int32),
    }
