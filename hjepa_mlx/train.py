"""`train(loaded, plan)`: wiring and the loop only — data, masks, compiled step, logging, eval, checkpoints.

Sync discipline: one `mx.eval(state, metrics)` per optimizer step; Python floats only at log time.
"""

from __future__ import annotations

import contextlib
import os
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
from hjepa_mlx.distributed import SINGLE, Watchdog, World, check_same, mean_across, shard_masks, stop_vote
from hjepa_mlx.errors import UserError
from hjepa_mlx.masks import sample_masks
from hjepa_mlx.console import Console
from hjepa_mlx.live import LiveRun, activity_costs
from hjepa_mlx.pictures import Pictures
from hjepa_mlx.plan import Plan, describe_plan, make_plan
from hjepa_mlx.plan_checks import check_plan
from hjepa_mlx.resume_check import check_resume, truncate_metrics
from hjepa_mlx.run_lock import RunLock
from hjepa_mlx.run_logging import RunLogger, SilentLogger
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
    if "local_crops" in host_batches[0]:
        batch["local_crops"] = mx.array(np.stack([b["local_crops"] for b in host_batches]))
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


def train(loaded: LoadedConfig, plan: Plan, *, resume: str | None = None, resume_with_changes: bool = False,
          budget_s: float | None = None, seed_name: str | None = None, world: World = SINGLE) -> int:
    """Run training in plan.run_dir; rank 0 holds the directory's lock (one run per directory) and alone
    writes it. world: the data-parallel processes (hjepa_mlx/distributed.py); budget_s, seed_name: for the
    live estimate (hjepa_mlx/live.py)."""
    _check_run_dir(Path(plan.run_dir), resume)
    with RunLock(plan.run_dir) if world.is_main else contextlib.nullcontext():
        return _train(loaded, plan, resume=resume, resume_with_changes=resume_with_changes, budget_s=budget_s,
                      seed_name=seed_name, world=world)


