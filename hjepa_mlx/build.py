"""From a validated `Config` to the objects a run needs: model, mask plan, data loaders (with their mask
sources), the step's and the collapse alarm's settings, the ETA's cost model.

Outside `hjepa_mlx/config/` (the schema, the plan, and the typed settings of the loop, k-NN, saves and
pictures in config/run_settings.py) this is the one module that reads config keys; the components
themselves take explicit arguments or settings objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from hjepa_mlx.config.rules import prediction_kind, vicreg_enabled
from hjepa_mlx.config.schema import Config
from hjepa_mlx.config.plan import Plan, holdout_count


# ---------------------------------------------------------------- processes and device

def build_world(config: Config):
    """This process's data-parallel world (distributed.*): one process unless started by mlx.launch."""
    from hjepa_mlx.distributed import init_world
    return init_world(config.distributed)


def build_device(config: Config):
    """(the MLX device `device` names, the line that says what was chosen and why)."""
    from hjepa_mlx.config.devices import resolve_device
    device, message = resolve_device(config.device)
    return device, message or f"device: {config.device} -> {device}"


# ---------------------------------------------------------------- model

def build_model(config: Config, plan: Plan, *, quiet: bool = False, world=None):
    """world: a `distributed.World`; with several ranks and distributed.batch_statistics 'global', the loss
    terms (VICReg, NT-Xent, loss.terms) see the features of every rank (distributed.gather_rows)."""
    from hjepa_mlx.models.hierarchy import FPN
    from hjepa_mlx.models.hjepa import HJEPAModel
    from hjepa_mlx.models.precision import compute_dtype
    from hjepa_mlx.models.predictor import Predictor
    from hjepa_mlx.models.projector import Expander
    from hjepa_mlx.models.specs import encoder_family

    m = config.model
    spec = plan.encoder
    mx.random.seed(config.experiment.seed)   # initial weights are a function of the seed
    recompute_encoder, recompute_predictor, message = recompute_choice(config, plan)
    if message and not quiet:
        print(message)
    common = dict(use_fused_attention=m.use_flash_attention, use_layerscale=m.use_layerscale,
                  layerscale_init=m.layerscale_init, use_rope=m.rope.use_rope, rope_theta=m.rope.theta,
                  activation=m.mlp_activation)

    def encoder(use_checkpoint):
        return encoder_family(spec).build(**encoder_kwargs(config, plan), use_checkpoint=use_checkpoint)

    p = m.predictor
    predictor = Predictor(grid=plan.grid, encoder_dim=spec.embed_dim, predictor_dim=p.embed_dim, depth=p.depth,
                          num_heads=p.num_heads, mlp_ratio=p.mlp_ratio, qkv_bias=p.qkv_bias, dropout=p.dropout,
                          use_checkpoint=recompute_predictor, shared_context=p.shared_context, **common)
    fpn = None
    if m.fpn.use_fpn:
        fpn = FPN(num_levels=m.num_hierarchies, in_dim=spec.embed_dim, feature_dim=m.fpn.feature_dim,
                  fusion=m.fpn.fusion_method)
    expander = None
    vicreg = config.loss.vicreg
    if vicreg_enabled(config) and vicreg.projector == "expander":
        expander = Expander(spec.embed_dim, vicreg.expander_dim)
    dtype, message = compute_dtype(config.training.use_amp, mx.default_device())
    if message and not quiet:
        print(message)
    side_stream = mx.new_stream(mx.default_device()) if config.training.parallel_streams else None
    from hjepa_mlx.distributed import gather_rows, global_row_mean

    losses = loss_settings(config)
    batch_statistics = bool(losses.terms)     # every loss term beside the prediction reads batch features
    stats_world = world if batch_statistics else None
    return HJEPAModel(encoder=encoder(recompute_encoder), target_encoder=encoder(False), predictor=predictor,
                      fpn=fpn, grid=plan.grid, num_levels=m.num_hierarchies,
                      normalize_embeddings=config.loss.normalize_embeddings,
                      loss_settings=losses, two_views=plan.two_views, compute_dtype=dtype,
                      vicreg_projector=vicreg.projector, expander=expander, side_stream=side_stream,
                      feature_gather=gather_rows(stats_world) if stats_world is not None else None,
                      feature_mean=global_row_mean(stats_world) if stats_world is not None else None)


