"""`python scripts/train.py CONFIG` (or `--config CONFIG`): validate, plan, train.

User errors (bad config, missing data, corrupt checkpoint) print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from hjepa_mlx import blas
from hjepa_mlx.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train H-JEPA from a YAML config.")
    p.add_argument("config_path", nargs="?", metavar="CONFIG", help="YAML config file")
    p.add_argument("--config", dest="config_flag", metavar="CONFIG", help="YAML config file (same as CONFIG)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set training.epochs=2 (repeatable)")
    p.add_argument("--output-dir", help="run directory (default: experiment.output_dir)")
    p.add_argument("--resume", metavar="auto|PATH",
                   help="continue from the latest checkpoint in the run directory (auto) or from PATH")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="resume although the config changes the math or data order (listed and logged); the run "
                        "continues in a new checkpoint series (checkpoints-fork<N>/), the original is kept")
    p.add_argument("--device", choices=["auto", "cpu", "gpu", "mps", "cuda"],
                   help="override the config's device")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config, print the resolved config and the plan, and exit")
    return p


def _config_path(args, parser) -> str:
    if args.config_path and args.config_flag and args.config_path != args.config_flag:
        parser.error(f"two configs given ({args.config_path} and --config {args.config_flag}); give one")
    path = args.config_path or args.config_flag
    if not path:
        parser.error("no config given; e.g. python scripts/train.py configs/quickstart.yaml")
    return path


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    path = _config_path(args, parser)

    import mlx.core as mx

    from hjepa_mlx.config import load_config
    from hjepa_mlx.config.devices import resolve_device
    from hjepa_mlx.plan import describe_plan, make_plan

    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    loaded = load_config(path, overrides)
    for note in loaded.notes:
        print(note)
    print(blas.describe())
    device, message = resolve_device(loaded.config.device)
    print(message or f"device: {loaded.config.device} -> {device}")
    mx.set_default_device(device)
    if mx.default_device().type == mx.DeviceType.cpu:
        from hjepa_mlx import kernels
        print(kernels.describe())
    if args.output_dir is not None:
        from hjepa_mlx.config.rules import check_output_dir
        check_output_dir(args.output_dir, "--output-dir")
    plan = make_plan(loaded.config, output_dir=args.output_dir)
    from hjepa_mlx.plan_checks import check_plan, describe_masks
    mask_plan = check_plan(loaded.config, plan)
    if args.dry_run:
        from hjepa_mlx.config import dump_yaml

        print("# resolved config")
        print(dump_yaml(loaded.config).rstrip())
        print(describe_plan(plan))
        print(describe_masks(mask_plan))
        return 0
    if not blas.CHOICE.optimized and sys.platform == "linux" and not blas.user_disabled():
        raise UserError("refusing to train on MLX's reference BLAS (~2 GFLOP/s): " + blas.CHOICE.reason +
                        f"; or set {blas.ENV_VAR}=off to train slowly anyway")
    from hjepa_mlx.train import train

    print(describe_plan(plan))
    if args.resume_with_changes and args.resume is None:
        raise UserError("--resume-with-changes needs --resume auto (or a checkpoint path)")
    return train(loaded, plan, resume=args.resume, resume_with_changes=args.resume_with_changes)


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except UserError as exc:
        from hjepa_mlx.errors import one_line
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
