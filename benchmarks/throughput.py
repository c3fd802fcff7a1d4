"""Images/s of the compiled train step for a config, with and without recomputation.

python benchmarks/throughput.py CONFIG [--set KEY=VALUE ...] [--repeats 5] [--warmup 2] [--breakdown] [--out PATH]
                                  [--world N]

Synthetic inputs of the config's shapes (image size, batch, accumulation, views, mask counts); after
warm-up (which includes compilation), the median of timed steps. Prints the per-epoch time this implies
for the config's dataset size beside the per-epoch time the seed documents claimed, FLOPs per image and
the achieved GFLOP/s and MFU (achieved over the best fp32 GEMM rate measured in the same process, at
the ViT-S MLP shape and 1024^3); device, BLAS, kernels and MLX version; JSON next to the table.
`--breakdown` adds time per phase and per op class (see breakdown.py).

Data parallel: `--world N` starts N ranks on this machine (mlx.launch, ring backend), or run the script
under `mlx.launch` yourself (other machines: --hostfile). `data.batch_size` is the global batch; each rank
steps on its share with the gradient all-reduce, and rank 0 reports per-rank and global img/s and the
time of the all-reduce alone (the same buckets, timed outside the step).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, time_median, write_json  # noqa: E402  (loads BLAS first)
from breakdown import gemm_gflops, measure_breakdown, print_breakdown  # noqa: E402

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from hjepa_mlx import kernels  # noqa: E402
from hjepa_mlx.build import build_mask_plan, build_model, step_settings, target_view_count  # noqa: E402
from hjepa_mlx.config import load_config  # noqa: E402
from hjepa_mlx.distributed import (SINGLE, bucket_count, init_world, mean_across, per_rank_batch,  # noqa: E402
                                   shard_masks)
from hjepa_mlx.errors import UserError  # noqa: E402
from hjepa_mlx.estimate import SEED_PROJECTED_MIN_PER_EPOCH  # noqa: E402
from hjepa_mlx.flops import train_flops_per_image  # noqa: E402
from hjepa_mlx.masks import sample_masks  # noqa: E402
from hjepa_mlx.config.plan import make_plan  # noqa: E402
from hjepa_mlx.state import init_state  # noqa: E402
from hjepa_mlx.step import make_train_step  # noqa: E402
from hjepa_mlx.batch import Batch, device_batch  # noqa: E402

# Per-epoch minutes the seed documents projected (never measured), per config file name.
SEED_CLAIMS_MIN = SEED_PROJECTED_MIN_PER_EPOCH


def interleaved(fns: dict, *, warmup: int, repeats: int) -> dict:
    """Time several step functions in turn (a, b, a, b, ...) so a changing machine load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "repeats": repeats}
            for name, t in times.items()}


