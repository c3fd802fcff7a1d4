"""`python scripts/export.py RUN_DIR|CHECKPOINT [--encoder target|context] [--format timm|mlx] [--out FILE]`:
write one encoder alone, for use outside training (timm / PyTorch, or `hjepa_mlx.load_encoder`).

The target (EMA) encoder by default, as I-JEPA evaluates it. `--format timm`: timm's VisionTransformer
state dict (no class token, average pooling) plus the `timm.create_model` arguments in the metadata;
`--format mlx`: the project's own layout plus the encoder's arguments. See `hjepa_mlx.export`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hjepa_mlx.errors import UserError, run_for_user


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export.py", description="Write one trained encoder alone, in timm's layout "
                                "or this project's, for use outside training.")
    p.add_argument("source", metavar="RUN_DIR|CHECKPOINT",
                   help="run directory (latest checkpoint), checkpoint file, or an earlier export")
    p.add_argument("--encoder", choices=["target", "context"], default=None,
                   help="which encoder of a checkpoint (default: target, the EMA encoder)")
    p.add_argument("--format", dest="fmt", choices=["timm", "mlx"], default="timm")
    p.add_argument("--out", help="output .safetensors (default: RUN_DIR/export/<encoder>_encoder_<format>.safetensors)")
    return p


def default_out(checkpoint: Path, encoder: str, fmt: str) -> Path:
    """RUN_DIR/export/<encoder>_encoder_<fmt>.safetensors, RUN_DIR the directory above checkpoints/."""
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run_dir / "export" / f"{encoder}_encoder_{fmt}.safetensors"


def export(args) -> Path:
    from hjepa_mlx.export import (encoder_param_count, export_encoder, find_checkpoint, read_encoder_weights,
                                  timm_arguments, timm_pretrained_cfg, timm_snippet)

    source = find_checkpoint(Path(args.source))
    weights = read_encoder_weights(source, args.encoder)
    encoder = weights.info["encoder"]
    out = Path(args.out) if args.out else default_out(source, encoder, args.fmt)
    if out.resolve() == source.resolve():
        raise UserError(f"--out {out} is the file being read; pass another --out")
    path = export_encoder(weights, out, args.fmt)
    print(f"wrote {path}: {encoder} encoder, step {weights.info.get('step')}, "
          f"{encoder_param_count(weights.params):,} parameters, {path.stat().st_size / 1e6:.1f} MB, "
          f"format {args.fmt}")
    if args.fmt == "timm":
        from hjepa_mlx.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        architecture, kwargs = timm_arguments(weights.config)
        print("load it in timm with:\n" + timm_snippet(path, architecture, kwargs,
                                                      timm_pretrained_cfg(weights.config, IMAGENET_MEAN, IMAGENET_STD)))
    else:
        print(f"load it with: hjepa_mlx.load_encoder({str(path)!r}); encoder config "
              f"{json.dumps(weights.config)}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_for_user(lambda: export(args))
