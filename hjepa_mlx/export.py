"""Encoder files: one encoder's weights read out of a training checkpoint or an export, and written as an
encoder-only `.safetensors` in the project's own layout (`mlx`) or in timm's (`timm`).

Sources `read_encoder_weights` understands, told apart by what the file says about itself:
  a run directory (or its checkpoints/)   its latest checkpoint
  a training checkpoint                   `target.*` (the EMA encoder, as I-JEPA evaluates) or
                                          `params.encoder.*` (the context encoder); the architecture
                                          comes from the config saved with it
  an `mlx` export                         metadata `format: hjepa-mlx-encoder`
  a `timm` export                         metadata `format: timm`

Both exports carry, as string metadata, `encoder_config` (JSON: the `ViTEncoder` arguments, see
`hjepa_mlx.build.encoder_kwargs`), `encoder` (target or context), `step`, `source` and the input
normalisation (`mean`, `std`: images are (x / 255 - mean) / std, as `hjepa_mlx.data.transforms`).

The timm layout is timm's `VisionTransformer` state dict with no class token and average pooling, as timm
ships I-JEPA (`vit_huge_patch14_gap_224.in1k_ijepa`): our parameter names already are timm's; the patch
convolution becomes OIHW (MLX stores OHWI), and `pos_embed` (1, N, D) holds the fixed 2-D sin-cos table
(a constant here, a parameter there). The metadata adds `timm_architecture`, `timm_kwargs` and
`timm_pretrained_cfg` (JSON), the arguments `timm.create_model` needs (see `timm_snippet`).
What timm's ViT cannot represent (2-D RoPE) is refused with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from hjepa_mlx.errors import UserError

MLX_FORMAT = "hjepa-mlx-encoder"
TIMM_FORMAT = "timm"
FORMATS = ("timm", "mlx")
ENCODERS = ("target", "context")
CHECKPOINT_PREFIX = {"target": "target.", "context": "params.encoder."}
PATCH_WEIGHT = "patch_embed.proj.weight"
POS_EMBED = "pos_embed"
POS_EMBED_TOLERANCE = 1e-6

# our MLP activation -> the name timm's `get_act_layer` resolves (timm's 'gelu' is exact erf GELU;
# 'quick_gelu' is x * sigmoid(1.702 x), which is what MLX's gelu_fast_approx computes)
TIMM_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_fast": "quick_gelu"}
TIMM_SIZE_NAMES = {192: "tiny", 384: "small", 768: "base", 1024: "large"}
EVAL_CROP_PCT = 0.875            # make_eval_transform's default crop_fraction
EVAL_INTERPOLATION = "bilinear"  # make_eval_transform resizes with Pillow's bilinear filter


@dataclass(frozen=True)
class EncoderWeights:
    """params: flat `ViTEncoder` parameter names -> arrays in MLX layouts (`blocks.0.attn.qkv.weight`).
    config: the `ViTEncoder` arguments (JSON-able). info: encoder (target|context), step, source."""
    params: dict
    config: dict
    info: dict


# ------------------------------------------------------------------ reading

def find_checkpoint(where: Path) -> Path:
    """The checkpoint file a run directory, checkpoints directory or file stands for (UserError if none)."""
    from hjepa_mlx.checkpoint import CheckpointManager

    if where.is_dir():
        from hjepa_mlx.checkpoint_series import current_series
        ckdir = current_series(where) if (where / "checkpoints").is_dir() else where   # newest fork
        latest = CheckpointManager(ckdir)._latest_or_newest()
        if latest is None:
            raise UserError(f"no checkpoint in {where} (no checkpoints/latest and no step_*.safetensors); "
                            f"train first, or pass a checkpoint or exported .safetensors file")
        return latest
    if not where.is_file():
        raise UserError(f"{where} does not exist; pass a run directory, a checkpoint or an exported "
                        f".safetensors file")
    return where


def _load_file(path: Path) -> tuple[dict, dict]:
    try:
        arrays, metadata = mx.load(str(path), format="safetensors", return_metadata=True)
    except Exception as exc:  # mlx raises RuntimeError/ValueError for truncated or foreign files
        raise UserError(f"{path} is not a readable .safetensors file ({exc}); it may be truncated or "
                        f"corrupt") from None
    return arrays, metadata


def read_encoder_weights(source: str | Path, encoder: str | None = None) -> EncoderWeights:
    """One encoder's weights from a run directory, checkpoint or export (see the module docstring).

    encoder: 'target' or 'context' for a checkpoint (None: target); for an export None or the encoder it
    holds. Arrays are read (evaluated) here, so a truncated file fails here with a UserError.
    """
    if encoder is not None and encoder not in ENCODERS:
        raise UserError(f"encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
    path = find_checkpoint(Path(source))
    arrays, metadata = _load_file(path)
    kind = metadata.get("format")
    if kind in (MLX_FORMAT, TIMM_FORMAT):
        held = metadata.get("encoder", "target")
        if encoder is not None and encoder != held:
            raise UserError(f"{path} is an export of the {held} encoder only; export the {encoder} encoder "
                            f"from the run's checkpoint with scripts/export.py --encoder {encoder}")
        config = _json_field(path, metadata, "encoder_config")
        params = arrays if kind == MLX_FORMAT else from_timm(arrays, config, path)
        info = {"encoder": held, "step": metadata.get("step"), "source": metadata.get("source", str(path))}
    else:
        params, config, info = _from_checkpoint(path, arrays, metadata, encoder or "target")
    try:
        mx.eval(params)
    except Exception as exc:
        raise UserError(f"{path} is unreadable ({exc}); it may be truncated or corrupt") from None
    return EncoderWeights(params=params, config=config, info=info)


def _json_field(path: Path, metadata: dict, key: str):
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: its '{key}' metadata is missing or corrupt ({exc}); export the encoder "
                        f"again with scripts/export.py") from None


def _from_checkpoint(path: Path, arrays: dict, metadata: dict, encoder: str):
    from hjepa_mlx.build import encoder_kwargs
    from hjepa_mlx.checkpoint import EMBEDDED_KEY, _read_metadata
    from hjepa_mlx.config import load_config
    from hjepa_mlx.config.plan import make_plan

    prefix = CHECKPOINT_PREFIX[encoder]
    params = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    if not params or (EMBEDDED_KEY not in metadata and not path.with_suffix(".json").is_file()):
        raise UserError(f"{path} is neither a training checkpoint of this project (no '{prefix}*' arrays "
                        f"and metadata) nor an encoder export of scripts/export.py")
    meta = _read_metadata(path, metadata)
    if not isinstance(meta.get("config"), dict):
        raise UserError(f"{path}: its metadata holds no training config, so the encoder's architecture is "
                        f"unknown; pass a checkpoint written by scripts/train.py")
    config = load_config(None, raw=meta["config"], resolved=True).config
    kwargs = encoder_kwargs(config, make_plan(config))
    return params, kwargs, {"encoder": encoder, "step": meta.get("step"), "source": str(path)}


# ------------------------------------------------------------------ timm layout

def timm_arguments(config: dict) -> tuple[str, dict]:
    """(architecture name, `timm.create_model` kwargs) of timm's `VisionTransformer` equal to the
    `ViTEncoder` built from `config`; UserError for what timm's ViT cannot represent."""
    if config["use_rope"]:
        raise UserError("timm's VisionTransformer has no 2-D RoPE (its absolute position table cannot "
                        "stand in for rotations of q and k), so an encoder trained with model.rope.use_rope "
                        "cannot be exported for timm; use --format mlx")
    if config["activation"] not in TIMM_ACTIVATIONS:
        raise UserError(f"MLP activation {config['activation']!r} has no timm equivalent; use --format mlx")
    size = TIMM_SIZE_NAMES.get(config["embed_dim"], "base")
    kwargs = dict(img_size=config["image_size"], patch_size=config["patch_size"], embed_dim=config["embed_dim"],
                  depth=config["depth"], num_heads=config["num_heads"], mlp_ratio=config["mlp_ratio"],
                  qkv_bias=config["qkv_bias"], class_token=False, no_embed_class=True, global_pool="avg",
                  fc_norm=False, num_classes=0, act_layer=TIMM_ACTIVATIONS[config["activation"]])
    if config["use_layerscale"]:
        kwargs["init_values"] = config["layerscale_init"]
    # Every architecture argument is passed explicitly; the name only picks timm's entry point.
    return f"vit_{size}_patch16_224", kwargs