def encoder_kwargs(config: Config, plan: Plan) -> dict:
    """The arguments of this config's (context and target) encoder module (its family's `build`, models/specs.py;
    `ViTEncoder` for the built-in ViT names), except use_checkpoint: plain JSON-able values, so an exported
    encoder can carry them and be rebuilt without the config."""
    m = config.model
    spec = plan.encoder
    return dict(patch_size=spec.patch_size, image_size=plan.image_size, embed_dim=spec.embed_dim,
                depth=spec.depth, num_heads=spec.num_heads, mlp_ratio=4.0, qkv_bias=True,
                use_fused_attention=m.use_flash_attention, use_layerscale=m.use_layerscale,
                layerscale_init=m.layerscale_init, use_rope=m.rope.use_rope, rope_theta=m.rope.theta,
                absolute_positions=m.rope.absolute_table, activation=m.mlp_activation)


def loss_settings(config: Config):
    """The loss: the prediction settings and the enabled terms - the built-ins from the seed configs' keys
    (VICReg: loss.type / use_vicreg, vicreg_weight, vicreg.*; NT-Xent: loss.use_contrastive, contrastive_*,
    use_cosine_similarity), then the registered terms of loss.terms (already checked by the loader)."""
    from hjepa_mlx.losses.contrastive import NTXentSettings
    from hjepa_mlx.losses.total import LossSettings
    from hjepa_mlx.losses.vicreg import VICRegSettings

    loss = config.loss
    terms = []
    if vicreg_enabled(config):
        v = loss.vicreg
        terms.append(("vicreg", VICRegSettings(
            weight=loss.vicreg_weight, sim_coeff=v.sim_coeff, std_coeff=v.std_coeff, cov_coeff=v.cov_coeff,
            std_target=v.std_target, projector=v.projector, expander_dim=v.expander_dim)))
    if loss.use_contrastive:
        terms.append(("contrastive", NTXentSettings(
            weight=loss.contrastive_weight, temperature=loss.contrastive_temperature,
            use_cosine=loss.use_cosine_similarity, on_context=loss.contrastive_on_context)))
    return LossSettings(
        prediction_kind=prediction_kind(config), hierarchy_weights=tuple(loss.hierarchy_weights),
        huber_delta=loss.huber_delta, jepa_weight=loss.jepa_weight, terms=tuple(terms) + tuple(loss.terms.items()))


# ---------------------------------------------------------------- masks

def build_mask_plan(config: Config, plan: Plan, *, quiet: bool = False):
    from hjepa_mlx.masks import plan_masks

    k = config.masking
    return plan_masks(plan.grid[0], plan.grid[1], num_masks=k.num_masks, mask_scale=k.mask_scale,
                      aspect_ratio=k.aspect_ratio, num_context_masks=k.num_context_masks,
                      context_scale=k.context_scale, min_keep=k.min_keep, num_levels=config.model.num_hierarchies,
                      quiet=quiet)


# ---------------------------------------------------------------- recomputation

def device_memory_bytes() -> float | None:
    """The default device's memory: the GPU's as MLX reports it, else this machine's physical memory."""
    from hjepa_mlx.estimate import machine_memory_bytes
    memory = mx.device_info().get("memory_size")     # reported for GPUs; the CPU's info has none
    return float(memory) if memory else machine_memory_bytes()


