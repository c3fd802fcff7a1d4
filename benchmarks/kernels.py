"""ns per element of the C++ CPU kernels against MLX's own ops (plain and mx.compile'd), ViT-S shapes.

python benchmarks/kernels.py [--batch 16] [--repeats 7] [--warmup 2] [--out PATH]

GELU on the MLP hidden activation (B*196 x 1536), softmax on the attention scores (B*6*196 x 196),
LayerNorm on the tokens (B*196 x 384, with weight and bias). Forward alone, and forward + backward
(mx.vjp with a fixed random cotangent; for LayerNorm the weight and bias gradients too). Each variant
is timed as a whole evaluated graph, median of repeats after warm-up; ns/element = time / elements
of the input. Prints the machine and kernel build, writes JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, time_median, write_json  # noqa: E402  (loads BLAS first)

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

from hjepa_mlx import kernels as K  # noqa: E402

EPS = 1e-6


def ops():
    """{kernel: {path: fn(*inputs)}} for the three kernels; paths: mlx, mlx_compiled, cpp."""
    table = {
        "gelu": {"mlx": nn.gelu, "mlx_compiled": mx.compile(nn.gelu)},
        "softmax": {"mlx": lambda x: mx.softmax(x, axis=-1), "mlx_compiled": mx.compile(lambda x: mx.softmax(x, axis=-1))},
        "layer_norm": {"mlx": lambda x, w, b: mx.fast.layer_norm(x, w, b, EPS),
                       "mlx_compiled": mx.compile(lambda x, w, b: mx.fast.layer_norm(x, w, b, EPS))},
    }
    if K.available():
        table["gelu"]["cpp"] = K._EXT.gelu
        table["softmax"]["cpp"] = K._EXT.softmax
        table["layer_norm"]["cpp"] = lambda x, w, b: K._EXT.layer_norm(x, w, b, EPS)
    return table


def measure(batch: int, repeats: int, warmup: int) -> list[dict]:
    key = mx.random.key(0)
    n = batch * 196
    x_gelu = mx.random.normal((n, 1536), key=key)
    x_soft = 4 * mx.random.normal((batch * 6 * 196, 196), key=key)
    x_ln = mx.random.normal((n, 384), key=key)
    w, b = 1 + 0.1 * mx.random.normal((384,), key=key), 0.1 * mx.random.normal((384,), key=key)
    inputs = {"gelu": [x_gelu], "softmax": [x_soft], "layer_norm": [x_ln, w, b]}
    cots = {k: mx.random.normal(v[0].shape, key=mx.random.key(1)) for k, v in inputs.items()}
    mx.eval(list(inputs.values()), list(cots.values()))
    rows = []
    for kernel, paths in ops().items():
        args = inputs[kernel]
        elements = args[0].size
        for path, fn in paths.items():
            for mode in ("fwd", "fwd+bwd"):
                if mode == "fwd":
                    def run(fn=fn, args=args):
                        mx.eval(fn(*args))
                else:
                    def run(fn=fn, args=args, cot=cots[kernel]):
                        mx.eval(mx.vjp(fn, args, [cot]))
                t = time_median(run, warmup=warmup, repeats=repeats)
                rows.append({"kernel": kernel, "path": path, "mode": mode, "shape": list(args[0].shape),
                             "elements": elements, "timing": t, "ns_per_element": t["median_s"] / elements * 1e9})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="C++ CPU kernels vs MLX ops, ns per element.")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    info = machine()
    print_machine(info)
    with mx.stream(mx.cpu):
        rows = measure(args.batch, args.repeats, args.warmup)
    print(f"\n{'kernel':11} {'shape':>14} {'mode':8} {'path':13} {'ns/elem':>8} {'ms':>8} {'vs mlx':>7}")
    base = {(r["kernel"], r["mode"]): r["ns_per_element"] for r in rows if r["path"] == "mlx"}
    for r in rows:
        speedup = base[(r["kernel"], r["mode"])] / r["ns_per_element"]
        r["speedup_vs_mlx"] = speedup
        print(f"{r['kernel']:11} {'x'.join(map(str, r['shape'])):>14} {r['mode']:8} {r['path']:13} "
              f"{r['ns_per_element']:8.2f} {r['timing']['median_s'] * 1e3:8.2f} {speedup:6.1f}x")
    write_json(args.out or RESULTS / "kernels.json", {"machine": info, "batch": args.batch, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