def _train(loaded: LoadedConfig, plan: Plan, *, resume: str | None, resume_with_changes: bool,
           budget_s: float | None, seed_name: str | None, world: World) -> int:
    config = loaded.config
    run_dir = Path(plan.run_dir)

    loaders = build_loaders(config, plan, world)
    plan = make_plan(config, output_dir=str(run_dir), dataset_sizes=train_dataset_sizes(loaders), world=world)
    mask_plan = check_plan(config, plan)    # again, with the real dataset sizes
    model = build_model(config, plan, world=world, quiet=not world.is_main)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    manager = CheckpointManager(current_series(run_dir), keep_last_k=config.checkpoint.keep_last_k,
                                metric=config.checkpoint.metric, mode=config.checkpoint.mode)
    if not world.is_main:
        manager.save = lambda *args, **kwargs: None     # rank 0 writes the checkpoints every rank resumes from
    state = init_state(model, config.experiment.seed)
    start_epoch, start_batch, best = 0, 0, None
    if resume is not None:
        restored = manager.load(resume, state)
        if restored is None:
            print(f"resume: no checkpoint in {run_dir / 'checkpoints'} yet; starting from scratch")
            if world.is_main:      # rows of a run killed before its first save
                truncate_metrics(run_dir, {"step": 0}, checkpoint_in_run=False)
        else:
            state, meta = restored
            # every rank refuses a changed config alike; only rank 0 forks (so the no-op save above stands)
            # and trims the run directory's files
            fork = None
            if world.is_main or not resume_with_changes:
                fork = check_resume(config, meta, plan, run_dir, resume_with_changes)
            if fork is not None:
                manager = CheckpointManager(fork, keep_last_k=manager.keep_last_k, metric=manager.metric, mode=manager.mode)
            if world.is_main:
                truncate_metrics(run_dir, meta, checkpoint_in_run=str(resume) == "auto")
            start_epoch, start_batch, best = meta["epoch"], meta["batch_in_epoch"], meta.get("best_metric")
            print(f"resume: step {meta['step']}, epoch {start_epoch + 1}, batch {start_batch}")
    from hjepa_mlx.config import to_dict
    check_same(world, state, config_dict=to_dict(config), when="at the start")
    if world.is_main:
        (run_dir / "config.yaml").write_text(dump_yaml(config))

    settings = step_settings(config, plan)
    train_step, traces = make_train_step(model, settings, mean_across=mean_across(world))
    eval_step = make_eval_step(model, mean_across=mean_across(world))
    logger = RunLogger(run_dir, use_tensorboard=config.logging.use_tensorboard,
                       log_frequency=config.logging.log_frequency) if world.is_main else SilentLogger()
    watchdog = Watchdog.for_world(world)
    logger.log_text(describe_plan(plan))
    k = config.training.accumulation_steps
    steps_per_epoch = plan.steps_per_epoch
    seed = config.experiment.seed
    lg = config.logging
    dataset_names = [d.name for d in getattr(loaders.train.dataset, "datasets", [loaders.train.dataset])]
    grad_fn = make_grad_fn(model) if lg.log_gradients else None
    alarm = collapse_settings(config)
    monitor = CollapseMonitor(alarm, model, probe_batches(loaders.probe, alarm.probe_images) if alarm.frequency else [])
    live = LiveRun(config, plan, logger, budget_s=budget_s, seed_name=seed_name,
                   fallback=activity_costs(config, plan, mask_plan, loaders, monitor),
                   start_step=int(state["step"].item()),
                   console=None if world.is_main else Console(open(os.devnull, "w"), tty=False))
    pictures = Pictures(run_dir, config, plan, enabled=world.is_main)
    live.before_first_step()
    saves = MidEpochSaves(config.checkpoint.save_every_steps, config.checkpoint.save_every_minutes)
    with StopRequested() as stop:
        for epoch in range(start_epoch, config.training.epochs):
            batches = loaders.train.epoch(epoch, start_batch=start_batch * k)
            epoch_ids = []
            for batch_in_epoch in range(start_batch, steps_per_epoch):
                step_start = time.perf_counter()
                host = [next(batches) for _ in range(k)]
                step_no = int(state["step"].item())
                # masks of the global batch, this rank's rows: image p's masks do not depend on the world size
                masks = [shard_masks(world, sample_masks(mask_plan, config.data.batch_size, seed, step_no * k + i, 0))
                         for i in range(k)]
                state, metrics = train_step(state, device_batch(host, masks, plan.two_views))
                vote = stop_vote(world, stop)
                with watchdog.guard(f"in step {step_no + 1}"):
                    mx.eval(state, metrics, *([] if vote is None else [vote]))
                # several ranks stop on the vote alone, so all of them stop after the same step
                stopping = stop.signal if vote is None else vote.item() > 0 and (stop.signal or "a stop on another rank")
                if world.check_every and (step_no + 1) % world.check_every == 0:
                    check_same(world, state, when=f"after step {step_no + 1}")
                live.step(time.perf_counter() - step_start, step=step_no + 1, epoch=epoch,
                          step_in_epoch=batch_in_epoch + 1, metrics=metrics)
                if lg.log_dataset_distribution:
                    epoch_ids.extend(h["dataset_ids"] for h in host)
                if int(state["skipped_run"].item()) >= config.training.max_nonfinite_steps:
                    last = manager.latest()
                    live.close()
                    raise UserError(
                        f"training stopped: the loss or gradients were non-finite for "
                        f"{config.training.max_nonfinite_steps} consecutive steps "
                        f"(steps {step_no - config.training.max_nonfinite_steps + 2}-{step_no + 1}); the last "
                        f"checkpoint is {last or 'none'}; lower training.lr or raise training.clip_grad")
                if (step_no + 1) % config.logging.log_frequency == 0 or batch_in_epoch == steps_per_epoch - 1:
                    scalars = {name: float(v.item()) for name, v in metrics.items()}
                    scalars.update(live.rates(step_no + 1))
                    scalars["skipped_total"] = float(state["skipped_total"].item())
                    logger.log_scalars(step_no + 1, scalars, epoch=epoch)
                    live.log_progress(epoch, batch_in_epoch + 1, step_no + 1, scalars)
                    log_diagnostics(lg, model, state, host, masks, plan, logger, step_no + 1, grad_fn)
                if pictures.images_due(step_no + 1):
                    with live.phase("images", f"drawing masks / attention maps into {run_dir / 'images'} ..."):
                        pictures.images(step_no + 1, model, state, host, masks)
                if pictures.plots_due(step_no + 1):
                    with live.phase("plots", f"drawing {run_dir / 'plots'}/curves.png ..."):
                        pictures.plots()
                if monitor.due(step_no + 1):
                    with live.phase("collapse", f"collapse check: RankMe / feature std of {monitor.probe_images} "
                                                f"held-out images ..."):
                        collapse, warning = monitor.check(step_no + 1, state["target"])
                    logger.log_scalars(step_no + 1, collapse, epoch=epoch)
                    if warning:
                        logger.log_line(("stopping: " if monitor.should_stop else "warning: ") + warning)
                    if monitor.should_stop:
                        manager.save(state, _metadata(config, plan, epoch, batch_in_epoch + 1, step_no + 1, best),
                                     epoch=epoch)
                        logger.log_line(f"training.stop_on_collapse: saved a checkpoint at step {step_no + 1} "
                                        f"in {run_dir / 'checkpoints'}")
                        live.close()
                        logger.close()
                        return 3
                if stopping:
                    live.close()
                    saved = manager.save(state, _metadata(config, plan, epoch, batch_in_epoch + 1, step_no + 1,
                                                          best), epoch=epoch)
                    if saved:
                        logger.log_line(_saved_line(saved, state, manager.keep_last_k))
                    logger.log_line(f"{stopping}: saved a checkpoint at step {step_no + 1}; resume with "
                                    f"--resume auto")
                    logger.close()
                    return 130
                if saves.due(step_no + 1, batch_in_epoch == steps_per_epoch - 1):
                    saved = manager.save(state, _metadata(config, plan, epoch, batch_in_epoch + 1, step_no + 1, best),
                                         epoch=epoch)
                    if saved:
                        logger.log_line(f"mid-epoch {_saved_line(saved, state, manager.keep_last_k)}")
            start_batch = 0
            if lg.log_dataset_distribution and epoch_ids:
                logger.log_scalars(int(state["step"].item()), dataset_counts(np.concatenate(epoch_ids), dataset_names),
                                   epoch=epoch)
            val = None
            if (epoch + 1) % config.evaluation.eval_frequency == 0 or epoch + 1 == config.training.epochs:
                with live.phase("validation", f"validation loss on {plan.val_holdout * len(plan.datasets):,} "
                                              f"held-out images ..."), \
                        watchdog.guard(f"in the validation pass after epoch {epoch + 1}"):
                    val = _validation_loss(eval_step, state, loaders, mask_plan, config, plan, world)
                logger.log_scalars(int(state["step"].item()), {"val_loss": val}, epoch=epoch)
                logger.log_line(f"epoch {epoch + 1}: val_loss {val:.4f}")
            knn = None
            if config.evaluation.knn.enabled and ((epoch + 1) % config.evaluation.knn.frequency == 0
                                                 or epoch + 1 == config.training.epochs):
                with live.phase("knn", "k-NN: encoding the labelled train and test images ..."):
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
                with live.phase("checkpoint", f"saving a checkpoint into {manager.dir} ..."):
                    saved = manager.save(state, _metadata(config, plan, epoch + 1, 0, int(state["step"].item()), best),
                                         epoch=epoch + 1,
                                         metric_value=metric_value if config.checkpoint.save_best else None)
                if saved:
                    logger.log_line(_saved_line(saved, state, manager.keep_last_k))
                saves.mark_saved()
    if pictures.plot_every:
        with live.phase("plots", f"drawing {run_dir / 'plots'}/curves.png ..."):
            pictures.plots()
    live.close()
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


def _validation_loss(eval_step, state, loaders, mask_plan, config, plan, world: World = SINGLE) -> float:
    """Mean training loss over every held-out image (data.val_holdout per dataset), with fixed masks and
    views (seeded by the batch index, not the step), so values at different steps are comparable.
    With several ranks each evaluates its share of every batch and eval_step averages over the ranks."""
    losses = []
    for i, host in enumerate(loaders.val.epoch(0)):
        masks = shard_masks(world, sample_masks(mask_plan, config.data.batch_size, config.experiment.seed + 1, i, 0))
        micro = {key: value[0] for key, value in device_batch([host], [masks], plan.two_views).items()}
        metrics = eval_step(state, micro)
        losses.append(float(metrics["loss"].item()))
    return float(np.mean(losses)) if losses else float("nan")


def _online_knn(model, state, loaders, config) -> dict:
    from hjepa_mlx.evaluate.online import knn_during_training
    return knn_during_training(model, state, loaders, config)