def recompute_choice(config: Config, plan: Plan):
    """(context encoder's, predictor's use_checkpoint, one line or None): False without
    training.use_gradient_checkpointing; True (every block) for training.recompute 'all'; for 'fit' the
    number of leading blocks recompute.choose_recomputed picks under the memory limit."""
    from hjepa_mlx import recompute

    t = config.training
    if not t.use_gradient_checkpointing:
        return False, False, None
    spec, p = plan.encoder, config.model.predictor
    masks = build_mask_plan(config, plan, quiet=True)
    micro = max(plan.batch_size // max(plan.world_size, 1), 1)
    nc, m, k = masks.num_context, config.masking.num_masks, masks.num_target
    sequences, tokens = (micro, nc + m * k) if p.shared_context else (micro * m, nc + k)
    hidden = int(spec.embed_dim * encoder_kwargs(config, plan)["mlp_ratio"])
    from hjepa_mlx import kernels
    maps = not kernels.attention_applies(mx.zeros((1,)))   # float32 activations on this device
    stacks = [recompute.Stack("encoder", spec.depth, micro * (2 if plan.two_views else 1), nc, spec.embed_dim,
                              hidden, spec.num_heads, maps),
              recompute.Stack("predictor", p.depth, sequences, tokens, p.embed_dim, int(p.embed_dim * p.mlp_ratio),
                              p.num_heads, maps)]
    fixed = recompute.parameter_bytes(stacks)
    if t.recompute == "all":
        chosen, limit = {s.name: s.depth for s in stacks}, None
    else:
        memory = device_memory_bytes()
        limit = None if memory is None else memory * t.recompute_memory_fraction
        chosen = ({s.name: s.depth for s in stacks} if limit is None
                  else recompute.choose_recomputed(stacks, limit, fixed))
    line = recompute.describe(stacks, chosen, t.recompute, fixed, limit)
    return chosen["encoder"], chosen["predictor"], line


# ---------------------------------------------------------------- schedules

def step_settings(config: Config, plan: Plan):
    from hjepa_mlx.step import StepSettings

    t = config.training
    per_epoch = plan.steps_per_epoch
    return StepSettings(
        total_steps=plan.total_steps, warmup_steps=int(round(t.warmup_epochs * per_epoch)), base_lr=t.lr,
        warmup_lr_ratio=t.warmup_lr_ratio, min_lr_ratio=t.min_lr_ratio, lr_schedule=t.lr_schedule,
        weight_decay=t.weight_decay, weight_decay_end=t.weight_decay_end, betas=tuple(t.betas),
        clip_grad=t.clip_grad, accumulation_steps=t.accumulation_steps,
        ema_start=config.model.ema.momentum, ema_end=config.model.ema.momentum_end,
        ema_warmup_steps=plan.ema_warmup_steps, optimizer=t.optimizer)


def collapse_settings(config: Config):
    from hjepa_mlx.collapse import CollapseSettings

    lg = config.logging
    return CollapseSettings(frequency=lg.collapse_frequency, probe_images=lg.collapse_probe_images,
                            rank_fraction=lg.collapse_rank_fraction, std_threshold=lg.collapse_std_threshold,
                            patience=lg.collapse_patience, stop=config.training.stop_on_collapse)


# ---------------------------------------------------------------- data

@dataclass
class Loaders:
    train: object          # BatchLoader over the (multi-)dataset, one or two views
    val: object            # BatchLoader over held-out images, same views, no shuffling randomness needed
    knn_train: list        # [(name, BatchLoader)] labelled train splits, eval transform
    knn_val: list          # [(name, BatchLoader)] labelled test splits, eval transform
    probe: object = None   # BatchLoader over the held-out images, eval transform (the collapse alarm's probe set)


def transform_spec(config: Config):
    from hjepa_mlx.data.transforms import TransformSpec

    t = config.data.transforms
    return TransformSpec(strategy=t.strategy, crop_scale=tuple(t.crop_scale), crop_ratio=tuple(t.crop_ratio),
                         horizontal_flip=t.horizontal_flip, color_jitter=t.color_jitter, hue=t.hue,
                         auto_augment=t.deit3.auto_augment, rand_aug_num_ops=t.deit3.rand_aug_num_ops,
                         rand_aug_magnitude=t.deit3.rand_aug_magnitude,
                         random_erasing_prob=t.deit3.random_erasing_prob)


def run_dataset_entries(config: Config) -> list[tuple[str, str, float]]:
    """(name, path, weight) of every dataset the run trains on: data.datasets, or data.dataset alone."""
    d = config.data
    if d.use_multi_dataset:
        return [(e.name, e.path, e.weight) for e in d.datasets]
    return [(d.dataset, d.data_path, 1.0)]


def open_dataset(config: Config, name: str, root: str, split: str):
    """The registered dataset `name` at `root`, split `split` exactly as asked (training reads the entry's
    ssl_train_split, the probes its labelled_train_split and 'val')."""
    from hjepa_mlx.data.registry import build_dataset

    # The synthetic dataset is the one configured by a section of its own (data.synthetic), and this module
    # is the one reader of config keys, so its options are made here; a registered dataset takes none.
    if name != "synthetic":
        return build_dataset(name, root, split)
    s = config.data.synthetic
    train = split == "train"
    return build_dataset(name, root, split, num_images=s.num_train if train else s.num_val,
                         num_classes=s.num_classes, image_size=config.data.image_size,
                         seed=config.experiment.seed + (0 if train else 1))


def open_ssl_train(config: Config, name: str, root: str):
    """The split self-supervised training reads (the entry's ssl_train_split)."""
    from hjepa_mlx.data.registry import dataset_entry

    return open_dataset(config, name, root, dataset_entry(name).ssl_train_split)


def open_labelled_train(config: Config, name: str, root: str, ssl_train=None):
    """The labelled split k-NN and probes train on; `ssl_train` (the opened training split) is reused when
    it is the same split, so large files are read once."""
    from hjepa_mlx.data.registry import dataset_entry

    entry = dataset_entry(name)
    if ssl_train is not None and entry.labelled_train_split == entry.ssl_train_split:
        return ssl_train
    return open_dataset(config, name, root, entry.labelled_train_split)


def build_loaders(config: Config, plan: Plan, world=None) -> Loaders:
    """world: a `distributed.World`; the training and validation loaders then give this rank its share
    (data.batch_size / N images per batch, positions rank, rank + N, ...). The probe and k-NN loaders are
    not split: every rank computes the same numbers."""
    from hjepa_mlx.data.holdout import split_holdout
    from hjepa_mlx.data.loader import BatchLoader
    from hjepa_mlx.data.multi import MultiDataset
    from hjepa_mlx.data.transforms import make_eval_transform, make_train_transform

    d = config.data
    seed = config.experiment.seed
    entries = run_dataset_entries(config)
    full_train = [open_ssl_train(config, n, p) for n, p, _ in entries]
    # Validation: images held out of each training split (every dataset represented), never the test split.
    splits = [split_holdout(ds, holdout_count(config), seed) for ds in full_train]
    train_sets, val_sets = [t for t, _ in splits], [v for _, v in splits]
    views = 2 if plan.two_views else 1
    train_tf = make_train_transform(transform_spec(config), d.image_size)
    eval_tf = make_eval_transform(d.image_size, d.eval_crop_fraction)
    if len(train_sets) > 1:
        train = MultiDataset(train_sets, [w for _, _, w in entries], d.sampling_strategy)
        val = MultiDataset(val_sets, [w for _, _, w in entries], "concat")
    else:
        train, val = train_sets[0], val_sets[0]
    need = d.batch_size * config.training.accumulation_steps
    if len(train) < need:
        raise _too_small(train, need)
    from hjepa_mlx.distributed import SINGLE, per_rank_batch

    world = world or SINGLE
    shard = dict(rank=world.rank, world_size=world.size)
    local = per_rank_batch(world, d.batch_size)
    crops = dict(local_transform=local_crop_transform(config), num_local=d.multi_crop.num_local_crops)
    loaders = Loaders(
        train=BatchLoader(train, local, train_tf, views=views, seed=seed, num_workers=d.num_workers, **shard,
                          **crops),
        val=BatchLoader(val, local, eval_tf if views == 1 else train_tf, views=views, seed=seed + 1,
                        num_workers=d.num_workers, shuffle=False, **shard, **crops),
        knn_train=[], knn_val=[],
        probe=BatchLoader(val, d.batch_size, eval_tf, seed=seed, num_workers=d.num_workers, shuffle=False))
    if config.evaluation.knn.enabled:
        for (name, path, _), tr in zip(entries, full_train):
            labelled_train = open_labelled_train(config, name, path, ssl_train=tr)
            test = open_dataset(config, name, path, "val")
            # evaluation sees every image: keep the last partial batch (one extra trace of the encoder)
            loaders.knn_train.append((name, BatchLoader(labelled_train, d.batch_size, eval_tf, seed=seed, drop_last=False,
                                                        num_workers=d.num_workers, shuffle=False)))
            loaders.knn_val.append((name, BatchLoader(test, d.batch_size, eval_tf, seed=seed, drop_last=False,
                                                      num_workers=d.num_workers, shuffle=False)))
    return loaders


def local_crop_transform(config: Config):
    """Multi-crop's local-crop transform (the training transform at local_crop_size and local_crop_scale),
    or None when data.multi_crop.num_local_crops is 0."""
    from dataclasses import replace

    from hjepa_mlx.data.transforms import make_train_transform

    crop = config.data.multi_crop
    if crop.num_local_crops == 0:
        return None
    return make_train_transform(replace(transform_spec(config), crop_scale=tuple(crop.local_crop_scale)),
                                crop.local_crop_size)


def _too_small(dataset, need):
    from hjepa_mlx.errors import UserError
    return UserError(f"the training set has {len(dataset)} images, fewer than one optimizer step needs "
                     f"({need} = data.batch_size x training.accumulation_steps)")


def train_dataset_sizes(loaders: Loaders) -> dict[str, int]:
    ds = loaders.train.dataset
    parts = getattr(ds, "datasets", [ds])
    return {p.name: len(p) for p in parts}



def attach_masks(loaders: Loaders, config: Config, plan: Plan, mask_plan, world=None) -> Loaders:
    """Give the training and validation loaders their mask sources, so masks are drawn in the loaders'
    workers with the images. Training batch b of epoch e gets micro-batch number e * steps_per_epoch * k + b
    (the step's counter: resume needs no replay); validation batch i gets number i with seed + 1, fixed
    whatever the step, so validation losses at different steps are comparable."""
    from hjepa_mlx.distributed import SINGLE
    from hjepa_mlx.masks import MaskSource

    world = world or SINGLE
    seed, shard = config.experiment.seed, dict(rank=world.rank, world_size=world.size)
    loaders.train.masks = MaskSource(mask_plan, config.data.batch_size, seed,
                                     plan.steps_per_epoch * plan.accumulation_steps, **shard)
    loaders.val.masks = MaskSource(mask_plan, config.data.batch_size, seed + 1, 0, **shard)
    return loaders


# ---------------------------------------------------------------- the ETA's cost model

def target_view_count(config: Config) -> int:
    """Target-encoder forwards per image: 2 when a loss term reads view 2's target features (the model
    computes what the enabled terms ask for: LossSettings.extra_features), else 1."""
    return 2 if "target_pooled_2" in loss_settings(config).extra_features else 1


def activity_costs(config: Config, plan: Plan, mask_plan, loaders: Loaders, probe_images: int) -> dict:
    """eta.forward_costs for this run: each activity's images x forward FLOPs over a train step's FLOPs."""
    from hjepa_mlx.eta import forward_costs
    from hjepa_mlx.flops import train_flops_per_image, vit_forward_flops

    spec, grid = plan.encoder, plan.grid[0] * plan.grid[1]
    views = 2 if plan.two_views else 1
    target_views = target_view_count(config)
    train = train_flops_per_image(
        grid_tokens=grid, patch_size=spec.patch_size, encoder_width=spec.embed_dim, encoder_depth=spec.depth,
        predictor_width=config.model.predictor.embed_dim, predictor_depth=config.model.predictor.depth,
        context_tokens=mask_plan.num_context, num_blocks=config.masking.num_masks, block_tokens=mask_plan.num_target,
        views=views, target_views=target_views)
    target = 2 * grid * spec.patch_size ** 2 * 3 * spec.embed_dim + vit_forward_flops(grid, spec.embed_dim, spec.depth)
    evaluation = target * target_views + (train - target * target_views) / 3    # trained paths: forward = 1/3
    knn = config.evaluation.knn
    knn_images = sum(min(len(tr.dataset), knn.max_train_images) + min(len(te.dataset), knn.max_val_images)
                     for (_, tr), (_, te) in zip(loaders.knn_train, loaders.knn_val))
    return forward_costs(images_per_step=plan.batch_size * plan.accumulation_steps, train_flops=train,
                         target_forward_flops=target, eval_forward_flops=evaluation,
                         validation_images=len(loaders.val.dataset), knn_images=knn_images,
                         probe_images=probe_images)


def labelled_loaders(config: Config, name: str | None, data_path: str | None, batch_size: int):
    """[(name, train loader, test loader)]: labelled splits (evaluation transform, fixed order) of dataset
    `name`, or of every dataset of the run when None, for evaluating an encoder (scripts/evaluate.py)."""
    from hjepa_mlx.data.loader import BatchLoader
    from hjepa_mlx.data.transforms import make_eval_transform
    from hjepa_mlx.errors import UserError

    known = {n: path for n, path, _ in run_dataset_entries(config)}
    names = [name] if name else list(known)
    out = []
    tf = make_eval_transform(config.data.image_size, config.data.eval_crop_fraction)
    for n in names:
        root = data_path or known.get(n, config.data.data_path)
        train = open_labelled_train(config, n, root)
        test = open_dataset(config, n, root, "val")
        if not getattr(train, "labelled", True):
            raise UserError(f"{n}: the training split has no labels; k-NN and linear probes need labelled data")
        out.append((n, BatchLoader(train, min(batch_size, len(train)), tf, shuffle=False, drop_last=False),
                    BatchLoader(test, min(batch_size, len(test)), tf, shuffle=False, drop_last=False)))
    return out
