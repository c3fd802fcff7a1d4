"""The compiled pure train and eval steps.

`train_step(state, batch) -> (state, metrics)`: for each of the k accumulation micro-batches, the
H-JEPA loss and its gradients; their mean; AdamW with the decay mask on the global-norm-clipped
gradients; then the EMA update of the target encoder. Every step-dependent scalar (lr, weight decay,
momentum) is computed inside from `state["step"]`, so the function is traced once per run. A non-finite
loss or gradient skips the whole update inside the graph (no retrace; AdamW keeps the old parameters and
moments, the EMA moves at rate 0) and is counted in the state.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
from mlx.utils import tree_map

from hjepa_mlx import optim, schedules
from hjepa_mlx.models.ema import ema_update_rate


@dataclass(frozen=True)
class StepSettings:
    total_steps: int
    warmup_steps: int
    base_lr: float
    warmup_lr_ratio: float
    min_lr_ratio: float
    lr_schedule: str
    weight_decay: float
    weight_decay_end: float | None
    betas: tuple[float, float]
    clip_grad: float | None
    accumulation_steps: int
    ema_start: float
    ema_end: float
    ema_warmup_steps: int
    optimizer: str = "adamw"          # a key of optim.OPTIMIZERS


def lr_at(s: StepSettings, step):
    return schedules.lr_at(step, base_lr=s.base_lr, warmup_steps=s.warmup_steps, total_steps=s.total_steps,
                           warmup_lr_ratio=s.warmup_lr_ratio, min_lr_ratio=s.min_lr_ratio, schedule=s.lr_schedule)


def wd_at(s: StepSettings, step):
    return schedules.weight_decay_at(step, start=s.weight_decay, end=s.weight_decay_end, total_steps=s.total_steps)


def ema_rate_at(s: StepSettings, step):
    return schedules.ema_rate_at(step, start=s.ema_start, end=s.ema_end, warmup_steps=s.ema_warmup_steps,
                                 total_steps=s.total_steps)


class TraceCounter:
    """Counts how often a function body runs in Python: under mx.compile, that is once per trace."""

    def __init__(self):
        self.count = 0


def make_train_step(model, settings: StepSettings, *, compile: bool = True, mean_across=None):
    """model: an `HJEPAModel` (see models/hjepa.py) with `.loss(params, target, micro_batch)`.
    mean_across: tree -> its mean over the data-parallel ranks (distributed.mean_across), applied once per
    optimizer step to the accumulated gradients (before clipping) and to the metrics; None alone.

    Returns (step_fn, trace_counter). `batch` holds arrays with a leading accumulation axis of size k.
    """
    counter = TraceCounter()
    k = settings.accumulation_steps
    update = optim.OPTIMIZERS[settings.optimizer]
    decay = None

    grad_fn = mx.value_and_grad(model.loss)

    def train_step(state, batch):
        counter.count += 1
        nonlocal decay
        if decay is None:
            decay = optim.decay_mask(state["params"])
        step = state["step"]
        grads, metrics_sum = None, None
        for i in range(k):
            micro = tree_map(lambda x: x[i], batch)
            (loss, metrics), g = grad_fn(state["params"], state["target"], micro)
            metrics = {**metrics, "loss": loss}
            grads = g if grads is None else tree_map(mx.add, grads, g)
            metrics_sum = metrics if metrics_sum is None else tree_map(mx.add, metrics_sum, metrics)
        # The loss of a k-micro-batch step is the mean over micro-batches, so its gradient is too.
        grads = tree_map(lambda g: g / k, grads)
        metrics = tree_map(lambda m: m / k, metrics_sum)
        if mean_across is not None:           # data parallel: every rank now holds the global-batch mean
            grads, metrics = mean_across(grads), mean_across(metrics)

        # Clipping, the finite check and the skip are folded into the update: no extra pass over the trees.
        grad_norm = optim.global_norm(grads)
        finite = mx.logical_and(optim.all_finite(grads), mx.isfinite(metrics["loss"]))
        lr = lr_at(settings, step)
        wd = wd_at(settings, step)
        new_params, new_opt = update(state["params"], grads, state["opt"], lr=lr, weight_decay=wd,
                                     betas=settings.betas, decay_mask=decay,
                                     grad_scale=optim.clip_scale(grad_norm, settings.clip_grad), apply=finite)
        # once per optimizer step, after AdamW, with the rate 1 - momentum (exact near momentum 1); a skipped
        # step moves nothing: rate 0 keeps the target (target + 0 * (online - target))
        rate = ema_rate_at(settings, step)
        new_target = ema_update_rate(state["target"], new_params["encoder"], mx.where(finite, rate, 0.0))
        momentum = 1.0 - rate                      # for the metrics only

        skipped = mx.logical_not(finite)
        new_state = {
            "params": new_params,
            "target": new_target,
            "opt": new_opt,
            "step": step + 1,
            "skipped_total": state["skipped_total"] + skipped.astype(mx.int32),
            "skipped_run": mx.where(skipped, state["skipped_run"] + 1, mx.zeros_like(state["skipped_run"])),
        }
        metrics = {**metrics, "lr": lr, "weight_decay": wd, "momentum": momentum, "grad_norm": grad_norm,
                   "skipped": skipped.astype(mx.float32)}
        return new_state, metrics

    return (mx.compile(train_step) if compile else train_step), counter


def make_eval_step(model, *, compile: bool = True, mean_across=None):
    """eval_step(state, micro_batch) -> metrics: the training loss terms without gradients or updates
    (averaged over the ranks with `mean_across`, as in make_train_step)."""

    def eval_step(state, micro):
        loss, metrics = model.loss(state["params"], state["target"], micro)
        metrics = {**metrics, "loss": loss}
        return metrics if mean_across is None else mean_across(metrics)

    return mx.compile(eval_step) if compile else eval_step