def timm_pretrained_cfg(config: dict, mean, std) -> dict:
    """The `pretrained_cfg_overlay` entries (besides `file`) that make timm's data config match ours."""
    size = config["image_size"]
    return dict(num_classes=0, input_size=[3, size, size], mean=list(mean), std=list(std),
                crop_pct=EVAL_CROP_PCT, interpolation=EVAL_INTERPOLATION)


def sincos_table(config: dict) -> np.ndarray:
    """The fixed position table (1, N, D) float32 that `ViTEncoder` adds to the patch tokens."""
    from hjepa_mlx.models.posemb import sincos_2d_numpy

    grid = config["image_size"] // config["patch_size"]
    return sincos_2d_numpy(config["embed_dim"], grid, grid).astype(np.float32)[None]


def to_timm(params: dict, config: dict) -> dict:
    """MLX encoder parameters -> timm state dict arrays (patch conv OHWI -> OIHW, + pos_embed)."""
    timm_arguments(config)   # refuse what timm cannot represent before converting anything
    out = dict(params)
    out[PATCH_WEIGHT] = params[PATCH_WEIGHT].transpose(0, 3, 1, 2)
    out[POS_EMBED] = mx.array(sincos_table(config))
    return out


def from_timm(arrays: dict, config: dict, path: Path) -> dict:
    """timm state dict arrays -> MLX encoder parameters. UserError unless `pos_embed` is still our fixed
    sin-cos table (a table learned or changed in timm has no place in `ViTEncoder`)."""
    if POS_EMBED not in arrays or PATCH_WEIGHT not in arrays:
        raise UserError(f"{path} lacks '{POS_EMBED}' or '{PATCH_WEIGHT}'; it is not a timm export of "
                        f"scripts/export.py")
    table = sincos_table(config)
    pos = np.array(arrays[POS_EMBED])
    if pos.shape != table.shape or np.abs(pos - table).max() > POS_EMBED_TOLERANCE:
        raise UserError(f"{path}: pos_embed is not the fixed 2-D sin-cos table of a {config['image_size']} px "
                        f"encoder, which this project's ViT uses; a changed table cannot be loaded here")
    params = {k: v for k, v in arrays.items() if k != POS_EMBED}
    params[PATCH_WEIGHT] = arrays[PATCH_WEIGHT].transpose(0, 2, 3, 1)
    return params


