"""`train(loaded, plan)`: wiring and the loop only — data, masks, compiled step, logging, eval, checkpoints.

Sync discipline: one `mx.eval(state, metrics)` per optimizer step; Python floats only at log time.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from hjepa_mlx.build import (build_loaders, build_model, collapse_settings, step_settings,
                             train_dataset_sizes)
from hjepa_mlx.collapse import CollapseMonitor, probe_batches
from hjepa_mlx.checkpoint import CheckpointManager
from hjepa_mlx.checkpoint_series import current_series
from hjepa_mlx.config import LoadedConfig, dump_yaml
from hjepa_mlx.diagnostics import attention_heatmap, dataset_counts, gradient_histograms, mask_image
from hjepa_mlx.errors import UserError
from hjepa_mlx.masks import sample_masks
from hjepa_mlx.plan import Plan, describe_plan, make_plan
from hjepa_mlx.plan_checks import check_plan
from hjepa_mlx.resume_check import check_resume, truncate_metrics
from hjepa_mlx.run_lock import RunLock
from hjepa_mlx.run_logging import ProgressLine, RunLogger
from hjepa_mlx.save_schedule import MidEpochSaves
from hjepa_mlx.state import init_state
from hjepa_mlx.step import make_eval_step, make_train_step


class StopRequested:
    """Ctrl-C / SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self):
        self.signal = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests): no handler
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def device_batch(host_batches: list[dict], masks: list, two_views: bool) -> dict:
    """Stack k micro-batches (host NumPy) and their masks into one dict of MLX arrays, leading axis k."""
    batch = {"images": mx.array(np.stack([b["images"] for b in host_batches]))}
    if two_views:
        batch["images_view2"] = mx.array(np.stack([b["images_view2"] for b in host_batches]))
        batch["context_idx_view2"] = mx.array(np.stack([m.context_idx_view2 for m in masks]))
    batch["context_idx"] = mx.array(np.stack([m.context_idx for m in masks]))
    batch["target_idx"] = mx.array(np.stack([m.target_idx for m in masks]))
    for level in range(len(masks[0].level_idx)):
        batch[f"level_idx_{level}"] = mx.array(np.stack([m.level_idx[level] for m in masks]))
    return batch


def _metadata(config, plan: Plan, epoch: int, batch_in_epoch: int, step: int, best) -> dict:
    from hjepa_mlx.config import to_dict
    return {"config": to_dict(config), "epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step,
            "seed": config.experiment.seed, "best_metric": best, "total_steps": plan.total_steps,
            "metrics_bytes": _metrics_bytes(plan.run_dir)}


def _metrics_bytes(run_dir) -> int:
    """Length of metrics.jsonl at save time: a resume cuts the rows written after the checkpoint."""
    try:
        return (Path(run_dir) / "metrics.jsonl").stat().st_size
    except OSError:
        return 0


def _saved_line(path: Path, state, keep_last_k: int) -> str:
    """The log line of a saved checkpoint: its size, and the size of the encoder alone."""
    encoder_bytes = sum(v.nbytes for _, v in tree_flatten(state["target"]))
    return (f"checkpoint {path.name}: {path.stat().st_size / 1e6:.1f} MB, the full training state for resume "
            f"(both encoders, predictor, AdamW moments); the target encoder alone is {encoder_bytes / 1e6:.1f} MB "
            f"(scripts/export.py); the newest {keep_last_k} (checkpoint.keep_last_k) and the best are kept")


def _check_run_dir(run_dir: Path, resume: str | None) -> None:
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if has_checkpoints and resume is None:
        raise UserError(f"{run_dir} already holds checkpoints of a run; pass --resume auto to continue it or "
                        f"--output-dir NEW_DIR to start another (nothing was changed)")


def train(loaded: LoadedConfig, plan: Plan, *, resume: str | None = None, resume_with_changes: bool = False) -> int:
    """Run training in plan.run_dir, holding its lock (one process per run directory)."""
    _check_run_dir(Path(plan.run_dir), resume)
    with RunLock(plan.run_dir):
        return _train(loaded, plan, resume=resume, resume_with_changes=resume_with_changes)


