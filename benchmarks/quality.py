"""What a config learns on real images, within a time or step budget, beside the two floors it must beat.

python benchmarks/quality.py CONFIG --data-path P [--minutes M | --steps S] [--out JSON] [--set KEY=VALUE ...]

Trains CONFIG on the data at P (every dataset of the config is read from P), then evaluates the trained
target encoder, its own random initialisation (the exact weights the run started from) and the raw
normalised pixels: k-NN (cosine, k = 1 and 20, T = 0.07) with the labelled train split as the bank and
the test split as queries, a linear probe, and RankMe of the pooled features. The learning curve is the
online k-NN@20 during training (on a 1,000 / 500-image subset, to keep it cheap) and RankMe of the
collapse alarm's probe set.

With --minutes the whole command fits the budget: it first measures the train-step rate and the
feature-extraction rate at the config's real shapes, subtracts the evaluation it will run, and fits
`training.epochs` (and the warm-ups, in proportion) so that the config's schedule *completes* - the cosine
decays to its end instead of being cut off. --steps S fits the epochs to S optimizer steps instead.
Output: a table, and JSON with top-level `trained`, `random_init`, `raw_pixels` (each knn_top1_k1,
knn_top1_k20, linear_top1, rankme), `curve`, `budget` and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, time_median, write_json  # noqa: E402  (loads BLAS first)

from hjepa_mlx.config import load_config  # noqa: E402
from hjepa_mlx.config.loader import read_yaml  # noqa: E402
from hjepa_mlx.errors import UserError  # noqa: E402

CURVE_POINTS = 6
CURVE_BANK, CURVE_QUERIES = 1000, 500
ROWS = {"trained": "trained", "random-init": "random_init", "raw-pixels": "raw_pixels"}
KEYS = ("knn_top1_k1", "knn_top1_k20", "linear_top1", "rankme")
TOKEN_ENERGY_IMAGES = 512  # test images whose target tokens are split into common / positional / image / local
LINEAR_PROBE_S = 20.0       # per encoder, measured on 3,800 x 192 features (a few seconds to ~20 s)


def with_data_path(raw: dict, path: str) -> dict:
    """The raw config with every dataset read from `path`."""
    data = raw.setdefault("data", {})
    data["data_path"] = path
    for entry in data.get("datasets") or []:
        entry["path"] = path
    return raw


def dataset_facts(config):
    """(training images per epoch after the hold-out, labelled bank size, test size) of the first dataset."""
    from hjepa_mlx.build import build_loaders, train_dataset_sizes
    from hjepa_mlx.config.plan import make_plan

    loaders = build_loaders(config, make_plan(config))
    train = sum(train_dataset_sizes(loaders).values())
    bank = len(loaders.knn_train[0][1].dataset) if loaders.knn_train else 0
    test = len(loaders.knn_val[0][1].dataset) if loaders.knn_val else 0
    return train, bank, test


def extraction_rate(config) -> float:
    """Images/s of the pooled target-encoder features at the config's shapes (after compilation)."""
    import mlx.core as mx
    import numpy as np

    from hjepa_mlx.build import build_model
    from hjepa_mlx.evaluate.features import make_pooled_encoder
    from hjepa_mlx.config.plan import make_plan
    from hjepa_mlx.state import init_state

    model = build_model(config, make_plan(config), quiet=True)
    encode = make_pooled_encoder(model, init_state(model)["target"])
    b, size = config.data.batch_size, config.data.image_size
    images = mx.array(np.random.default_rng(0).standard_normal((b, size, size, 3), dtype=np.float32))
    timing = time_median(lambda: mx.eval(encode(images)), warmup=1, repeats=3)
    return b / timing["median_s"]


def fit_epochs(config, total_steps: int, steps_per_epoch: int) -> list[str]:
    """--set overrides that make the run `total_steps` long (whole epochs, >= 1) with the config's warm-ups
    scaled in proportion, so the schedules still end where the config says."""
    t, e = config.training, config.model.ema
    if total_steps < steps_per_epoch:
        epochs, overrides = 1, [f"training.steps_per_epoch={max(1, total_steps)}"]
    else:
        epochs, overrides = total_steps // steps_per_epoch, []
    scale = epochs / t.epochs
    return overrides + [f"training.epochs={epochs}", f"training.warmup_epochs={t.warmup_epochs * scale:.4f}",
                        f"model.ema.momentum_warmup_epochs={int(e.momentum_warmup_epochs * scale)}"]


