"""Everything a training run needs, built once before the loop: `open_run(config, plan, ...) -> Run`.

It reads the data, fixes the plan with the real dataset sizes, builds the model, the compiled steps,
the logger, the live console, the collapse monitor and the saver, and restores a checkpoint on resume.
The loop itself is `train.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx

from hjepa_mlx import build
from hjepa_mlx.checkpoint import CheckpointManager
from hjepa_mlx.checkpoint_policy import Saver
from hjepa_mlx.checkpoint_series import current_series
from hjepa_mlx.collapse import CollapseMonitor, probe_batches
from hjepa_mlx.config import dump_yaml, run_settings, to_dict
from hjepa_mlx.config.plan import Plan, describe_plan, make_plan
from hjepa_mlx.config.plan_checks import check_plan
from hjepa_mlx.console import Console
from hjepa_mlx.distributed import SINGLE, Watchdog, World, check_same, mean_across
from hjepa_mlx.live import LiveRun
from hjepa_mlx.pictures import Pictures
from hjepa_mlx.resume_check import check_resume, truncate_metrics
from hjepa_mlx.run_logging import RunLogger, SilentLogger
from hjepa_mlx.state import init_state
from hjepa_mlx.step import make_eval_step, make_train_step


@dataclass(frozen=True)
class LoopSettings:
    """What the loop itself needs from the config (config/run_settings.loop_settings)."""
    epochs: int
    steps_per_epoch: int
    accumulation_steps: int
    two_views: bool
    max_nonfinite_steps: int
    log_frequency: int
    eval_frequency: int
    knn: object | None                  # evaluate.online.KnnSettings, None when k-NN is off
    log_dataset_distribution: bool
    log_images: bool
    log_attention: bool
    log_gradients: bool
    use_tensorboard: bool


@dataclass
class Run:
    settings: LoopSettings
    plan: Plan
    run_dir: Path
    world: World
    model: object
    state: dict
    train_step: object
    traces: object
    eval_step: object
    loaders: object
    logger: object
    live: LiveRun
    pictures: Pictures
    monitor: CollapseMonitor
    saver: Saver
    watchdog: object
    start_epoch: int = 0
    start_batch: int = 0
    dataset_names: list = field(default_factory=list)
    grad_fn: object = None                            # compiled gradients of one micro-batch (log_gradients)
    epoch_ids: list = field(default_factory=list)     # dataset ids seen this epoch (log_dataset_distribution)


def open_run(config, plan: Plan, *, resume: str | None, resume_with_changes: bool, budget_s: float | None,
             seed_name: str | None, world: World = SINGLE) -> Run:
    run_dir = Path(plan.run_dir)
    loaders = build.build_loaders(config, plan, world)
    plan = make_plan(config, output_dir=str(run_dir), dataset_sizes=build.train_dataset_sizes(loaders), world=world)
    mask_plan = check_plan(config, plan)    # again, with the real dataset sizes
    loaders = build.attach_masks(loaders, config, plan, mask_plan, world)
    model = build.build_model(config, plan, world=world, quiet=not world.is_main)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    policy = run_settings.save_policy(config)
    manager = CheckpointManager(current_series(run_dir), keep_last_k=policy.keep_last_k, metric=policy.metric,
                                mode=policy.mode)
    if not world.is_main:
        manager.save = lambda *args, **kwargs: None     # rank 0 writes the checkpoints every rank resumes from
    config_dict = to_dict(config)
    state = init_state(model)
    start_epoch, start_batch, best = 0, 0, None
    if resume is not None:
        state, manager, (start_epoch, start_batch, best) = _resume(manager, resume, state, config_dict, plan,
                                                                   run_dir, resume_with_changes, world)
    check_same(world, state, config_dict=config_dict, when="at the start")
    if world.is_main:
        (run_dir / "config.yaml").write_text(dump_yaml(config))

    settings = run_settings.loop_settings(config, plan)
    train_step, traces = make_train_step(model, build.step_settings(config, plan), mean_across=mean_across(world))
    eval_step = make_eval_step(model, mean_across=mean_across(world))
    logger = RunLogger(run_dir, use_tensorboard=settings.use_tensorboard,
                       log_frequency=settings.log_frequency) if world.is_main else \
        SilentLogger(log_frequency=settings.log_frequency)     # every rank logs (and gathers) at the same steps
    logger.log_text(describe_plan(plan))
    alarm = build.collapse_settings(config)
    monitor = CollapseMonitor(alarm, model, probe_batches(loaders.probe, alarm.probe_images) if alarm.frequency else [])
    live = LiveRun(run_settings.run_schedule(config, plan), run_settings.run_info(config), plan, logger,
                   budget_s=budget_s, seed_name=seed_name, fallback=build.activity_costs(config, plan, mask_plan, loaders,
                                                                      monitor.probe_images),
                   start_step=int(state["step"].item()),
                   console=None if world.is_main else Console(open(os.devnull, "w"), tty=False))
    saver = Saver(manager, policy, run_dir=run_dir, config_dict=config_dict, seed=plan.seed,
                  total_steps=plan.total_steps, epochs=settings.epochs, best=best)
    names = [d.name for d in getattr(loaders.train.dataset, "datasets", [loaders.train.dataset])]
    return Run(settings=settings, plan=plan, run_dir=run_dir, world=world, model=model, state=state,
               train_step=train_step, traces=traces, eval_step=eval_step, loaders=loaders, logger=logger, live=live,
               pictures=Pictures(run_dir, run_settings.picture_settings(config, plan), enabled=world.is_main),
               monitor=monitor, saver=saver, watchdog=Watchdog.for_world(world), start_epoch=start_epoch,
               start_batch=start_batch, dataset_names=names,
               grad_fn=make_grad_fn(model) if settings.log_gradients else None)


def _resume(manager, resume: str, state, config_dict: dict, plan: Plan, run_dir: Path, resume_with_changes: bool,
            world: World):
    """(state, manager, (epoch, batch, best)) after restoring `resume` ('auto' or a path) if it exists."""
    restored = manager.load(resume, state)
    if restored is None:
        print(f"resume: no checkpoint in {run_dir / 'checkpoints'} yet; starting from scratch")
        if world.is_main:      # rows of a run killed before its first save
            truncate_metrics(run_dir, {"step": 0}, checkpoint_in_run=False)
        return state, manager, (0, 0, None)
    state, meta = restored
    # every rank refuses a changed config alike; only rank 0 forks (so the no-op save above stands) and
    # trims the run directory's files
    fork = None
    if world.is_main or not resume_with_changes:
        fork = check_resume(config_dict, meta, plan, run_dir, resume_with_changes)
    if fork is not None:
        manager = CheckpointManager(fork, keep_last_k=manager.keep_last_k, metric=manager.metric, mode=manager.mode)
    if world.is_main:
        truncate_metrics(run_dir, meta, checkpoint_in_run=str(resume) == "auto")
    print(f"resume: step {meta['step']}, epoch {meta['epoch'] + 1}, batch {meta['batch_in_epoch']}")
    return state, manager, (meta["epoch"], meta["batch_in_epoch"], meta.get("best_metric"))



def make_grad_fn(model):
    """Compiled gradients of the training loss for one micro-batch (log_gradients only)."""
    def grads(params, target, micro):
        return mx.grad(lambda p: model.loss(p, target, micro)[0])(params)
    return mx.compile(grads)
