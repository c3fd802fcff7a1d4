"""The canonical configuration schema: one frozen dataclass per section.

Every field is read in exactly one place of the code base. A field's type drives the validation in
`loader.py` (bool, int, float, str, Optional, Literal choices, fixed-length tuples, nested sections,
lists of sections, `named` mappings of registered entries); `field(metadata=...)` adds ranges. Legacy
spellings live in `aliases.py`, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple


def num(default, lo=None, hi=None, *, lo_open=False, hi_open=False):
    """A numeric field with an allowed range: [lo, hi], open at either end when asked."""
    return field(default=default, metadata={"range": (lo, hi, lo_open, hi_open)})


def pair(default, lo=None, hi=None, *, lo_open=False):
    """A (low, high) field: both inside the range and low <= high."""
    return field(default=default, metadata={"range": (lo, hi, lo_open, False), "ordered": True})


def named(options_of: str):
    """A mapping {name: {option: value}} whose names a registry knows: `options_of` ('module:function',
    function(name, where) -> the name's options dataclass, UserError for an unknown name) gives the type each
    entry is checked against, as strictly as a section."""
    return field(default_factory=dict, metadata={"options_of": options_of})


def seq(default, lo=None, hi=None, *, lo_open=False, min_len=1):
    """A variable-length list of numbers inside a range."""
    return field(default=default, metadata={"range": (lo, hi, lo_open, False), "min_len": min_len})


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "hjepa"
    seed: int = num(0, 0, 2 ** 32 - 1)         # NumPy and MLX seeds are 32/64-bit; larger values are refused
    output_dir: str = "runs/hjepa"
    description: str = ""


@dataclass(frozen=True)
class RopeConfig:
    use_rope: bool = False
    theta: float = num(10000.0, 0.0, lo_open=True)
    # With RoPE, whether the encoders still add the absolute sin-cos table to their tokens (true, as before)
    # or see positions only through RoPE's relative rotations (false). The predictor keeps its table: it
    # must know where to predict. false keeps the JEPA targets from being predictable from position alone
    # (README, "Learning on real images"); it needs use_rope.
    absolute_table: bool = True


@dataclass(frozen=True)
class FPNConfig:
    use_fpn: bool = False
    feature_dim: Optional[int] = num(None, 1)   # None: the encoder width
    fusion_method: Literal["add", "concat"] = "add"


@dataclass(frozen=True)
class PredictorConfig:
    embed_dim: int = num(384, 1)               # predictor width (I-JEPA: 384)
    depth: int = num(6, 1)
    num_heads: int = num(6, 1)
    mlp_ratio: float = num(4.0, 0.0, lo_open=True)
    qkv_bias: bool = True
    dropout: float = num(0.0, 0.0, 1.0, hi_open=True)
    # false: I-JEPA's predictor, one sequence [context ; block's mask tokens] per target block. true: one
    # sequence [context ; every block's mask tokens] with a block attention mask - the context is processed
    # once (about half the predictor's tokens), but its tokens no longer attend to the mask tokens, so it is
    # not I-JEPA's computation (models/predictor.py; quality on real images in the README).
    shared_context: bool = False


@dataclass(frozen=True)
class EMAConfig:
    momentum: float = num(0.996, 0.0, 1.0)
    momentum_end: float = num(1.0, 0.0, 1.0)
    # Held at `momentum` for this many epochs, then linear to `momentum_end` at the run's last step (the
    # original H-JEPA's meaning); 0: linear over the whole run (I-JEPA). The target moves on every step.
    momentum_warmup_epochs: int = num(0, 0)


@dataclass(frozen=True)
class ModelConfig:
    encoder_type: str = "vit_tiny_patch16_224"
    embed_dim: Optional[int] = num(None, 1)    # None: the encoder's width; else must match it
    num_hierarchies: int = num(3, 1, 4)
    use_flash_attention: bool = True
    use_layerscale: bool = False
    layerscale_init: float = num(1e-5, 0.0, lo_open=True)
    # gelu: exact erf GELU (ViT, I-JEPA). On the MLX CPU backend erf/exp run ~100x slower than a matmul
    # of the same size, so CPU-sized configs may choose gelu_fast (x*sigmoid(1.702x)) or relu.
    mlp_activation: Literal["gelu", "gelu_fast", "relu"] = "gelu"
    rope: RopeConfig = RopeConfig()
    fpn: FPNConfig = FPNConfig()
    predictor: PredictorConfig = PredictorConfig()
    ema: EMAConfig = EMAConfig()


@dataclass(frozen=True)
class DatasetEntry:
    name: str = ""          # required: an entry without a name is an error, never a silent 'synthetic'
    weight: float = num(1.0, 0.0, lo_open=True)
    path: str = "./data"


@dataclass(frozen=True)
class SyntheticConfig:
    num_train: int = num(2048, 1)
    num_val: int = num(256, 1)
    num_classes: int = num(10, 2)


@dataclass(frozen=True)
class DeiT3Config:
    auto_augment: bool = False
    rand_aug_num_ops: int = num(2, 0)
    rand_aug_magnitude: float = num(9.0, 0.0, 30.0)
    random_erasing_prob: float = num(0.0, 0.0, 1.0)
    mixup_alpha: float = num(0.0, 0.0)
    cutmix_alpha: float = num(0.0, 0.0)


@dataclass(frozen=True)
class TransformsConfig:
    strategy: Literal["default", "deit3"] = "default"
    crop_scale: Tuple[float, float] = pair((0.3, 1.0), 0.0, 1.0, lo_open=True)
    crop_ratio: Tuple[float, float] = pair((0.75, 4.0 / 3.0), 0.0, lo_open=True)
    horizontal_flip: bool = True
    color_jitter: float = num(0.0, 0.0, 1.0)
    # The colour jitter's hue shift, a fraction of a turn drawn from [-hue, hue]. None: color_jitter / 4 for
    # strategy default (torchvision/SimCLR's 0.2 at 0.8), none for deit3. 0.5 makes hue carry nothing from
    # one view to the other (README, "Learning on real images": the quick start's views matched by colour).
    hue: Optional[float] = num(None, 0.0, 0.5)
    deit3: DeiT3Config = DeiT3Config()


@dataclass(frozen=True)
class MultiCropConfig:
    # Multi-crop (SwAV/DINO): besides the two global views, each image gives num_local_crops small crops
    # of local_crop_size px (area fraction local_crop_scale of the image, the other augmentations as the
    # global views). They go unmasked through the context encoder, with sin-cos positions interpolated to
    # the full image's range, and join VICReg's invariance against both global views. 0: off.
    num_local_crops: int = num(0, 0)
    local_crop_size: int = num(16, 1)
    local_crop_scale: Tuple[float, float] = pair((0.05, 0.3), 0.0, 1.0, lo_open=True)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "synthetic"
    data_path: str = "./data"
    use_multi_dataset: bool = False
    datasets: Tuple[DatasetEntry, ...] = ()
    sampling_strategy: Literal["weighted", "balanced", "concat"] = "weighted"
    image_size: int = num(224, 1)
    batch_size: int = num(32, 1)
    num_workers: int = num(2, 0)
    pin_memory: bool = False
    transforms: TransformsConfig = TransformsConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    # Training images held out of each dataset for the validation loss (drawn by experiment.seed; rounded
    # up to a multiple of batch_size). Never trained on, and never the test split evaluation reports on.
    val_holdout: int = num(256, 1)
    # Evaluation view: resize the shorter side to image_size / eval_crop_fraction, centre-crop image_size
    # (0.875: the ImageNet convention; 1.0 keeps the whole image, e.g. CIFAR at its native 32 px).
    eval_crop_fraction: float = num(0.875, 0.0, 1.0, lo_open=True)
    multi_crop: MultiCropConfig = MultiCropConfig()


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = num(10, 1)
    steps_per_epoch: Optional[int] = num(None, 1)   # None: the dataset's length / batch size
    warmup_epochs: float = num(1.0, 0.0)
    optimizer: Literal["adamw"] = "adamw"
    lr: float = num(1.5e-4, 0.0, lo_open=True)
    weight_decay: float = num(0.04, 0.0)
    weight_decay_end: Optional[float] = num(None, 0.0)   # None: constant weight decay
    betas: Tuple[float, float] = field(default=(0.9, 0.95), metadata={"range": (0.0, 1.0, False, True)})
    lr_schedule: Literal["cosine", "linear"] = "cosine"
    min_lr_ratio: float = num(0.01, 0.0, 1.0)
    warmup_lr_ratio: float = num(0.001, 0.0, 1.0)
    clip_grad: Optional[float] = num(3.0, 0.0)           # None or 0: no clipping
    use_amp: bool = False
    accumulation_steps: int = num(1, 1)
    use_gradient_checkpointing: bool = False
    # with use_gradient_checkpointing: 'all' recomputes every block of the context encoder and predictor
    # (the seeds' meaning); 'fit' only as many blocks as the estimated training memory needs to stay under
    # recompute_memory_fraction of the device's memory (hjepa_mlx/recompute.py); the banner says which
    recompute: Literal["all", "fit"] = "all"
    recompute_memory_fraction: float = num(0.6, 0.0, 1.0, lo_open=True)
    # true: the target encoder's forward and the second view's context pass run on a second stream of the
    # device, beside the first view's work (MLX's CPU backend runs most non-matmul ops on one thread per
    # stream, so two streams use both cores). Same ops, same results (tested bit-identical).
    parallel_streams: bool = False
    max_nonfinite_steps: int = num(10, 1)                # consecutive skipped updates before stopping
    stop_on_collapse: bool = False                       # stop (with a checkpoint) when the collapse alarm rises


@dataclass(frozen=True)
class MaskingConfig:
    num_masks: int = num(4, 1, 64)             # I-JEPA: 4; more than 64 blocks is never meaningful
    mask_scale: Tuple[float, float] = pair((0.15, 0.2), 0.0, 1.0, lo_open=True)
    aspect_ratio: Tuple[float, float] = pair((0.75, 1.5), 0.0, lo_open=True)
    num_context_masks: int = num(1, 1, 64)
    context_scale: Tuple[float, float] = pair((0.85, 1.0), 0.0, 1.0, lo_open=True)
    min_keep: int = num(10, 1)


@dataclass(frozen=True)
class VICRegConfig:
    sim_coeff: float = num(25.0, 0.0)
    std_coeff: float = num(25.0, 0.0)
    cov_coeff: float = num(1.0, 0.0)
    # What VICReg acts on (models/projector.py): "layernorm" (affine-free normalised context tokens,
    # pooled - measured best on CIFAR-10, see README), "centered" (the same after subtracting the batch's
    # mean token, so the tokens' shared vector cannot absorb the terms; best on the quick start, see README),
    # "expander" (VICReg's MLP on the pooled tokens; its BatchNorm lets the encoder collapse underneath) or
    # "none" (the pooled tokens after the encoder's affine LayerNorm, whose gain can satisfy the variance
    # hinge without changing the representation).
    projector: Literal["none", "layernorm", "centered", "expander"] = "layernorm"
    expander_dim: int = num(1024, 1)
    # gamma of the variance hinge, relu(gamma - std). VICReg's 1.0 assumes features of free scale (the
    # expander's output); the layernorm projector's pooled tokens have a per-dimension std of at most 1 on
    # average (each token has norm sqrt(D)), so there the hinge at 1.0 can never be met (README).
    std_target: float = num(1.0, 0.0, lo_open=True)


LossType = Literal["smoothl1", "mse", "huber", "combined", "cjepa"]


@dataclass(frozen=True)
class LossConfig:
    type: LossType = "smoothl1"
    jepa_loss_type: Optional[Literal["smoothl1", "mse", "huber"]] = None
    hierarchy_weights: Tuple[float, ...] = seq((1.0, 0.7, 0.5), 0.0)
    normalize_embeddings: bool = False
    jepa_weight: float = num(1.0, 0.0)
    huber_delta: float = num(1.0, 0.0, lo_open=True)
    use_vicreg: Optional[bool] = None          # None: on for type combined/cjepa, off otherwise
    vicreg_weight: float = num(0.1, 0.0)
    vicreg: VICRegConfig = VICRegConfig()
    use_contrastive: bool = False
    contrastive_weight: float = num(0.1, 0.0)
    contrastive_temperature: float = num(0.1, 0.0, lo_open=True)
    use_cosine_similarity: bool = True
    contrastive_on_context: bool = False
    # Loss terms registered from outside the package (hjepa_mlx.losses.registry), by name:
    # {name: {weight: 0.5, <option>: value}}, added as weight * term. The built-ins use the keys above.
    terms: Dict[str, object] = named("hjepa_mlx.losses.registry:term_options")


@dataclass(frozen=True)
class LoggingConfig:
    use_wandb: bool = False
    use_tensorboard: bool = True
    log_frequency: int = num(50, 1)
    log_images: bool = False
    log_attention: bool = False
    log_gradients: bool = False
    log_dataset_distribution: bool = False
    # Pictures on disk (hjepa_mlx/plots.py), viewable without TensorBoard: plots/curves.png (every loss
    # term, lr, momentum, validation, k-NN, RankMe vs step) redrawn every plot_frequency steps and at the
    # end; images/masks_*.png (log_images) and images/attention_*.png (log_attention) every
    # image_frequency steps. 0: never.
    plot_frequency: int = num(500, 0)
    image_frequency: int = num(2000, 0)
    # The collapse alarm (hjepa_mlx/collapse.py): RankMe and per-dimension std of the pooled target
    # features on a fixed probe set of held-out images every collapse_frequency steps (0: off).
    collapse_frequency: int = num(200, 0)
    collapse_probe_images: int = num(512, 1)
    collapse_rank_fraction: float = num(0.1, 0.0, 1.0)     # bad check: RankMe < this * D
    collapse_std_threshold: float = num(0.01, 0.0)         # bad check: mean per-dimension std < this
    collapse_patience: int = num(3, 1)                     # bad checks in a row that raise the alarm


@dataclass(frozen=True)
class CheckpointConfig:
    save_frequency: int = num(1, 1)            # epochs
    # Saves inside an epoch, so a kill loses minutes, not an epoch (0: off). Resume from them is exact.
    save_every_steps: int = num(0, 0, 2 ** 31 - 1)
    save_every_minutes: float = num(10.0, 0.0, 10_000.0)   # minutes of work since the last save
    save_best: bool = True
    metric: Literal["val_loss", "train_loss", "knn_top1"] = "val_loss"
    mode: Literal["min", "max"] = "min"
    keep_last_k: int = num(3, 1)


@dataclass(frozen=True)
class KNNConfig:
    enabled: bool = False
    k_values: Tuple[int, ...] = seq((1, 5, 20), 1)
    metric_k: int = num(20, 1)                 # the k whose accuracy is `knn_top1` (checkpoint.metric); in k_values
    frequency: int = num(1, 1)                 # epochs
    temperature: float = num(0.07, 0.0, lo_open=True)
    max_train_images: int = num(5000, 1)       # bank size: k-NN cost grows with it
    max_val_images: int = num(1000, 1)


@dataclass(frozen=True)
class EvaluationConfig:
    eval_frequency: int = num(1, 1)            # epochs between validation-loss passes
    knn: KNNConfig = KNNConfig()


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel training under `mlx.launch` (hjepa_mlx/distributed.py); one process ignores it."""
    backend: Literal["any", "ring", "mpi", "nccl", "jaccl"] = "any"   # mx.distributed.init; any: what mlx.launch set up
    # VICReg / NT-Xent batch statistics: "global" all-gathers the features of every rank (the same loss
    # as one process with the whole batch), "local" uses each rank's own slice (no gather)
    batch_statistics: Literal["global", "local"] = "global"
    bucket_mb: float = num(64.0, 0.0, lo_open=True)   # gradient all-reduce bucket size (few, large buckets)
    timeout_s: float = num(300.0, 0.0, lo_open=True)  # a rank waiting longer than this for the others stops
    check_every: int = num(0, 0)               # compare a parameter checksum across ranks every N steps (0: at start only)


Device = Literal["auto", "cpu", "gpu", "mps", "cuda"]


@dataclass(frozen=True)
class Config:
    experiment: ExperimentConfig = ExperimentConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    masking: MaskingConfig = MaskingConfig()
    loss: LossConfig = LossConfig()
    logging: LoggingConfig = LoggingConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    distributed: DistributedConfig = DistributedConfig()
    device: Device = "auto"
