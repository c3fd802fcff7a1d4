"""The typed settings of what runs a training and what runs beside it - the loop, online k-NN, the save
policy, the pictures, the live console's schedule - derived from a validated `Config` (like the plan:
the config resolved; build.py turns the config into objects)."""

from __future__ import annotations

from hjepa_mlx.config.plan import Plan
from hjepa_mlx.config.schema import Config


def loop_settings(config: Config, plan: Plan):
    from hjepa_mlx.session import LoopSettings

    lg = config.logging
    ev = config.evaluation
    return LoopSettings(
        epochs=config.training.epochs, steps_per_epoch=plan.steps_per_epoch,
        accumulation_steps=config.training.accumulation_steps, two_views=plan.two_views,
        max_nonfinite_steps=config.training.max_nonfinite_steps, log_frequency=lg.log_frequency,
        eval_frequency=ev.eval_frequency, knn=knn_settings(config) if ev.knn.enabled else None,
        log_dataset_distribution=lg.log_dataset_distribution, log_images=lg.log_images,
        log_attention=lg.log_attention, log_gradients=lg.log_gradients, use_tensorboard=lg.use_tensorboard)


def knn_settings(config: Config):
    from hjepa_mlx.evaluate.online import KnnSettings

    k = config.evaluation.knn
    return KnnSettings(frequency=k.frequency, k_values=tuple(k.k_values), metric_k=k.metric_k,
                       temperature=k.temperature, max_train_images=k.max_train_images,
                       max_val_images=k.max_val_images)


def save_policy(config: Config):
    from hjepa_mlx.checkpoint_policy import SavePolicy

    c = config.checkpoint
    return SavePolicy(save_frequency=c.save_frequency, save_every_steps=c.save_every_steps,
                      save_every_minutes=c.save_every_minutes, save_best=c.save_best, metric=c.metric, mode=c.mode,
                      keep_last_k=c.keep_last_k)


def picture_settings(config: Config, plan: Plan):
    from hjepa_mlx.pictures import PictureSettings

    lg = config.logging
    return PictureSettings(plot_every=lg.plot_frequency, image_every=lg.image_frequency, masks=lg.log_images,
                           attention=lg.log_attention, patch_size=plan.encoder.patch_size,
                           name=config.experiment.name)


def run_schedule(config: Config, plan: Plan):
    """When this config validates, runs k-NN, saves, checks for collapse and draws (see eta.Schedule)."""
    from hjepa_mlx.eta import Schedule

    lg = config.logging
    ev = config.evaluation
    return Schedule(epochs=config.training.epochs, steps_per_epoch=plan.steps_per_epoch,
                    validate_every=ev.eval_frequency, knn_every=ev.knn.frequency if ev.knn.enabled else 0,
                    save_every=config.checkpoint.save_frequency, collapse_every=lg.collapse_frequency,
                    plot_every=lg.plot_frequency,
                    image_every=lg.image_frequency if (lg.log_images or lg.log_attention) else 0)


def run_info(config: Config) -> dict:
    """What run.json tells scripts/monitor.py about the config (hjepa_mlx/live.py)."""
    return {"collapse_patience": config.logging.collapse_patience, "checkpoint_metric": config.checkpoint.metric}