def curve_overrides(config, epochs: int) -> list[str]:
    every = max(1, epochs // CURVE_POINTS)
    return ["evaluation.knn.enabled=true", f"evaluation.knn.frequency={every}",
            f"evaluation.knn.max_train_images={CURVE_BANK}", f"evaluation.knn.max_val_images={CURVE_QUERIES}",
            "evaluation.knn.k_values=[1, 20]", "evaluation.knn.metric_k=20"]


def read_curve(run_dir: Path) -> dict:
    knn, rank = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "knn_top1_k20" in row:
            knn.append((row["step"], row["knn_top1_k20"]))
        if "rankme" in row:
            rank.append((row["step"], row["rankme"]))
    return {"knn_top1_k20": knn, "rankme": rank}


def rankme_falls_monotonically(points: list, total_steps: int) -> bool:
    """True when RankMe only ever falls after the first 10 % of the run (over >= 3 checks): a collapsing run."""
    late = [r for s, r in points if s >= 0.1 * total_steps]
    return len(late) >= 3 and all(b < a for a, b in zip(late, late[1:]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--data-path", required=True, help="dataset root, e.g. ../shared/data/cifar10-dev")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock budget of the whole command (default 30)")
    budget.add_argument("--steps", type=int, help="optimizer steps to train instead of a time budget")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--output-dir", help="run directory (default: runs/quality_<config>_<time>)")
    p.add_argument("--no-linear", action="store_true", help="skip the linear probes (quicker comparisons)")
    p.add_argument("--out", help="JSON output (default: benchmarks/results/quality_<config>.json)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    info = machine()
    print_machine(info)
    try:
        return run(args, start, info)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args, start: float, info: dict) -> int:
    from hjepa_mlx.cli.evaluate import build_parser, evaluate
    from hjepa_mlx.config.plan import make_plan
    from hjepa_mlx.train import train

    name = Path(args.config).stem
    raw = with_data_path(read_yaml(args.config), args.data_path)
    config = load_config(None, args.overrides, raw=raw).config
    train_images, bank, test = dataset_facts(config)
    per_step = config.data.batch_size * config.training.accumulation_steps
    steps_per_epoch = config.training.steps_per_epoch or train_images // per_step
    budget = {"minutes": args.minutes, "steps": args.steps}
    if args.steps is None:
        from throughput import measure

        minutes = args.minutes or 30.0
        step_rate = measure(config, repeats=3, warmup=1)["images_per_s"] / per_step
        extract = extraction_rate(config)
        curve_s = CURVE_POINTS * (CURVE_BANK + CURVE_QUERIES) / extract
        probes = 0 if args.no_linear else 3
        final_s = 2 * (bank + test) / extract + probes * LINEAR_PROBE_S + 30.0   # + the run's compile
        train_s = minutes * 60 - (time.perf_counter() - start) - curve_s - final_s
        total_steps = max(1, int(train_s * step_rate * 0.95))                  # 5 % margin for the host
        budget.update(minutes=minutes, steps_per_s=step_rate, extract_images_per_s=extract,
                      planned_train_s=train_s, planned_eval_s=curve_s + final_s)
        print(f"budget: {minutes:g} min; measured {step_rate:.3f} steps/s, {extract:.0f} img/s feature "
              f"extraction -> {total_steps} steps of training, ~{(curve_s + final_s) / 60:.1f} min evaluation")
    else:
        total_steps = args.steps
    fitted = fit_epochs(config, total_steps, steps_per_epoch)
    epochs = int(next(o for o in fitted if o.startswith("training.epochs=")).split("=")[1])
    overrides = args.overrides + fitted + curve_overrides(config, epochs)
    loaded = load_config(None, overrides, raw=raw)
    out_dir = Path(args.output_dir or f"runs/quality_{name}_{time.strftime('%Y%m%d-%H%M%S')}")
    plan = make_plan(loaded.config, output_dir=str(out_dir))
    print("fitted: " + " ".join(fitted))
    train_start = time.perf_counter()
    code = train(loaded, plan)
    if code != 0:
        print(f"error: training stopped with exit code {code}; see {out_dir / 'train.log'}", file=sys.stderr)
        return code
    train_s = time.perf_counter() - train_start
    # scripts/evaluate.py's own parser, so every option it has takes its default here too
    eval_args = build_parser().parse_args([
        str(out_dir), "--data-path", args.data_path,
        "--protocol", "knn,quality" if args.no_linear else "knn,linear,quality",
        "--max-train", str(bank), "--max-test", str(test), "--batch-size", str(config.data.batch_size),
        "--token-energy", str(min(TOKEN_ENERGY_IMAGES, test)), "--out", str(out_dir / "eval.json")])
    payload = evaluate(eval_args)
    rows = next(iter(payload["datasets"].values()))
    curve = read_curve(out_dir)
    steps_done = payload["step"]
    result = {ROWS[n]: {k: rows[n].get(k) for k in KEYS} | {"full": rows[n]} for n in ROWS}
    result.update(
        machine=info, config=args.config, overrides=overrides, run_dir=str(out_dir), steps=steps_done,
        images_seen=steps_done * per_step, epochs=epochs, train_seconds=train_s,
        total_seconds=time.perf_counter() - start, budget=budget, curve=curve,
        rankme_monotone_fall=rankme_falls_monotonically(curve["rankme"], steps_done),
        checks=verdict(result_rows=rows, dim=_dim(rows)))
    print(f"\n{name} on {args.data_path}: {steps_done} steps ({epochs} epochs) in {train_s / 60:.1f} min of "
          f"training, {result['total_seconds'] / 60:.1f} min in all")
    print("learning curve (step: k-NN@20 on the curve subset): " +
          ", ".join(f"{s}: {v:.3f}" for s, v in curve["knn_top1_k20"]))
    print("RankMe of the probe set (step: value): " + ", ".join(f"{s}: {v:.1f}" for s, v in curve["rankme"]))
    for check, ok in result["checks"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
    write_json(args.out or RESULTS / f"quality_{name}.json", result)
    return 0


def _dim(rows: dict) -> int:
    return int(rows["trained"].get("rankme_max") or 0)


def verdict(result_rows: dict, dim: int) -> dict:
    """The issue's bar for a CPU-sized run on CIFAR-10, as named booleans."""
    t, r, px = (result_rows[n].get("knn_top1_k20", math.nan) for n in ("trained", "random-init", "raw-pixels"))
    return {"k-NN@20 >= random init + 15 points": t >= r + 0.15,
            "k-NN@20 >= raw pixels + 10 points": t >= px + 0.10,
            "k-NN@20 >= 50 %": t >= 0.50,
            "RankMe >= 0.3 D": (result_rows["trained"].get("rankme") or 0) >= 0.3 * dim}


if __name__ == "__main__":
    raise SystemExit(main())
