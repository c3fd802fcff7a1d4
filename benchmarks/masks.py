"""Mask statistics and sampler speed for the seed configs' masking, beside I-JEPA's reference sampler.

python benchmarks/masks.py [--images 8192] [--batch 32] [--repeats 7] [--out benchmarks/results/masks.json]
Prints, per config: K, Nc, the masked fraction, target area and aspect statistics, the per-patch target
frequency spread (min / max / CV) and flip asymmetry, and the sampler's ms per batch (target < 5 ms for
32 images on the 14 x 14 grid). The reference is the NumPy port of I-JEPA's MaskCollator in
hjepa_mlx/mask_stats.py (variable sizes per batch; its corners never reach the last row or column).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, time_median, write_json  # noqa: E402  (loads BLAS first)

import numpy as np  # noqa: E402

from hjepa_mlx.mask_stats import flip_asymmetry_z, ijepa_reference_masks, index_union  # noqa: E402
from hjepa_mlx.masks import plan_masks, sample_masks  # noqa: E402

CONFIGS = {  # the seed configs' masking (overnight_safe / conservative, and aggressive), 3 levels
    "scale 0.15-0.2, aspect 0.75-1.5": dict(mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5)),
    "scale 0.15-0.25, aspect 0.6-1.5": dict(mask_scale=(0.15, 0.25), aspect_ratio=(0.6, 1.5)),
}
COMMON = dict(num_masks=4, num_context_masks=1, context_scale=(0.85, 1.0), min_keep=10, num_levels=3)


def block_stats(target_hits: np.ndarray) -> dict:
    """target_hits (n, M, H, W) boolean blocks -> area and bounding-box aspect (h / w) statistics."""
    rows, cols = target_hits.any(axis=3), target_hits.any(axis=2)
    h, w = rows.sum(axis=2), cols.sum(axis=2)
    aspect, area = (h / w).reshape(-1), target_hits.sum(axis=(2, 3)).reshape(-1)
    return {"area_mean": float(area.mean()), "area_min": int(area.min()), "area_max": int(area.max()),
            "aspect_mean": float(aspect.mean()), "aspect_min": float(aspect.min()), "aspect_max": float(aspect.max())}


def spread(hits: np.ndarray) -> dict:
    """hits (n, H, W): per-patch frequency min / max / coefficient of variation, and flip asymmetry."""
    freq = hits.mean(axis=0)
    return {"freq_min": float(freq.min()), "freq_max": float(freq.max()), "freq_cv": float(freq.std() / freq.mean()),
            "flip_asymmetry_z": flip_asymmetry_z(hits)}


def measure(name: str, masking: dict, grid: int, images: int, batch: int, repeats: int,
            reference_min_keep: int | None = None) -> dict:
    settings = {**COMMON, **masking}
    start = time.perf_counter()
    plan = plan_masks(grid, grid, **settings, quiet=True)
    plan_s = time.perf_counter() - start
    draws = [sample_masks(plan, batch, seed=0, step=s) for s in range(images // batch)]
    targets = np.concatenate([d.target_idx for d in draws])
    context = np.concatenate([d.context_idx for d in draws])
    n, cells = len(targets), grid * grid
    block_hits = np.zeros((n, plan.num_masks, cells), bool)
    np.put_along_axis(block_hits, targets, True, axis=2)
    union = index_union(targets, cells).reshape(n, grid, grid)
    steps = iter(range(10 ** 9))
    timing = time_median(lambda: sample_masks(plan, batch, 0, next(steps)), warmup=5, repeats=repeats * 20)

    ref_t, ref_c = ijepa_reference_masks(np.random.default_rng(0), min(images, 4096), batch, grid, grid,
                                         settings["num_masks"], settings["mask_scale"], settings["aspect_ratio"],
                                         settings["context_scale"], reference_min_keep or settings["min_keep"])
    ours = {"K": plan.num_target, "Nc": plan.num_context, "accept_rate": plan.accept_rate,
            "masked_fraction": float(union.mean()),
            **block_stats(block_hits.reshape(n, plan.num_masks, grid, grid)),
            "targets": spread(union), "context": spread(index_union(context[:, None], cells).reshape(n, grid, grid)),
            "sampler_ms_per_batch": timing["median_s"] * 1e3, "sampler_ms_min": timing["min_s"] * 1e3,
            "sampler_ms_max": timing["max_s"] * 1e3, "plan_s": plan_s}
    reference = {"masked_fraction": float(ref_t.any(axis=1).mean()), **block_stats(ref_t),
                 "context_mean": float(ref_c.sum(axis=(1, 2)).mean()),
                 "targets": spread(ref_t.any(axis=1)), "context": spread(ref_c)}
    return {"name": name, "grid": [grid, grid], "batch": batch, "images": n, **settings,
            "ours": ours, "ijepa_reference": reference}


def print_row(r: dict) -> None:
    o, ref = r["ours"], r["ijepa_reference"]
    print(f"\n{r['name']} on {r['grid'][0]}x{r['grid'][1]}, M {r['num_masks']}, context {list(r['context_scale'])}, "
          f"min_keep {r['min_keep']}, {r['images']} images", flush=True)
    print(f"  ours: K {o['K']}, Nc {o['Nc']} (reached by {o['accept_rate']:.1%} of draws), masked fraction "
          f"{o['masked_fraction']:.3f}; block area {o['area_mean']:.1f}, aspect h/w mean {o['aspect_mean']:.3f} "
          f"[{o['aspect_min']:.2f}, {o['aspect_max']:.2f}]")
    print(f"  I-JEPA reference: masked fraction {ref['masked_fraction']:.3f}; block area {ref['area_mean']:.1f} "
          f"[{ref['area_min']}, {ref['area_max']}], aspect mean {ref['aspect_mean']:.3f} "
          f"[{ref['aspect_min']:.2f}, {ref['aspect_max']:.2f}]; context mean {ref['context_mean']:.1f} (varies per batch)")
    for who, s in (("ours", o), ("reference", ref)):
        for part in ("targets", "context"):
            f = s[part]
            print(f"  {who:9s} {part:7s} per-patch frequency min {f['freq_min']:.3f} max {f['freq_max']:.3f} "
                  f"CV {f['freq_cv']:.3f}; flip asymmetry max |z| {f['flip_asymmetry_z']:.1f}")
    print(f"  sampler: {o['sampler_ms_per_batch']:.3f} ms per batch of {r['batch']} (median; min "
          f"{o['sampler_ms_min']:.3f}, max {o['sampler_ms_max']:.3f}); plan {o['plan_s'] * 1e3:.0f} ms once")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=str(RESULTS / "masks.json"))
    args = p.parse_args(argv)
    info = machine()
    print_machine(info)
    rows = []
    for name, masking in CONFIGS.items():
        rows.append(measure(name, masking, 14, args.images, args.batch, args.repeats))
        print_row(rows[-1])
    # A 6 x 6 local crop with min_keep 4. The reference applies min_keep to its targets too (blocks of
    # 4-6 patches must exceed it, else it loops forever), so it runs with min_keep 3.
    local = {**CONFIGS["scale 0.15-0.2, aspect 0.75-1.5"], "min_keep": 4}
    rows.append(measure("local crop 96 px / patch 16: scale 0.15-0.2, aspect 0.75-1.5", local, 6, args.images,
                        args.batch, args.repeats, reference_min_keep=3))
    print_row(rows[-1])
    write_json(args.out, {"machine": info, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
