"""`train(loaded, plan)`: the training loop. Everything it needs is built once by `session.open_run`.

Sync discipline: one `mx.eval(state, metrics)` per optimizer step; Python floats only at log time.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from hjepa_mlx.batch import device_batch, first_micro
from hjepa_mlx.checkpoint_policy import Position
from hjepa_mlx.config import LoadedConfig
from hjepa_mlx.config.plan import Plan
from hjepa_mlx.diagnostics import attention_heatmap, dataset_counts, gradient_histograms, mask_image
from hjepa_mlx.distributed import SINGLE, World, check_same, stop_vote
from hjepa_mlx.errors import UserError
from hjepa_mlx.evaluate.online import knn_during_training
from hjepa_mlx.run_lock import RunLock
from hjepa_mlx.session import Run, open_run
from hjepa_mlx.signals import StopRequested
from hjepa_mlx.validation import validation_loss

COLLAPSED, STOPPED = 3, 130     # exit codes: training.stop_on_collapse; Ctrl-C / SIGTERM (resume with --resume auto)


def train(loaded: LoadedConfig, plan: Plan, *, resume: str | None = None, resume_with_changes: bool = False,
          budget_s: float | None = None, seed_name: str | None = None, world: World = SINGLE) -> int:
    """Run training in plan.run_dir; rank 0 holds the directory's lock (one run per directory) and alone
    writes it. world: the data-parallel processes (hjepa_mlx/distributed.py); budget_s, seed_name: for the
    live estimate (hjepa_mlx/live.py)."""
    _check_run_dir(Path(plan.run_dir), resume)
    with RunLock(plan.run_dir) if world.is_main else contextlib.nullcontext():
        run = open_run(loaded.config, plan, resume=resume, resume_with_changes=resume_with_changes,
                       budget_s=budget_s, seed_name=seed_name, world=world)
        return loop(run)


def loop(run: Run) -> int:
    """The algorithm: for each optimizer step, k micro-batches (images and masks from the loader's
    workers) through the compiled step; between steps logging, pictures, the collapse check and saves;
    after each epoch validation, k-NN and the end-of-epoch checkpoint."""
    s = run.settings
    run.live.before_first_step()
    with StopRequested() as stop:
        for epoch in range(run.start_epoch, s.epochs):
            batches = run.loaders.train.epoch(epoch, start_batch=run.start_batch * s.accumulation_steps)
            for batch_in_epoch in range(run.start_batch, s.steps_per_epoch):
                started = time.perf_counter()
                at = Position(epoch, batch_in_epoch + 1, int(run.state["step"].item()) + 1)   # after this step
                micro = [next(batches) for _ in range(s.accumulation_steps)]
                run.state, metrics = run.train_step(run.state, device_batch(micro, s.two_views))
                stopping = _sync(run, metrics, stop, at.step)
                last_of_epoch = at.batch == s.steps_per_epoch
                run.live.step(time.perf_counter() - started, step=at.step, epoch=epoch, step_in_epoch=at.batch,
                              metrics=metrics)
                if s.log_dataset_distribution:
                    run.epoch_ids.extend(b.dataset_ids for b in micro)
                _refuse_nonfinite_run(run, at)
                _log_step(run, metrics, micro, at, last_of_epoch)
                if _collapse_check(run, at):
                    return _close(run, COLLAPSED)
                if stopping:
                    run.live.close()
                    _save(run, at, prefix="")
                    run.logger.log_line(f"{stopping}: saved a checkpoint at step {at.step}; resume with --resume auto")
                    return _close(run, STOPPED)
                if run.saver.mid_epoch.due(at.step, last_of_epoch):
                    _save(run, at, prefix="mid-epoch ")
            run.start_batch = 0
            _end_of_epoch(run, epoch)
    if run.pictures.plot_every:
        with run.live.phase("plots", f"drawing {run.run_dir / 'plots'}/curves.png ..."):
            run.pictures.plots()
    run.live.close()
    run.logger.log_line(f"done: {int(run.state['step'].item())} steps, train step traced {run.traces.count} "
                        f"time(s), {int(run.state['skipped_total'].item())} update(s) skipped as non-finite; "
                        f"run directory {run.run_dir}")
    return _close(run, 0)


# ------------------------------------------------------------------ between steps

def _sync(run: Run, metrics, stop, step: int) -> str | None:
    """The step's one sync point (under the data-parallel watchdog) and the stop decision: several ranks
    stop on a vote, so all of them stop after the same step. Returns why to stop, or None."""
    vote = stop_vote(run.world, stop)
    with run.watchdog.guard(f"in step {step}"):
        mx.eval(run.state, metrics, *([] if vote is None else [vote]))
    stopping = stop.signal if vote is None else vote.item() > 0 and (stop.signal or "a stop on another rank")
    if run.world.check_every and step % run.world.check_every == 0:
        check_same(run.world, run.state, when=f"after step {step}")
    return stopping or None


def _refuse_nonfinite_run(run: Run, at: Position) -> None:
    limit = run.settings.max_nonfinite_steps
    if int(run.state["skipped_run"].item()) >= limit:
        last = run.saver.manager.latest()
        run.live.close()
        raise UserError(f"training stopped: the loss or gradients were non-finite for {limit} consecutive steps "
                        f"(steps {at.step - limit + 1}-{at.step}); the last checkpoint is {last or 'none'}; lower "
                        f"training.lr or raise training.clip_grad")


def _log_step(run: Run, metrics, micro: list, at: Position, last_of_epoch: bool) -> None:
    """Scalars and the progress line every log_frequency steps and after an epoch's last step; then the
    pictures that are due."""
    if run.logger.should_log(at.step) or last_of_epoch:
        scalars = {name: float(v.item()) for name, v in metrics.items()}
        scalars.update(run.live.rates(at.step))
        scalars["skipped_total"] = float(run.state["skipped_total"].item())
        run.logger.log_scalars(at.step, scalars, epoch=at.epoch)
        run.live.log_progress(at.epoch, at.batch, at.step, scalars)
        _log_diagnostics(run, micro, at.step)
    if run.pictures.images_due(at.step):
        with run.live.phase("images", f"drawing masks / attention maps into {run.run_dir / 'images'} ..."):
            run.pictures.images(at.step, run.model, run.state, micro[0])
    if run.pictures.plots_due(at.step):
        with run.live.phase("plots", f"drawing {run.run_dir / 'plots'}/curves.png ..."):
            run.pictures.plots()


def _log_diagnostics(run: Run, micro: list, step: int) -> None:
    """TensorBoard images and histograms (logging.log_images / log_attention / log_gradients)."""
    s, first = run.settings, micro[0]
    if s.log_images:
        run.logger.log_images(step, {"masks": mask_image(first.images[0], first.masks.context_idx[0],
                                                         first.masks.target_idx[0], run.plan.encoder.patch_size)})
    if s.log_attention:
        run.logger.log_images(step, {"attention": attention_heatmap(run.model.target_encoder, run.state["target"],
                                                                    first.images[0])})
    if s.log_gradients:
        grads = run.grad_fn(run.state["params"], run.state["target"],
                            first_micro(device_batch(micro[:1], s.two_views)))
        run.logger.log_histograms(step, gradient_histograms(grads))


def _collapse_check(run: Run, at: Position) -> bool:
    """The collapse alarm when due; True when training.stop_on_collapse stops the run (after a save)."""
    if not run.monitor.due(at.step):
        return False
    with run.live.phase("collapse", f"collapse check: RankMe / feature std of {run.monitor.probe_images} "
                                    f"held-out images ..."):
        collapse, warning = run.monitor.check(at.step, run.state["target"])
    run.logger.log_scalars(at.step, collapse, epoch=at.epoch)
    if warning:
        run.logger.log_line(("stopping: " if run.monitor.should_stop else "warning: ") + warning)
    if not run.monitor.should_stop:
        return False
    run.saver.save(run.state, at)
    run.logger.log_line(f"training.stop_on_collapse: saved a checkpoint at step {at.step} in "
                        f"{run.run_dir / 'checkpoints'}")
    run.live.close()
    return True


def _save(run: Run, at: Position, prefix: str) -> None:
    saved = run.saver.save(run.state, at)
    if saved:
        run.logger.log_line(prefix + run.saver.saved_line(saved, run.state))


def _close(run: Run, code: int) -> int:
    run.logger.close()
    return code


# ------------------------------------------------------------------ after an epoch

def _end_of_epoch(run: Run, epoch: int) -> None:
    """Dataset counts, validation loss, k-NN (each when due), then the end-of-epoch checkpoint."""
    s, step = run.settings, int(run.state["step"].item())
    last = epoch + 1 == s.epochs
    if s.log_dataset_distribution and run.epoch_ids:
        run.logger.log_scalars(step, dataset_counts(np.concatenate(run.epoch_ids), run.dataset_names), epoch=epoch)
    run.epoch_ids = []
    measured = {}
    if (epoch + 1) % s.eval_frequency == 0 or last:
        with run.live.phase("validation", f"validation loss on {run.plan.val_holdout * len(run.plan.datasets):,} "
                                                f"held-out images ..."), \
                run.watchdog.guard(f"in the validation pass after epoch {epoch + 1}"):
            measured["val_loss"] = validation_loss(run.eval_step, run.state, run.loaders.val, s.two_views)
        run.logger.log_scalars(step, {"val_loss": measured["val_loss"]}, epoch=epoch)
        run.logger.log_line(f"epoch {epoch + 1}: val_loss {measured['val_loss']:.4f}")
    if s.knn is not None and ((epoch + 1) % s.knn.frequency == 0 or last):
        with run.live.phase("knn", "k-NN: encoding the labelled train and test images ..."):
            knn = knn_during_training(run.model, run.state, run.loaders, s.knn)
        run.logger.log_scalars(step, knn, epoch=epoch)
        run.logger.log_line(f"epoch {epoch + 1}: " + ", ".join(f"{n} {v:.3f}" for n, v in knn.items()))
        measured["knn_top1"] = knn.get("knn_top1")
    metric_value = measured.get(run.saver.policy.metric)
    if run.saver.end_of_epoch_due(epoch, metric_value):
        with run.live.phase("checkpoint", f"saving a checkpoint into {run.saver.manager.dir} ..."):
            saved = run.saver.save_end_of_epoch(run.state, epoch, step, metric_value)
        if saved:
            run.logger.log_line(run.saver.saved_line(saved, run.state))


def _check_run_dir(run_dir: Path, resume: str | None) -> None:
    has_checkpoints = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    if has_checkpoints and resume is None:
        raise UserError(f"{run_dir} already holds checkpoints of a run; pass --resume auto to continue it or "
                        f"--output-dir NEW_DIR to start another (nothing was changed)")
