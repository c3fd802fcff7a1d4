"""Cross-field rules of a `Config`, the keys we refuse, and notes about keys that change nothing.

`check_rules` raises `UserError` for a contradiction and returns one-line notes for keys that belong
to a feature the same file switched off (they are legal but do nothing, and the user is told so).
"""

from __future__ import annotations

from typing import Callable

from hjepa_mlx.config.schema import Config
from hjepa_mlx.errors import UserError
from hjepa_mlx.losses.contrastive import CONTRASTIVE
from hjepa_mlx.losses.vicreg import VICREG

# Keys whose value asks for something this project does not do. Each entry: dotted path, a predicate
# on the value that is refused, and why. (Features still being built are listed here until they land.)
REFUSED: list[tuple[str, Callable[[object], bool], str]] = [
    ("data.pin_memory", lambda v: v is True,
     "has no meaning in MLX: CPU and GPU share unified memory, there is nothing to pin; remove it or set false"),
    ("logging.use_wandb", lambda v: v is True,
     "is not supported (no Weights & Biases integration); metrics go to TensorBoard and metrics.jsonl"),
    ("model.predictor.dropout", lambda v: v > 0,
     "is not implemented: dropout inside the compiled step needs an explicit PRNG key per step; set 0.0"),
    ("data.transforms.deit3.mixup_alpha", lambda v: v > 0,
     "mixup mixes labels, a supervised-only idea with no meaning for self-supervised H-JEPA; set 0"),
    ("data.transforms.deit3.cutmix_alpha", lambda v: v > 0,
     "cutmix mixes labels, a supervised-only idea with no meaning for self-supervised H-JEPA; set 0"),
]

# Sub-keys that only matter when a switch is on: (switch path, predicate "feature is on", sub-key prefixes).
DEPENDENT_KEYS: list[tuple[str, Callable[[Config], bool], tuple[str, ...]]] = [
    ("model.rope.use_rope", lambda c: c.model.rope.use_rope, ("model.rope.theta", "model.rope.absolute_table")),
    ("model.fpn.use_fpn", lambda c: c.model.fpn.use_fpn, ("model.fpn.feature_dim", "model.fpn.fusion_method")),
    ("model.use_layerscale", lambda c: c.model.use_layerscale, ("model.layerscale_init",)),
    ("data.transforms.strategy", lambda c: c.data.transforms.strategy == "deit3", ("data.transforms.deit3",)),
    ("evaluation.knn.enabled", lambda c: c.evaluation.knn.enabled,
     ("evaluation.knn.k_values", "evaluation.knn.frequency", "evaluation.knn.temperature",
      "evaluation.knn.metric_k")),
    ("data.use_multi_dataset", lambda c: not c.data.use_multi_dataset, ("data.data_path",)),
    ("loss.vicreg.projector", lambda c: c.loss.vicreg.projector == "expander", ("loss.vicreg.expander_dim",)),
    ("data.multi_crop.num_local_crops", lambda c: c.data.multi_crop.num_local_crops > 0,
     ("data.multi_crop.local_crop_size", "data.multi_crop.local_crop_scale")),
    ("logging.log_images", lambda c: c.logging.log_images or c.logging.log_attention, ("logging.image_frequency",)),
]

# Loss keys are stricter than DEPENDENT_KEYS: the original project silently dropped VICReg and the run
# collapsed, so a loss term's settings given while the term is off are an error, not a note. The keys are
# the built-in terms' own, declared on their registrations (losses/vicreg.py, losses/contrastive.py).
VICREG_KEYS = VICREG.keys
CONTRASTIVE_KEYS = CONTRASTIVE.keys


def _get(config: Config, path: str):
    node = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def vicreg_enabled(config: Config) -> bool:
    loss = config.loss
    if loss.use_vicreg is not None:
        return loss.use_vicreg
    return loss.type in ("combined", "cjepa")


def prediction_kind(config: Config) -> str:
    loss = config.loss
    return loss.jepa_loss_type or ("smoothl1" if loss.type in ("combined", "cjepa") else loss.type)