def prepare(config, world=SINGLE):
    """The config's model, state and a synthetic batch of its shapes (this rank's share of the global
    batch); returns (one_step, context dict)."""
    plan = make_plan(config)
    if plan.total_steps is None:
        plan = make_plan(config, dataset_sizes={d.name: 10_000 for d in plan.datasets})
    mask_plan = build_mask_plan(config, plan)
    model = build_model(config, plan, quiet=True, world=world)
    state = init_state(model)
    step, traces = make_train_step(model, step_settings(config, plan), mean_across=mean_across(world))
    k, size = config.training.accumulation_steps, config.data.image_size
    b = per_rank_batch(world, config.data.batch_size)
    rng = np.random.default_rng(world.rank)
    count, local = plan.local_crops
    host = [Batch(images=rng.standard_normal((b, size, size, 3), dtype=np.float32),
                  images_view2=rng.standard_normal((b, size, size, 3), dtype=np.float32),
                  local_crops=rng.standard_normal((b, count, local, local, 3), dtype=np.float32) if count else None,
                  labels=np.zeros(b, np.int32), dataset_ids=np.zeros(b, np.int32),
                  masks=shard_masks(world, sample_masks(mask_plan, config.data.batch_size, 0, i, 0)))
            for i in range(k)]
    batch = device_batch(host, plan.two_views)
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = step(holder["state"], batch)
        mx.eval(holder["state"], metrics)

    spec = plan.encoder
    flops = train_flops_per_image(
        grid_tokens=plan.grid[0] * plan.grid[1], patch_size=spec.patch_size, encoder_width=spec.embed_dim,
        encoder_depth=spec.depth, predictor_width=config.model.predictor.embed_dim,
        predictor_depth=config.model.predictor.depth, context_tokens=mask_plan.num_context,
        num_blocks=config.masking.num_masks, block_tokens=mask_plan.num_target, views=2 if plan.two_views else 1,
        target_views=target_view_count(config),
        shared_context=config.model.predictor.shared_context, local_crops=count,
        local_tokens=(local // spec.patch_size) ** 2)
    return one_step, dict(plan=plan, model=model, holder=holder, batch=batch, traces=traces, flops=flops,
                          images=b * k, step_settings=step_settings(config, plan))


def _peak_of(step) -> float:
    """Peak memory (bytes) of one more call of an already compiled step."""
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    step()
    return mx.get_peak_memory()


def measure(config, *, repeats: int, warmup: int, breakdown: bool = False, compare_kernels: bool = False,
            compare_config=None, world=SINGLE) -> dict:
    """Time the config's train step. compare_kernels: also the same step with MLX's own ops, in turn;
    compare_config: also another config's step (e.g. one key changed), in turn."""
    one_step, c = prepare(config, world)
    mx.reset_peak_memory()
    comparison = None
    if compare_kernels:
        # The same step traced with MLX's own ops (the wrappers decide at trace time), timed in turn.
        step_mlx, _ = make_train_step(c["model"], c["step_settings"])
        mlx_holder = {"state": c["holder"]["state"]}

        def one_step_mlx():
            with kernels.disabled():
                mlx_holder["state"], metrics = step_mlx(mlx_holder["state"], c["batch"])
            mx.eval(mlx_holder["state"], metrics)

        timings = interleaved({"kernels": one_step, "mlx_ops": one_step_mlx}, warmup=warmup, repeats=repeats)
        timing = timings["kernels"]
        comparison = {"mlx_ops_timing": timings["mlx_ops"],
                      "speedup": timings["mlx_ops"]["median_s"] / timings["kernels"]["median_s"]}
    elif compare_config is not None:
        other_step, other = prepare(compare_config, world)
        timings = interleaved({"config": one_step, "compared": other_step}, warmup=warmup, repeats=repeats)
        timing = timings["config"]
        other_ips = other["images"] / timings["compared"]["median_s"]
        comparison = {"timing": timings["compared"], "images_per_s": other_ips,
                      "flops_per_image": other["flops"], "achieved_gflops": other["flops"] * other_ips / 1e9,
                      "speedup": timings["config"]["median_s"] / timings["compared"]["median_s"]}
    else:
        timing = time_median(one_step, warmup=warmup, repeats=repeats)
    peak = mx.get_peak_memory()
    if comparison is not None:
        # interleaved steps share one peak counter: one more step of each, alone, gives each its own peak
        peak = _peak_of(one_step)
        if compare_config is not None:
            comparison["peak_memory_gb"] = _peak_of(other_step) / 1e9
    images, flops = c["images"], c["flops"]
    ips = images / timing["median_s"]
    row = {"timing": timing, "images_per_step": images, "images_per_s": ips, "flops_per_image": flops,
           "achieved_gflops": flops * ips / 1e9, "peak_memory_gb": peak / 1e9,
           "traces": c["traces"].count, "images_per_epoch": c["plan"].images_per_epoch}
    row.update(_scale_out(world, c["holder"]["state"]["params"], timing["median_s"], ips, warmup=warmup,
                          repeats=repeats))
    if comparison and compare_kernels:
        row["mlx_ops"] = {**comparison, "images_per_s": images / comparison["mlx_ops_timing"]["median_s"]}
    elif comparison:
        row["compared"] = comparison
    if breakdown:
        row["breakdown"] = measure_breakdown(
            c["model"], c["holder"]["state"], c["batch"], c["step_settings"], two_views=c["plan"].two_views,
            accumulation=config.training.accumulation_steps, recompute=config.training.use_gradient_checkpointing,
            step_s=timing["median_s"], repeats=repeats)
    return row


def _scale_out(world, params, step_s: float, per_rank_ips: float, *, warmup: int, repeats: int) -> dict:
    """Global img/s and the all-reduce alone: the gradient buckets (zeros shaped like the parameters)
    averaged across the ranks by the same compiled function the step uses."""
    grads = {name: mx.zeros_like(v) for name, v in tree_flatten(params)}
    out = {"world_size": world.size, "per_rank_images_per_s": per_rank_ips,
           "global_images_per_s": per_rank_ips * world.size, "gradient_mb": sum(v.nbytes for v in grads.values()) / 1e6,
           "allreduce_buckets": bucket_count(grads, world.bucket_bytes) if world.is_distributed else 0,
           "allreduce_s": 0.0, "allreduce_share": 0.0}
    if world.is_distributed:
        reduce = mx.compile(mean_across(world))
        t = time_median(lambda: mx.eval(reduce(grads)), warmup=warmup, repeats=repeats)
        out.update(allreduce_s=t["median_s"], allreduce_timing=t, allreduce_share=t["median_s"] / step_s)
    return out


def _free_port(n: int) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1] if s.getsockname()[1] + n < 65536 else 32323


def _relaunch(n: int, argv: list[str]) -> int:
    """This script again under `mlx.launch -n N --backend ring` on localhost."""
    launcher = Path(sys.executable).parent / "mlx.launch"
    cmd = [str(launcher), "-n", str(n), "--backend", "ring", "--starting-port", str(_free_port(n)),
           "--python", sys.executable, "--", str(Path(__file__).resolve()), *argv]
    print("running: " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Train-step throughput of a config.")
    p.add_argument("config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-recompute-variant", action="store_true", help="measure only the config as written")
    p.add_argument("--breakdown", action="store_true", help="also time each phase and op class")
    p.add_argument("--compare-kernels", action="store_true",
                   help="also time the step with MLX's own ops instead of the C++ kernels, interleaved")
    p.add_argument("--compare", dest="compare", action="append", default=[], metavar="KEY=VALUE",
                   help="also time the config with these overrides (repeatable), interleaved with it")
    p.add_argument("--out", default=None)
    p.add_argument("--world", type=int, default=1,
                   help="data-parallel ranks on this machine (starts mlx.launch -n N); under mlx.launch: its ranks")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    if args.world > 1 and "MLX_RANK" not in os.environ:
        return _relaunch(args.world, argv)
    try:
        loaded = load_config(args.config, args.overrides)
        world = init_world(loaded.config.distributed)
        per_rank_batch(world, loaded.config.data.batch_size)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not world.is_main:                    # rank 0 prints and writes the JSON
        sys.stdout = open(os.devnull, "w")
    info = machine()
    print_machine(info)
    gemm = gemm_gflops()
    print("fp32 GEMM in this process: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in gemm.items() if k != "best"))
    name = Path(args.config).stem
    variants = [False, True] if not args.no_recompute_variant else [loaded.config.training.use_gradient_checkpointing]
    rows = {}
    for recompute in variants:
        flag = [f"training.use_gradient_checkpointing={str(recompute).lower()}"]
        cfg = load_config(args.config, args.overrides + flag).config
        other = load_config(args.config, args.overrides + args.compare + flag).config if args.compare else None
        rows["recompute" if recompute else "no_recompute"] = measure(cfg, repeats=args.repeats, warmup=args.warmup,
                                                                     breakdown=args.breakdown,
                                                                     compare_kernels=args.compare_kernels,
                                                                     compare_config=other, world=world)
    claim = SEED_CLAIMS_MIN.get(name)
    print(f"\n{name}: batch {loaded.config.data.batch_size} x {loaded.config.training.accumulation_steps}, "
          f"image {loaded.config.data.image_size}, {loaded.config.model.encoder_type}")
    print(f"{'variant':14} {'img/s':>8} {'ms/step':>9} {'GFLOP/img':>10} {'GFLOP/s':>8} {'MFU':>6} {'peak GB':>8} "
          f"{'min/epoch':>10} {'seed claim':>11} {'ratio':>7}")
    for variant, r in rows.items():
        epoch_min = r["images_per_epoch"] / r["global_images_per_s"] / 60 if r["images_per_epoch"] else float("nan")
        r["minutes_per_epoch"] = epoch_min
        claim_txt, ratio = "-", float("nan")
        if claim:
            claim_txt = f"{claim[0]}-{claim[1]} min"
            ratio = epoch_min / (sum(claim) / 2)
        r["seed_claim_minutes"], r["measured_over_claim"] = claim, ratio
        r["mfu"] = r["achieved_gflops"] / gemm["best"]
        print(f"{variant:14} {r['images_per_s']:8.2f} {r['timing']['median_s'] * 1e3:9.1f} "
              f"{r['flops_per_image'] / 1e9:10.2f} {r['achieved_gflops']:8.1f} {r['mfu']:6.2f} {r['peak_memory_gb']:8.2f} "
              f"{epoch_min:10.1f} {claim_txt:>11} {ratio:7.1f}")
    for variant, r in rows.items():
        print(f"{variant}: {r['world_size']} rank(s) ({world.describe()}): {r['per_rank_images_per_s']:.2f} img/s "
              f"per rank, {r['global_images_per_s']:.2f} img/s global; gradient all-reduce "
              f"{r['allreduce_s'] * 1e3:.1f} ms per step ({r['allreduce_share']:.0%} of the step) over "
              f"{r['allreduce_buckets']} bucket(s) of {r['gradient_mb']:.1f} MB of gradients")
    if claim:
        print("(seed claims were projections for an M1 Max GPU; a ratio > 1 means slower than claimed)")
    print(f"(MFU: matmul FLOP/s of the step over the best GEMM rate above, {gemm['best']:.1f} GFLOP/s)")
    for variant, r in rows.items():
        if "mlx_ops" in r:
            print(f"{variant}: with MLX's own ops {r['mlx_ops']['images_per_s']:.2f} img/s, with the C++ kernels "
                  f"{r['images_per_s']:.2f} img/s (x{r['mlx_ops']['speedup']:.2f}, timed in turn)")
    for variant, r in rows.items():
        if "compared" in r:
            o = r["compared"]
            print(f"{variant}: with {' '.join(args.compare)} {o['images_per_s']:.2f} img/s "
                  f"({o['flops_per_image'] / 1e9:.2f} GFLOP/img, MFU {o['achieved_gflops'] / gemm['best']:.2f}, "
                  f"peak {o['peak_memory_gb']:.2f} GB) "
                  f"against {r['images_per_s']:.2f} img/s as written (x{o['speedup']:.2f}, timed in turn)")
    for variant, r in rows.items():
        if "breakdown" in r:
            print(f"\nbreakdown, {variant}:")
            print_breakdown(r["breakdown"])
    if not world.is_main:
        return 0
    write_json(args.out or RESULTS / f"throughput_{name}.json", {"world": world.describe(), "machine": info,
                                                                 "config": args.config, "overrides": args.overrides,
                                                                 "compare": args.compare, "gemm_gflops": gemm,
                                                                 "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