def _train(loaded: LoadedConfig, plan: Plan, *, resume: str | None, resume_with_changes: bool) -> int:
    config = loaded.config
    run_dir = Path(plan.run_dir)

    loaders = build_loaders(config, plan)
    plan = make_plan(config, output_dir=str(run_dir), dataset_sizes=train_dataset_sizes(loaders))
    mask_plan = check_plan(config, plan)    # again, with the real dataset sizes
    model = build_model(config, plan)
    run_dir.mkdir(parents=True, exist_ok=True)
    manager = CheckpointManager(current_series(run_dir), keep_last_k=config.checkpoint.keep_last_k,
                                metric=config.checkpoint.metric, mode=config.checkpoint.mode)
    state = init_state(model, config.experiment.seed)
    start_epoch, start_batch, best = 0, 0, None
    if resume is not None:
        restored = manager.load(resume, state)
        if restored is None:
            print(f"resume: no checkpoint in {run_dir / 'checkpoints'} yet; starting from scratch")
            truncate_metrics(run_dir, {"step": 0}, checkpoint_in_run=False)   # rows of a run killed before its first save
        else:
            state, meta = restored
            fork = check_resume(config, meta, plan, run_dir, resume_with_changes)
            if fork is not None:
                manager = CheckpointManager(fork, keep_last_k=manager.keep_last_k, metric=manager.metric, mode=manager.mode)
            truncate_metrics(run_dir, meta, checkpoint_in_run=str(resume) == "auto")
            start_epoch, start_batch, best = meta["epoch"], meta["batch_in_epoch"], meta.get("best_metric")
            print(f"resume: step {meta['step']}, epoch {start_epoch + 1}, batch {start_batch}")
    (run_dir / "config.yaml").write_text(dump_yaml(config))

    settings = step_settings(config, plan)
    train_step, traces = make_train_step(model, settings)
    eval_step = make_eval_step(model)
    logger = RunLogger(run_dir, use_tensorboard=config.logging.use_tensorboard,
                       log_frequency=config.logging.log_frequency)
    logger.log_text(describe_plan(plan))
    k = config.training.accumulation_steps
    steps_per_epoch = plan.steps_per_epoch
    progress = ProgressLine(epochs=config.training.epochs, steps_per_epoch=steps_per_epoch)
    seed = config.experiment.seed
    lg = config.logging
    dataset_names = [d.name for d in getattr(loaders.train.dataset, "datasets", [loaders.train.dataset])]
    grad_fn = make_grad_fn(model) if lg.log_gradients else None
    alarm = collapse_settings(config)
    monitor = CollapseMonitor(alarm, model, probe_batches(loaders.probe, alarm.probe_images) if alarm.frequency else [])
    saves = MidEpochSaves(config.checkpoint.save_every_steps, config.checkpoint.save_every_minutes)
    with StopRequested() as stop:
        for epoch in range(start_epoch, config.training.epochs):
            batches = loaders.train.epoch(epoch, start_batch=start_batch * k)
            epoch_start, images_seen, epoch_ids = time.perf_counter(), 0, []
            for batch_in_epoch in range(start_batch, steps_per_epoch):
                host = [next(batches) for _ in range(k)]
                step_no = int(state["step"].item())
                masks = [sample_masks(mask_plan, config.data.batch_size, seed, step_no * k + i, 0) for i in range(k)]
                state, metrics = train_step(state, device_batch(host, masks, plan.two_views))
                mx.eval(state, metrics)
                images_seen += k * config.data.batch_size
                if lg.log_dataset_distribution:
                    epoch_ids.extend(h["dataset_ids"] for h in host)
                if int(state["skipped_run"].item()) >= config.training.max_nonfinite_steps:
                    last = manager.latest()
                    raise UserError(
                        f"training stopped: the loss or gradients were non-finite for "
                        f"{config.training.max_nonfinite_steps} consecutive steps "
                        f"(steps {step_no - config.training.max_nonfinite_steps + 2}-{step_no + 1}); the last "
                        f"checkpoint is {last or 'none'}; lower training.lr or raise training.clip_grad")
                if (step_no + 1) % config.logging.log_frequency == 0 or batch_in_epoch == steps_per_epoch - 1:
                    scalars = {name: float(v.item()) for name, v in metrics.items()}
                    elapsed = time.perf_counter() - epoch_start
                    scalars["images_per_s"] = images_seen / max(elapsed, 1e-9)
                    scalars["memory_gb"] = mx.get_active_memory() / 1e9
                    scalars["skipped_total"] = float(state["skipped_total"].item())
                    logger.log_scalars(step_no + 1, scalars, epoch=epoch)
                    logger.log_line(progress.format(epoch, batch_in_epoch + 1, scalars, elapsed,
                                                    batch_in_epoch + 1 - start_batch))
                    log_diagnostics(lg, model, state, host, masks, plan, logger, step_no + 1, grad_fn)
                if monitor.due(step_no + 1):
                    collapse, warning = monitor.check(step_no + 1, state["target"])
                    logger.log_scalars(step_no + 1, collapse, epoch=epoch)
                    if warning:
                        logger.log_line(("stopping: " if monitor.should_stop else "warning: ") + warning)
                    if monitor.should_stop:
                        manager.save(state, _metadata(config, plan, epoch, batch_in_epoch + 1, step_no + 1, best),
                                     epoch=epoch)
                        logger.log_line(f"training.stop_on_collapse: saved a checkpoint at step {step_no + 1} "
                                        f"in {run_dir / 'checkpoints'}")
                        logger.close()
                        return 3
                if stop.signal:
                    saved = manager.save(state, _metadata(config, plan, epoch, batch_in_epoch + 1, step_no + 1,
                                                          best), epoch=epoch)
                    logger.log_line(_saved_line(saved, state, manager.keep_last_k))
                    logger.log_line(f"{stop.signal}: saved a checkpoint at step {step_no + 1}; resume with "
                                    f"--resume auto")
                    logger.close()
                    return 130
                if saves.due(step_no + 1, batch_in_epoch == steps_per_epoch - 1):
                    saved = manager.save(state, _metadata(config, plan, epoch, batch_in_epoch + 1, step_no + 1, best),
                                         epoch=epoch)
                    logger.log_line(f"mid-epoch {_saved_line(saved, state, manager.keep_last_k)}")
            start_batch = 0
            if lg.log_dataset_distribution and epoch_ids:
                logger.log_scalars(int(state["step"].item()), dataset_counts(np.concatenate(epoch_ids), dataset_names),
                                   epoch=epoch)
            val = None
            if (epoch + 1) % config.evaluation.eval_frequency == 0 or epoch + 1 == config.training.epochs:
                val = _validation_loss(eval_step, state, loaders, mask_plan, config, plan)
                logger.log_scalars(int(state["step"].item()), {"val_loss": val}, epoch=epoch)
                logger.log_line(f"epoch {epoch + 1}: val_loss {val:.4f}")
            knn = None
            if config.evaluation.knn.enabled and ((epoch + 1) % config.evaluation.knn.frequency == 0
                                                 or epoch + 1 == config.training.epochs):
                knn = _online_knn(model, state, loaders, config)
                logger.log_scalars(int(state["step"].item()), knn, epoch=epoch)
                logger.log_line(f"epoch {epoch + 1}: " + ", ".join(f"{n} {v:.3f}" for n, v in knn.items()))
            metric_value = {"val_loss": val, "knn_top1": (knn or {}).get("knn_top1")}.get(config.checkpoint.metric)
            # a new best is saved whenever it is measured, whatever save_frequency says
            if ((epoch + 1) % config.checkpoint.save_frequency == 0 or epoch + 1 == config.training.epochs
                    or (config.checkpoint.save_best and manager.improves(metric_value))):
                if metric_value is not None and config.checkpoint.save_best:
                    if best is None or (metric_value < best if config.checkpoint.mode == "min" else metric_value > best):
                        best = metric_value
                saved = manager.save(state, _metadata(config, plan, epoch + 1, 0, int(state["step"].item()), best),
                                     epoch=epoch + 1,
                                     metric_value=metric_value if config.checkpoint.save_best else None)
                logger.log_line(_saved_line(saved, state, manager.keep_last_k))
                saves.mark_saved()
    logger.log_line(f"done: {int(state['step'].item())} steps, train step traced {traces.count} time(s), "
                    f"{int(state['skipped_total'].item())} update(s) skipped as non-finite; run directory {run_dir}")
    logger.close()
    return 0


