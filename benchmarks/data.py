"""Images/s of the data pipeline (load/decode + augment + batch), to compare with what a train step consumes.

Grid mode (no config): every combination of the listed settings on one dataset:
  python benchmarks/data.py [--dataset synthetic] [--root DIR] [--image-size 224] [--batch-size 16 32]
      [--strategy default deit3] [--views 1 2] [--num-workers 0 2] [--batches 4] [--repeats 3] [--out PATH]
  -> benchmarks/results/data.json
Config mode: the config's dataset, transforms, image size, batch and views (two when the loss needs them):
  python benchmarks/data.py CONFIG [--set KEY=VALUE ...] [--num-workers 0 2] [--batches 8] [--out PATH]
  -> benchmarks/results/data_<config>.json
Images/s counts samples (a 2-view sample is one image producing two views). Each setting: one warm-up
pass (thread pool start, caches), then `repeats` timed passes of `batches` batches; the median is reported.
Compare with `benchmarks/throughput.py CONFIG`: the target is >= 3x the train step's images/s.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, write_json  # noqa: E402  (imports hjepa_mlx: BLAS first)

from hjepa_mlx.errors import UserError  # noqa: E402


def rate(loader, batches: int, repeats: int) -> dict:
    """Median images/s over `repeats` passes of `batches` batches each, after one warm-up pass."""
    rates = []
    for r in range(repeats + 1):
        it = loader.epoch(r)
        start = time.perf_counter()
        n = sum(len(next(it)) for _ in range(batches))
        it.close()
        if r:                                          # pass 0 warms caches and the thread pool
            rates.append(n / (time.perf_counter() - start))
    return {"images_per_s_median": statistics.median(rates), "images_per_s_all": rates}


def grid(args) -> dict:
    from hjepa_mlx.data.loader import BatchLoader
    from hjepa_mlx.data.registry import build_dataset
    from hjepa_mlx.data.transforms import TransformSpec, make_train_transform

    rows = []
    for size, batch, strategy, views, workers in itertools.product(
            args.image_size, args.batch_size, args.strategy, args.views, args.num_workers):
        need = batch * (args.batches + 1) * (args.repeats + 1)
        if args.dataset == "synthetic":
            ds = build_dataset("synthetic", "", "train", num_images=need, num_classes=10,
                               image_size=args.source_size or size, seed=0)
        else:
            ds = build_dataset(args.dataset, args.root, "train")
        spec = TransformSpec(strategy=strategy, crop_scale=(0.3, 1.0), color_jitter=0.4,
                             auto_augment=strategy == "deit3" and args.auto_augment,
                             random_erasing_prob=0.1 if strategy == "deit3" else 0.0)
        loader = BatchLoader(ds, batch, make_train_transform(spec, size), views=views, seed=0,
                             num_workers=workers)
        row = {"dataset": args.dataset, "image_size": size, "batch_size": batch, "strategy": strategy,
               "views": views, "num_workers": workers, **rate(loader, args.batches, args.repeats)}
        rows.append(row)
        print(f"{args.dataset} {size}px batch {batch:3d} {strategy:7s} views {views} workers {workers}: "
              f"{row['images_per_s_median']:7.1f} images/s", flush=True)
    return {"mode": "grid", "auto_augment": args.auto_augment, "batches": args.batches,
            "repeats": args.repeats, "rows": rows}


def from_config(args) -> dict:
    from hjepa_mlx.build import build_loaders
    from hjepa_mlx.config import load_config
    from hjepa_mlx.config.plan import make_plan

    config = load_config(args.config, args.overrides).config
    d = config.data
    names = d.dataset if not d.use_multi_dataset else "+".join(e.name for e in d.datasets)
    print(f"{Path(args.config).stem}: {names}, image {d.image_size}, batch {d.batch_size}, "
          f"strategy {d.transforms.strategy}")
    rows = []
    for workers in args.num_workers:
        cfg = load_config(args.config, [*args.overrides, f"data.num_workers={workers}"]).config
        loader = build_loaders(cfg, make_plan(cfg)).train
        row = {"workers": workers, "views": loader.views, **rate(loader, args.batches, args.repeats)}
        rows.append(row)
        print(f"workers {workers}: {row['images_per_s_median']:.1f} images/s ({row['views']} view(s) each)")
    return {"mode": "config", "config": args.config, "overrides": args.overrides, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Data pipeline throughput (images/s).")
    p.add_argument("config", nargs="?", help="a training config (config mode); omit for grid mode")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config mode: KEY=VALUE")
    p.add_argument("--dataset", default="synthetic", help="grid mode: a registry name")
    p.add_argument("--root", default="./data", help="grid mode: dataset directory (not for synthetic)")
    p.add_argument("--image-size", type=int, nargs="+", default=[224])
    p.add_argument("--source-size", type=int, default=None,
                   help="synthetic source image size (default: the output size)")
    p.add_argument("--batch-size", type=int, nargs="+", default=[16, 32])
    p.add_argument("--strategy", nargs="+", default=["default", "deit3"], choices=["default", "deit3"])
    p.add_argument("--no-auto-augment", dest="auto_augment", action="store_false",
                   help="grid mode: deit3 without RandAugment (default: with, as the aggressive config)")
    p.add_argument("--views", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    p.add_argument("--num-workers", "--workers", dest="num_workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=4, help="timed batches per pass")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per setting (median reported)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    info = machine()
    print_machine(info)
    try:
        payload = from_config(args) if args.config else grid(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    default = f"data_{Path(args.config).stem}.json" if args.config else "data.json"
    write_json(args.out or RESULTS / default, {"machine": info, **payload})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