def _loss_rules(config: Config, provided: frozenset[str], source: str) -> None:
    loss = config.loss
    if loss.type in ("smoothl1", "mse", "huber") and loss.jepa_loss_type not in (None, loss.type):
        raise UserError(f"{source}: loss.type '{loss.type}' already names the prediction loss but "
                        f"loss.jepa_loss_type says '{loss.jepa_loss_type}'; keep one")
    if loss.type in ("combined", "cjepa") and loss.use_vicreg is False:
        raise UserError(f"{source}: loss.type '{loss.type}' means prediction + VICReg but loss.use_vicreg is "
                        f"false; use loss.type: smoothl1 (or mse/huber) for the prediction loss alone")
    if not vicreg_enabled(config):
        given = [k for k in VICREG_KEYS if k in provided]
        if given:
            raise UserError(f"{source}: {given[0]} is set but VICReg is off (loss.type '{loss.type}', "
                            f"loss.use_vicreg not true); set loss.use_vicreg: true or remove the VICReg keys")
    if not loss.use_contrastive:
        given = [k for k in CONTRASTIVE_KEYS if k in provided]
        if given:
            raise UserError(f"{source}: {given[0]} is set but loss.use_contrastive is false; "
                            f"set loss.use_contrastive: true or remove the contrastive keys")
    if len(loss.hierarchy_weights) != config.model.num_hierarchies:
        raise UserError(f"{source}: loss.hierarchy_weights has {len(loss.hierarchy_weights)} values but "
                        f"model.num_hierarchies is {config.model.num_hierarchies}; give one weight per level")
    if sum(loss.hierarchy_weights) <= 0:
        raise UserError(f"{source}: loss.hierarchy_weights are all zero; at least one level must count")


