"""The run plan: what a config will build and how long it runs, computed before anything heavy.

`--dry-run` prints it; the trainer uses the same numbers, so the plan and the run cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hjepa_mlx.config.schema import Config


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    path: str
    weight: float
    split: str
    size: int | None       # None: unknown until the files are read (imagefolder)
    size_is_nominal: bool


@dataclass(frozen=True)
class Plan:
    run_dir: str
    encoder: object        # models.specs.EncoderSpec
    image_size: int
    grid: tuple[int, int]
    datasets: tuple[DatasetPlan, ...]
    images_per_epoch: int | None
    batch_size: int
    accumulation_steps: int
    steps_per_epoch: int | None      # optimizer steps
    total_steps: int | None
    two_views: bool
    loss_terms: tuple[str, ...]
    val_holdout: int = 0             # validation images held out of each dataset's training split
    ema_warmup_steps: int | None = None
    ema: tuple = ()                  # (label, step, 1 - momentum) at the start, end of warm-up, last step
    local_crops: tuple = (0, 0)      # multi-crop: (local crops per image, their size in px)
    predictor: str = ""              # the predictor's shape, one line
    experiment: str = ""             # experiment.name and .description, one line
    world_size: int = 1              # data-parallel processes (mlx.launch); batch_size is split among them
    world: str = ""                  # distributed.World.describe()
    epochs: int = 1                  # training.epochs
    seed: int = 0                    # experiment.seed: initial weights, data order, augmentation, masks


def dataset_plans(config: Config) -> tuple[DatasetPlan, ...]:
    """Each training dataset's split and size: the registry entry's nominal size (the files are not read
    yet), or the exact size of a dataset made in memory, which opens instantly."""
    from hjepa_mlx.build import open_ssl_train, run_dataset_entries
    from hjepa_mlx.data.registry import dataset_entry

    plans = []
    held = holdout_count(config)
    for name, path, weight in run_dataset_entries(config):
        entry = dataset_entry(name)
        if entry.reads_files:
            size, nominal = entry.nominal_train_size, True
        else:
            size, nominal = len(open_ssl_train(config, name, path)), False
        if size is not None:
            size = max(size - held, 0)      # the validation hold-out is not trained on
        plans.append(DatasetPlan(name, path, weight, entry.ssl_train_split, size, nominal))
    return tuple(plans)


def holdout_count(config: Config) -> int:
    """Validation images held out of each dataset's training split: data.val_holdout rounded up to whole
    batches (the validation pass then has fixed shapes and sees every held-out image)."""
    b = config.data.batch_size
    return -(-config.data.val_holdout // b) * b


def loss_lines(losses, num_levels: int) -> tuple[str, ...]:
    """--dry-run's loss lines of a `losses.total.LossSettings`: the prediction loss, then every enabled term
    in the order total_loss adds them (each term describes itself, losses/registry.py)."""
    first = (f"{losses.jepa_weight:g} x {losses.prediction_kind} prediction over {num_levels} level(s), "
             f"weights {list(losses.hierarchy_weights)}")
    return (first,) + tuple(term.line(settings) for term, settings in losses.enabled())


def make_plan(config: Config, *, output_dir: str | None = None,
              dataset_sizes: dict[str, int] | None = None, world=None) -> Plan:
    """`dataset_sizes` (name -> images) replaces nominal sizes once the data has been opened; `world` (a
    distributed.World) the processes that share each batch (the number of steps does not depend on it)."""
    from hjepa_mlx.build import loss_settings
    from hjepa_mlx.models.specs import parse_encoder_name

    spec = parse_encoder_name(config.model.encoder_type)
    losses = loss_settings(config)
    size = config.data.image_size
    grid = (size // spec.patch_size, size // spec.patch_size)
    plans = dataset_plans(config)
    if dataset_sizes:
        plans = tuple(DatasetPlan(p.name, p.path, p.weight, p.split, dataset_sizes.get(p.name, p.size),
                                  p.size_is_nominal and p.name not in dataset_sizes) for p in plans)
    sizes = [p.size for p in plans]
    images = sum(sizes) if all(s is not None for s in sizes) else None
    t = config.training
    per_step = config.data.batch_size * t.accumulation_steps
    if t.steps_per_epoch is not None:
        steps = t.steps_per_epoch
    elif images is not None:
        steps = images // per_step
    else:
        steps = None
    total = steps * t.epochs if steps is not None else None
    return Plan(
        run_dir=str(Path(output_dir or config.experiment.output_dir)),
        encoder=spec, image_size=size, grid=grid, datasets=plans, images_per_epoch=images,
        batch_size=config.data.batch_size, accumulation_steps=t.accumulation_steps,
        steps_per_epoch=steps, total_steps=total, two_views=losses.needs_two_views,
        loss_terms=loss_lines(losses, config.model.num_hierarchies), val_holdout=holdout_count(config),
        ema_warmup_steps=None if steps is None else config.model.ema.momentum_warmup_epochs * steps,
        ema=() if not total else ema_milestones(config, config.model.ema.momentum_warmup_epochs * steps, total),
        local_crops=(config.data.multi_crop.num_local_crops, config.data.multi_crop.local_crop_size),
        predictor=predictor_line(config),
        experiment=" - ".join(x for x in (config.experiment.name, config.experiment.description) if x),
        world_size=1 if world is None else world.size, world="" if world is None else world.describe(),
        epochs=t.epochs, seed=config.experiment.seed)


def predictor_line(config: Config) -> str:
    p = config.model.predictor
    layout = ("one sequence per image, [context ; all blocks' mask tokens] under a block attention mask "
              "(shared_context)" if p.shared_context else "one sequence per target block (I-JEPA)")
    return f"width {p.embed_dim}, depth {p.depth}, heads {p.num_heads}; {layout}"


def ema_milestones(config: Config, warmup_steps: int, total_steps: int) -> tuple:
    """(label, step, 1 - momentum) of the EMA schedule at step 0, the end of its warm-up and the run's last step
    (the rate, because a momentum within 1e-8 of 1 prints as 1.000000)."""
    from hjepa_mlx.schedules import ema_rate_at

    e = config.model.ema
    points = [("start", 0), ("end of warm-up", min(warmup_steps, total_steps - 1)), ("last step", total_steps - 1)]
    return tuple((label, step, float(ema_rate_at(step, start=e.momentum, end=e.momentum_end,
                                                 warmup_steps=warmup_steps, total_steps=total_steps).item()))
                 for label, step in points)


def describe_plan(plan: Plan) -> str:
    e = plan.encoder
    lines = ["# plan"] + ([f"experiment    : {plan.experiment}"] if plan.experiment else []) + [
             f"run directory : {plan.run_dir}",
             f"encoder       : {e.name}: width {e.embed_dim}, depth {e.depth}, heads {e.num_heads}, "
             f"patch {e.patch_size}, image {plan.image_size} -> {plan.grid[0]}x{plan.grid[1]} patches"]
    if plan.predictor:
        lines.append(f"predictor     : {plan.predictor}")
    for d in plan.datasets:
        size = "size known once read" if d.size is None else f"{d.size:,} images" + (
            " (nominal; files not read yet)" if d.size_is_nominal else "")
        lines.append(f"dataset       : {d.name} [{d.split}] at {d.path}, weight {d.weight:g}, {size}")
    eff = plan.batch_size * plan.accumulation_steps
    lines.append(f"batch         : {plan.batch_size} x {plan.accumulation_steps} accumulation = {eff} images per "
                 f"optimizer step, {'two views' if plan.two_views else 'one view'} per image")
    if plan.world:
        n = plan.world_size
        share = (f"; global batch {plan.batch_size} = {n} x {plan.batch_size // n} per process" if n > 1 and
                 plan.batch_size % n == 0 else "")
        lines.append(f"world         : {plan.world}{share}")
    if plan.steps_per_epoch is not None:
        lines.append(f"steps         : {plan.steps_per_epoch:,} per epoch, {plan.total_steps:,} in total")
    else:
        lines.append("steps         : known once the dataset is read")
    count, size = plan.local_crops
    if count:
        g = size // e.patch_size
        lines.append(f"multi-crop    : {count} local crop(s) of {size} px ({g}x{g} patches, unmasked, sin-cos "
                     f"positions resampled to the full grid) per image, in VICReg beside the two global views")
    lines.append(f"validation    : {plan.val_holdout:,} training images held out per dataset (not trained on)")
    if plan.ema:
        lines.append("EMA momentum  : " + ", ".join(f"1 - {r:.3g} at {label} (step {step:,})"
                                                    for label, step, r in plan.ema))
    for i, term in enumerate(plan.loss_terms):
        lines.append(f"{'loss' if i == 0 else '':14}: {'+ ' if i else ''}{term}")
    return "\n".join(lines)