def timm_snippet(path: str | Path, architecture: str, kwargs: dict, pretrained_cfg: dict) -> str:
    """Python that builds the exported encoder in timm (CPU, no download)."""
    overlay = ", ".join([f"file={str(path)!r}"] + [f"{k}={v!r}" for k, v in pretrained_cfg.items()])
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return (f"import timm\n"
            f"model = timm.create_model({architecture!r}, pretrained=True,\n"
            f"    pretrained_cfg_overlay=dict({overlay}),\n"
            f"    {args})")


# ------------------------------------------------------------------ writing

def export_encoder(weights: EncoderWeights, out: str | Path, fmt: str) -> Path:
    """Write `weights` as an encoder-only .safetensors in format `fmt` ('timm' or 'mlx'), atomically.
    Returns the path written."""
    from hjepa_mlx.checkpoint import _atomic_write
    from hjepa_mlx.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; pass a file name such as {out / 'encoder.safetensors'}")
    metadata = {"format": MLX_FORMAT if fmt == "mlx" else TIMM_FORMAT, "format_version": "1",
                "encoder": str(weights.info["encoder"]), "step": str(weights.info.get("step")),
                "source": str(weights.info.get("source")), "encoder_config": json.dumps(weights.config),
                "mean": json.dumps(list(IMAGENET_MEAN)), "std": json.dumps(list(IMAGENET_STD))}
    if fmt == "mlx":
        arrays = dict(weights.params)
    else:
        architecture, kwargs = timm_arguments(weights.config)
        arrays = to_timm(weights.params, weights.config)
        metadata.update(timm_architecture=architecture, timm_kwargs=json.dumps(kwargs),
                        timm_pretrained_cfg=json.dumps(timm_pretrained_cfg(weights.config, IMAGENET_MEAN,
                                                                           IMAGENET_STD)))
    arrays = {k: mx.contiguous(v.astype(mx.float32)) for k, v in arrays.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, lambda f: mx.save_safetensors(f, arrays, metadata=metadata))
    return out


def encoder_param_count(params: dict) -> int:
    return sum(int(v.size) for _, v in tree_flatten(params))
