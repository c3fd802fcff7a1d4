"""`python scripts/evaluate.py RUN_DIR|CHECKPOINT --dataset NAME`: k-NN, linear probe and feature quality of
a trained target encoder, rebuilt from the checkpoint's own saved config, beside a random-init baseline.

Features (`--level L`): the frozen target encoder's tokens after its affine-free layer norm; level 0
averages all patch tokens; level L > 0 first averages tokens inside the 2^L x 2^L cells of the patch
grid, L2-normalises each cell, then averages the cells (each region counts equally, as at level L of
the loss with normalize_embeddings).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hjepa_mlx.cli.helpfmt import DefaultsFormatter
from hjepa_mlx.errors import UserError, run_for_user


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0],
                                formatter_class=DefaultsFormatter)
    p.add_argument("target", metavar="RUN_DIR|CHECKPOINT",
                   help="a run directory (its latest checkpoint) or a checkpoint .safetensors file")
    p.add_argument("--dataset", help="dataset name (default: the run's own dataset, or its first labelled one)")
    p.add_argument("--data-path", help="dataset root (default: the run's)")
    p.add_argument("--protocol", default="knn,linear,quality",
                   help="comma list of registered evaluators (built in: knn, linear, quality)")
    p.add_argument("--level", type=int, default=0, help="hierarchy level of the pooled features (0: all tokens)")
    p.add_argument("--max-train", type=int, default=5000, help="labelled train images used (feature bank)")
    p.add_argument("--max-test", type=int, default=2000, help="test images used")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--token-energy", type=int, default=0, metavar="N",
                   help="also split the target tokens of N test images into common / positional / image / local "
                        "energy (tokens_* rows; evaluate/token_energy.py): what mean-pooling keeps (0: off)")
    p.add_argument("--out", help="one JSON of every dataset evaluated (default: eval_<dataset>.json per dataset, "
                                 "eval_<dataset>_level<L>.json for --level L > 0, in the run directory; a PNG of "
                                 "each dataset's table beside it)")
    return p


def _checkpoint_path(target: Path) -> tuple[Path, Path]:
    """(checkpoint file, run directory)."""
    from hjepa_mlx.checkpoint import CheckpointManager

    if target.is_dir():
        from hjepa_mlx.checkpoint_series import current_series
        ckdir = current_series(target) if (target / "checkpoints").is_dir() else target   # newest fork
        latest = CheckpointManager(ckdir).latest()
        if latest is None:
            raise UserError(f"no checkpoint in {target}: expected {ckdir}/latest (train first, or pass a .safetensors file)")
        return latest, ckdir.parent if ckdir.name == "checkpoints" else ckdir
    if not target.is_file():
        raise UserError(f"{target} does not exist; pass a run directory or a checkpoint .safetensors file")
    return target, target.parent.parent if target.parent.name == "checkpoints" else target.parent


def _token_energy(model, target_params, loader, max_images: int) -> dict:
    """tokens_{common, positional, image, local, pooled_mean_cosine} of the target encoder's tokens (after
    its affine-free layer norm, as pooled for the features) over the first `max_images` of `loader`."""
    import mlx.core as mx

    from hjepa_mlx.evaluate.features import extract_features
    from hjepa_mlx.evaluate.token_energy import token_energy

    shape = {}

    def flat_tokens(images):        # extract_features gathers (B, F) rows: the tokens flattened, kept apart
        tokens = model.encode_target(target_params, images)
        shape["tokens"] = tokens.shape[1:]
        return tokens.reshape(tokens.shape[0], -1)
    rows, _, _ = extract_features(mx.compile(flat_tokens), loader.epoch(0), max_images=max_images)
    tokens = rows.reshape(len(rows), *shape["tokens"])
    return {f"tokens_{key}": value for key, value in token_energy(tokens).items()}


def evaluate(args) -> dict:
    from hjepa_mlx.build import build_model, labelled_loaders
    from hjepa_mlx.config.run_settings import knn_settings
    from hjepa_mlx.checkpoint import CheckpointManager
    from hjepa_mlx.config import load_config
    from hjepa_mlx.evaluate.evaluators import evaluator_names
    from hjepa_mlx.evaluate.features import make_pooled_encoder
    from hjepa_mlx.evaluate.protocols import compare_encoders, pixel_encoder
    from hjepa_mlx.evaluate.report import format_report, write_json
    from hjepa_mlx.plots import draw_eval
    from hjepa_mlx.config.plan import make_plan
    from hjepa_mlx.state import init_state

    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    unknown = [p for p in protocols if p not in evaluator_names()]
    if unknown:
        raise UserError(f"--protocol {unknown[0]!r} is not one of {', '.join(evaluator_names())}")
    if args.token_energy < 0 or args.token_energy == 1:
        raise UserError(f"--token-energy {args.token_energy}: give 0 (off) or at least 2 test images")
    ckpt, run_dir = _checkpoint_path(Path(args.target))
    meta_path = ckpt.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"checkpoint metadata {meta_path} is missing or corrupt ({exc})") from None
    config = load_config(None, raw=meta["config"], resolved=True).config
    plan = make_plan(config)
    model = build_model(config, plan, quiet=True)
    if not 0 <= args.level < model.num_levels:
        raise UserError(f"--level {args.level}: this model has levels 0..{model.num_levels - 1}")
    # The baseline: the same architecture at random init - exactly the weights this run started from
    # (build_model seeds the RNG with experiment.seed), so the comparison isolates what training changed.
    # It doubles as the template for loading, which builds a new tree and leaves it untouched.
    baseline = init_state(model)
    trained, _ = CheckpointManager(ckpt.parent).load(ckpt, baseline)

    knn = knn_settings(config)
    payload = {"checkpoint": str(ckpt), "step": meta.get("step"), "level": args.level, "protocols": protocols,
               "datasets": {}}
    for name, train_loader, test_loader in labelled_loaders(config, args.dataset, args.data_path, args.batch_size):
        encoders = {"trained": make_pooled_encoder(model, trained["target"], args.level),
                    "random-init": make_pooled_encoder(model, baseline["target"], args.level),
                    "raw-pixels": pixel_encoder()}
        print(f"evaluating on {name}: {', '.join(encoders)} encoders ...", flush=True)
        results = compare_encoders(encoders, train_loader, test_loader, protocols,
                                   k_values=knn.k_values, temperature=knn.temperature, seed=plan.seed,
                                   max_train=args.max_train, max_test=args.max_test,
                                   say=lambda text: print(f"  {text}", flush=True))
        if args.token_energy:
            for row, params in (("trained", trained["target"]), ("random-init", baseline["target"])):
                results[row].update(_token_energy(model, params, test_loader, args.token_energy))
        print(f"\n{name}: {args.max_train} train / {args.max_test} test images at most, level {args.level}, "
              f"checkpoint {ckpt} (step {meta.get('step')})")
        print(format_report(results, baseline_name="random-init"))
        payload["datasets"][name] = results
        stem = f"eval_{name}" + (f"_level{args.level}" if args.level else "")
        if not args.out:   # one file per dataset: evaluating another dataset never overwrites this one
            write_json(run_dir / f"{stem}.json", {**payload, "datasets": {name: results}})
            print(f"wrote {run_dir / f'{stem}.json'}")
        png = (Path(args.out).with_name(f"{Path(args.out).stem}_{name}.png") if args.out
               else run_dir / f"{stem}.png")
        if draw_eval(results, png, title=f"{name}: checkpoint step {meta.get('step')}, level {args.level}"):
            print(f"wrote {png}")
    if args.out:
        write_json(args.out, payload)        # NaN/Inf become null: the file stays valid JSON
        print(f"wrote {args.out}")
    return payload


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_for_user(lambda: evaluate(args))
