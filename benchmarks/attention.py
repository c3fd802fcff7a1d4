"""Fused (`mx.fast.scaled_dot_product_attention`) vs reference attention for ViT-T/S/B head shapes.

python benchmarks/attention.py [--batch 8] [--quick] [--repeats 5] [--out benchmarks/results/attention.json]

Forward and forward+backward, median over repetitions after warm-up, peak memory, max |difference|
between the two paths. On the MLX CPU backend the fused kernel is not fused, so both are expected to
run at the same speed there; the difference shows on Apple GPUs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, time_median, write_json  # noqa: E402  (loads BLAS first)

import mlx.core as mx  # noqa: E402

from hjepa_mlx.models.attention import reference_attention  # noqa: E402

MODELS = {"ViT-T": 3, "ViT-S": 6, "ViT-B": 12}   # heads; head dim 64
SEQ_LENS = (64, 196, 256, 576, 1024)


def fused(q, k, v, scale):
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)


def bench(fn, q, k, v, scale, repeats):
    fwd = mx.compile(lambda a, b, c: fn(a, b, c, scale))
    grad = mx.compile(mx.grad(lambda a, b, c: fn(a, b, c, scale).sum(), argnums=(0, 1, 2)))
    mx.reset_peak_memory()
    t_fwd = time_median(lambda: mx.eval(fwd(q, k, v)), warmup=1, repeats=repeats)
    peak_fwd = mx.get_peak_memory()
    mx.reset_peak_memory()
    t_bwd = time_median(lambda: mx.eval(grad(q, k, v)), warmup=1, repeats=repeats)
    return {"forward": t_fwd, "forward_backward": t_bwd, "peak_memory_mb_forward": peak_fwd / 2**20,
            "peak_memory_mb_forward_backward": mx.get_peak_memory() / 2**20}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="one small shape, two repetitions (seconds)")
    p.add_argument("--out", default=str(RESULTS / "attention.json"))
    args = p.parse_args(argv)
    info = machine()
    print_machine(info)
    on_cpu = mx.default_device() == mx.cpu
    if on_cpu:
        print("note: on the MLX CPU backend scaled_dot_product_attention is not a fused kernel; expect equal speed")
    models = {"ViT-T": 3} if args.quick else MODELS
    lens = (64,) if args.quick else SEQ_LENS
    batch = 2 if args.quick else args.batch
    repeats = 2 if args.quick else args.repeats
    rows = []
    print(f"{'model':6} {'seq':>5} {'path':10} {'fwd ms':>9} {'fwd+bwd ms':>11} {'peak MB':>9} {'max|diff|':>10}")
    for name, heads in models.items():
        for n in lens:
            key = mx.random.key(n)
            q, k, v = (mx.random.normal((batch, heads, n, 64), key=kk) for kk in mx.random.split(key, 3))
            scale = 64 ** -0.5
            diff = mx.abs(fused(q, k, v, scale) - reference_attention(q, k, v, scale)).max().item()
            for path, fn in (("fused", fused), ("reference", reference_attention)):
                r = bench(fn, q, k, v, scale, repeats)
                row = {"model": name, "heads": heads, "seq_len": n, "batch": batch, "path": path,
                       "max_abs_diff": diff, **r}
                rows.append(row)
                print(f"{name:6} {n:5d} {path:10} {r['forward']['median_s'] * 1e3:9.2f} "
                      f"{r['forward_backward']['median_s'] * 1e3:11.2f} {r['peak_memory_mb_forward_backward']:9.1f} "
                      f"{diff:10.2e}")
    write_json(args.out, {"machine": info, "cpu_backend_not_fused": on_cpu, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