def _model_rules(config: Config, source: str) -> None:
    from hjepa_mlx.models.specs import parse_encoder_name

    model = config.model
    spec = parse_encoder_name(model.encoder_type)
    if model.embed_dim is not None and model.embed_dim != spec.embed_dim:
        raise UserError(f"{source}: model.embed_dim is {model.embed_dim} but {model.encoder_type} has width "
                        f"{spec.embed_dim}; remove model.embed_dim or make it {spec.embed_dim}")
    size = config.data.image_size
    if size % spec.patch_size:
        raise UserError(f"{source}: data.image_size {size} is not divisible by the patch size {spec.patch_size} "
                        f"of {model.encoder_type}")
    grid = size // spec.patch_size
    if grid < 2 ** (model.num_hierarchies - 1):
        raise UserError(f"{source}: a {grid}x{grid} patch grid is too small for {model.num_hierarchies} "
                        f"hierarchy levels (level l pools 2^l x 2^l patches); lower model.num_hierarchies")
    pred = model.predictor
    if pred.embed_dim % pred.num_heads:
        raise UserError(f"{source}: model.predictor.embed_dim {pred.embed_dim} is not divisible by "
                        f"model.predictor.num_heads {pred.num_heads}")
    if not model.rope.absolute_table and not model.rope.use_rope:
        raise UserError(f"{source}: model.rope.absolute_table false with model.rope.use_rope false leaves the "
                        f"encoder without any position information; set use_rope true or absolute_table true")
    if model.rope.use_rope:
        for name, width, heads in (("encoder", spec.embed_dim, spec.num_heads),
                                   ("predictor", pred.embed_dim, pred.num_heads)):
            if (width // heads) % 4:
                raise UserError(f"{source}: 2-D RoPE needs a head dimension divisible by 4; the {name}'s is "
                                f"{width // heads}")
    _multi_crop_rules(config, spec.patch_size, source)


def _multi_crop_rules(config: Config, patch: int, source: str) -> None:
    crop = config.data.multi_crop
    if crop.num_local_crops == 0:
        return
    size = crop.local_crop_size
    if size % patch or size >= config.data.image_size:
        raise UserError(f"{source}: data.multi_crop.local_crop_size {size} must be a multiple of the patch size "
                        f"{patch} and smaller than data.image_size {config.data.image_size}")
    if not (vicreg_enabled(config) and config.loss.vicreg.sim_coeff > 0):
        raise UserError(f"{source}: data.multi_crop.num_local_crops {crop.num_local_crops} needs VICReg's "
                        f"invariance term (the local crops join it): use loss.type combined/cjepa or "
                        f"loss.use_vicreg true with loss.vicreg.sim_coeff > 0, or set num_local_crops 0")


def _data_rules(config: Config, provided: frozenset[str], source: str) -> None:
    data = config.data
    if data.use_multi_dataset:
        if not data.datasets:
            raise UserError(f"{source}: data.use_multi_dataset is true but data.datasets is empty; "
                            f"list datasets as - {{name: cifar10, weight: 0.5, path: ./data}}")
        names = [d.name for d in data.datasets]
        if "data.dataset" in provided:
            raise UserError(f"{source}: data.dataset is set but data.use_multi_dataset is true, which reads "
                            f"data.datasets; remove data.dataset")
    else:
        if "data.datasets" in provided:
            raise UserError(f"{source}: data.datasets is set but data.use_multi_dataset is false, so it would be "
                            f"ignored; set data.use_multi_dataset: true or remove data.datasets")
        if "data.sampling_strategy" in provided:
            raise UserError(f"{source}: data.sampling_strategy only applies when data.use_multi_dataset is true")
        names = [data.dataset]
    # Asked at validation time, not import time: datasets registered after this module was imported count.
    from hjepa_mlx.data.registry import dataset_names

    known = dataset_names()
    for i, name in enumerate(names):
        if name == "" and data.use_multi_dataset:
            raise UserError(f"{source}: data.datasets[{i}] has no name; add name: (one of {', '.join(known)})")
        if name not in known:
            key = f"data.datasets[{i}].name" if data.use_multi_dataset else "data.dataset"
            raise UserError(f"{source}: {key} '{name}' is not a known dataset; choose one of {', '.join(known)}")


def _training_rules(config: Config, source: str) -> None:
    t = config.training
    if t.warmup_epochs > t.epochs:
        raise UserError(f"{source}: training.warmup_epochs ({t.warmup_epochs}) exceeds training.epochs ({t.epochs})")
    ck = config.checkpoint
    if ck.metric == "train_loss":
        raise UserError(f"{source}: checkpoint.metric 'train_loss' is not computed by the training loop (a "
                        f"running training loss depends on the augmentations and masks drawn, so it cannot rank "
                        f"checkpoints); use val_loss (the held-out loss) or knn_top1")
    wanted = "max" if ck.metric == "knn_top1" else "min"
    if ck.mode != wanted:
        raise UserError(f"{source}: checkpoint.metric '{ck.metric}' is better when it is "
                        f"{'higher' if wanted == 'max' else 'lower'}; set checkpoint.mode: {wanted}")
    knn = config.evaluation.knn
    if knn.enabled and knn.metric_k not in knn.k_values:
        raise UserError(f"{source}: evaluation.knn.metric_k {knn.metric_k} is not one of evaluation.knn.k_values "
                        f"{list(knn.k_values)}; the reported knn_top1 must be a k that is computed")
    if ck.metric == "knn_top1" and not config.evaluation.knn.enabled:
        raise UserError(f"{source}: checkpoint.metric 'knn_top1' needs evaluation.knn.enabled: true")


def _output_rules(config: Config, source: str) -> None:
    check_output_dir(config.experiment.output_dir, f"{source}: experiment.output_dir")


def check_output_dir(path: str, what: str) -> None:
    """A run directory must be a real, specific directory: not empty, not the filesystem root."""
    from pathlib import Path

    if not path.strip():
        raise UserError(f"{what} is empty; name a run directory, e.g. runs/my_run")
    if "\x00" in path:
        raise UserError(f"{what} contains a NUL character")
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:   # undecodable characters, symlink loops
        raise UserError(f"{what} {path!r} is not a usable path ({exc})") from None
    if resolved == Path(resolved.anchor):
        raise UserError(f"{what} is the filesystem root ({path!r}); name a run directory, e.g. runs/my_run")
    if resolved.exists() and not resolved.is_dir():
        raise UserError(f"{what} {path!r} is a file, not a directory; name a run directory")


def check_rules(config: Config, provided: frozenset[str], source: str) -> list[str]:
    for path, refused, why in REFUSED:
        value = _get(config, path)
        if path in provided and refused(value):
            raise UserError(f"{source}: {path}: {value!r} {why}")
    _model_rules(config, source)
    _data_rules(config, provided, source)
    _loss_rules(config, provided, source)
    _training_rules(config, source)
    _output_rules(config, source)
    notes = []
    for switch, is_on, prefixes in DEPENDENT_KEYS:
        if is_on(config):
            continue
        given = sorted(p for p in provided if any(p == x or p.startswith(x + ".") for x in prefixes))
        if given:
            notes.append(f"note: {', '.join(given)} {'has' if len(given) == 1 else 'have'} no effect because "
                         f"{switch} is {_get(config, switch)!r}")
    if ("distributed.batch_statistics" in provided and not vicreg_enabled(config)
            and not config.loss.use_contrastive and not config.loss.terms):
        notes.append("note: distributed.batch_statistics has no effect because no loss term beside the "
                     "prediction is on (VICReg, NT-Xent, loss.terms; the prediction loss is per image)")
    return notes
