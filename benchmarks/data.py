"""Images/s of the data pipeline (decode + augment + batch) for a config, vs what its train step consumes.

python benchmarks/data.py [CONFIG] [--set KEY=VALUE ...] [--workers 0 2] [--batches 8] [--out PATH]

Uses the config's dataset, transforms, image size, batch and views (two when the loss needs them).
Compare with `benchmarks/throughput.py CONFIG`: the target is >= 3x the train step's images/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, write_json  # noqa: E402  (loads BLAS first)

import numpy as np  # noqa: E402

from hjepa_mlx.build import build_loaders  # noqa: E402
from hjepa_mlx.config import load_config  # noqa: E402
from hjepa_mlx.errors import UserError  # noqa: E402
from hjepa_mlx.plan import make_plan  # noqa: E402


def measure(config, workers: int, batches: int, repeats: int = 3) -> dict:
    cfg = load_config(None, [f"data.num_workers={workers}"], raw=_raw(config), resolved=True).config
    plan = make_plan(cfg)
    loader = build_loaders(cfg, plan).train
    rates = []
    for r in range(repeats + 1):                       # the first pass warms caches and thread pools
        it = loader.epoch(r)
        start = time.perf_counter()
        n = 0
        for _ in range(batches):
            batch = next(it)
            n += len(batch["labels"])
        if r:
            rates.append(n / (time.perf_counter() - start))
    return {"workers": workers, "views": loader.views, "images_per_s_median": float(np.median(rates)),
            "images_per_s_all": rates}


def _raw(config):
    from hjepa_mlx.config import to_dict
    return to_dict(config)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Data pipeline throughput.")
    p.add_argument("config", nargs="?", default=str(Path(__file__).resolve().parents[1] / "configs/quickstart.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    info = machine()
    print_machine(info)
    try:
        config = load_config(args.config, args.overrides).config
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    d = config.data
    print(f"{Path(args.config).stem}: {d.dataset if not d.use_multi_dataset else '+'.join(e.name for e in d.datasets)}, "
          f"image {d.image_size}, batch {d.batch_size}, strategy {d.transforms.strategy}")
    rows = []
    for w in args.workers:
        r = measure(config, w, args.batches)
        rows.append(r)
        print(f"workers {w}: {r['images_per_s_median']:.1f} images/s ({r['views']} view(s) each)")
    write_json(args.out or RESULTS / f"data_{Path(args.config).stem}.json",
               {"machine": info, "config": args.config, "overrides": args.overrides, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
