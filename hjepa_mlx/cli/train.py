"""`python scripts/train.py CONFIG` (or `--config CONFIG`): validate, plan, train.

User errors (bad config, missing data, corrupt checkpoint) print one line to stderr and exit 2. Under
`mlx.launch` (README "Several processes / machines") rank 0 alone prints the banner and the plan; an
error names the rank, and a lost peer is one line too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hjepa_mlx import blas
from hjepa_mlx.cli.helpfmt import DefaultsFormatter
from hjepa_mlx.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train.py", description="Train H-JEPA from a YAML config.",
                                formatter_class=DefaultsFormatter)
    p.add_argument("config_path", nargs="?", metavar="CONFIG", help="YAML config file")
    p.add_argument("--config", dest="config_flag", metavar="CONFIG", help="YAML config file (same as CONFIG)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set training.epochs=2 (repeatable; default: none)")
    p.add_argument("--output-dir", help="run directory (default: the config's experiment.output_dir)")
    p.add_argument("--resume", metavar="auto|PATH",
                   help="continue from the latest checkpoint in the run directory (auto) or from PATH "
                        "(default: start a new run; refused when the run directory holds checkpoints)")
    p.add_argument("--resume-with-changes", action="store_true",
                   help="resume although the config changes the math or data order (listed and logged); the run "
                        "continues in a new checkpoint series (checkpoints-fork<N>/), the original is kept")
    p.add_argument("--device", choices=["auto", "cpu", "gpu", "mps", "cuda"],
                   help="override the config's device (default: the config's device)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config, print the resolved config and the plan, time the train step "
                        "(unless --no-calibrate) and print the estimate, and exit")
    p.add_argument("--budget", metavar="DURATION",
                   help="time the run may take, e.g. 8h, 90m, 1h30m: the estimate says whether it fits and, "
                        "if not, what would (a real run only warns) (default: no budget)")
    p.add_argument("--calibrate-steps", type=int, default=3, metavar="N",
                   help="--dry-run: timed train steps per batch size after the compiling one")
    p.add_argument("--calibrate-max-seconds", type=float, default=75.0, metavar="S",
                   help="--dry-run: time the timed steps may take; a slower full batch is timed on smaller "
                        "batches and extrapolated")
    p.add_argument("--no-calibrate", action="store_true",
                   help="--dry-run: skip the timing (plan only, no estimate)")
    p.add_argument("--explain", action="store_true",
                   help="print every config key with its value, where it came from (file, --set, legacy alias, "
                        "default) and the modules that read it, then exit")
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
    if args.calibrate_steps < 1:
        parser.error(f"--calibrate-steps must be >= 1, got {args.calibrate_steps}")

    from hjepa_mlx import build, distributed
    from hjepa_mlx.config import load_config

    from hjepa_mlx.budget import parse_duration

    budget_s = parse_duration(args.budget) if args.budget is not None else None
    overrides = list(args.overrides) + ([f"device={args.device}"] if args.device else [])
    if args.explain:
        from hjepa_mlx.config.explain import describe, explain_rows
        print(describe(explain_rows(path, overrides)))
        return 0
    loaded = load_config(path, overrides)
    world = build.build_world(loaded.config)    # one process unless started by mlx.launch
    try:
        return _run_in_world(args, loaded, world, budget_s, path)
    except UserError as exc:
        if world.is_distributed:       # every rank prints its own error: say which one
            raise UserError(f"(rank {world.rank}) {exc}") from None
        raise
    except RuntimeError as exc:        # a collective whose peer died: one line instead of a traceback
        message = distributed.comm_error(exc, world)
        if message is None:
            raise
        raise UserError(message) from None


def _run_in_world(args, loaded, world, budget_s, path) -> int:
    import mlx.core as mx

    from hjepa_mlx import build, distributed
    from hjepa_mlx.config.plan import describe_plan, make_plan

    say = print if world.is_main else (lambda *a, **k: None)    # rank 0 speaks for every rank
    for note in loaded.notes:
        say(note)
    say(blas.describe())
    device, line = build.build_device(loaded.config)
    say(line)
    mx.set_default_device(device)
    if mx.default_device().type == mx.DeviceType.cpu:
        from hjepa_mlx import allocator, kernels
        say(kernels.describe())
        say(allocator.describe())
    if args.output_dir is not None:
        from hjepa_mlx.config.rules import check_output_dir
        check_output_dir(args.output_dir, "--output-dir")
    plan = make_plan(loaded.config, output_dir=args.output_dir, world=world)
    distributed.per_rank_batch(world, plan.batch_size)
    from hjepa_mlx.config.plan_checks import check_plan, describe_masks
    mask_plan = check_plan(loaded.config, plan)
    if args.dry_run:
        from hjepa_mlx.config import dump_yaml

        say("# resolved config")
        say(dump_yaml(loaded.config).rstrip())
        say(describe_plan(plan))
        say(describe_masks(mask_plan))
        recompute_line = build.recompute_choice(loaded.config, plan)[2]
        if recompute_line:
            say(recompute_line)
        if not args.no_calibrate and world.is_main:
            _print_calibrated_estimate(loaded.config, plan, args, budget_s, path)
        return 0
    if not blas.CHOICE.optimized and sys.platform == "linux" and not blas.user_disabled():
        raise UserError("refusing to train on MLX's reference BLAS (~2 GFLOP/s): " + blas.CHOICE.reason +
                        f"; or set {blas.ENV_VAR}=off to train slowly anyway")
    from hjepa_mlx.train import train

    say(describe_plan(plan))
    if args.resume_with_changes and args.resume is None:
        raise UserError("--resume-with-changes needs --resume auto (or a checkpoint path)")
    return train(loaded, plan, resume=args.resume, resume_with_changes=args.resume_with_changes, budget_s=budget_s,
                 seed_name=Path(path).stem, world=world)


def _print_calibrated_estimate(config, plan, args, budget_s, path) -> None:
    from hjepa_mlx.calibrate import calibrate
    from hjepa_mlx.estimate import Measured, describe_estimate, machine_memory_bytes

    cal = calibrate(config, plan, steps=args.calibrate_steps, max_seconds=args.calibrate_max_seconds)
    if cal.extrapolated:
        print("calibration   : " + ", ".join(f"batch {b}: {t:.3g} s/step" for b, t in
                                             zip(cal.batch_sizes, cal.micro_step_s)))
    print(describe_estimate(Measured(cal.step_s, cal.compile_s, cal.peak_memory_bytes, cal.source,
                                     memory_lower_bound=cal.extrapolated), plan,
                            plan.epochs, budget_s=budget_s, seed_name=Path(path).stem,
                            memory_total=machine_memory_bytes()))
    print(f"(calibration took {cal.wall_s:.0f} s)")


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