def make_grad_fn(model):
    """Compiled gradients of the training loss for one micro-batch (log_gradients only)."""
    def grads(params, target, micro, key):
        return mx.grad(lambda p: model.loss(p, target, micro, key)[0])(params)
    return mx.compile(grads)


def log_diagnostics(lg, model, state, host, masks, plan, logger, step: int, grad_fn) -> None:
    image = host[0]["images"][0]
    if lg.log_images:
        logger.log_images(step, {"masks": mask_image(image, masks[0].context_idx[0], masks[0].target_idx[0],
                                                     plan.encoder.patch_size)})
    if lg.log_attention:
        logger.log_images(step, {"attention": attention_heatmap(model._target_encoder, state["target"], image)})
    if lg.log_gradients:
        micro = {key: value[0] for key, value in device_batch(host[:1], masks[:1], plan.two_views).items()}
        grads = grad_fn(state["params"], state["target"], micro, mx.random.key(step))
        logger.log_histograms(step, gradient_histograms(grads))


def _validation_loss(eval_step, state, loaders, mask_plan, config, plan) -> float:
    """Mean training loss over every held-out image (data.val_holdout per dataset), with fixed masks and
    views (seeded by the batch index, not the step), so values at different steps are comparable."""
    losses = []
    for i, host in enumerate(loaders.val.epoch(0)):
        masks = sample_masks(mask_plan, config.data.batch_size, config.experiment.seed + 1, i, 0)
        micro = {key: value[0] for key, value in device_batch([host], [masks], plan.two_views).items()}
        metrics = eval_step(state, micro)
        losses.append(float(metrics["loss"].item()))
    return float(np.mean(losses)) if losses else float("nan")


def _online_knn(model, state, loaders, config) -> dict:
    from hjepa_mlx.evaluate.online import knn_during_training
    return knn_during_training(model, state, loaders, config)
