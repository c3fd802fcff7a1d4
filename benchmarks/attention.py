import hjepa_mlx  # noqa: F401  (first: loads the optimized BLAS before anything imports mlx.core)

# Fused (mx.fast.scaled_dot_product_attention) vs reference (softmax(q k^T * scale) v) attention, and on
# the CPU the C++ kernel of hjepa_mlx.kernels (what the model runs there): it takes the packed qkv projection
# (B, N, 3, H, hd) and returns (B, N, H * hd), so its time includes what the others leave out (the head
# layout), and its gradient is the packed one.
#
#   python benchmarks/attention.py [--batch B] [--repeats R] [--quick] [--out PATH]
#
# ViT-T/S/B head shapes (3 / 6 / 12 heads of width 64) over sequence lengths 64, 196, 256, 576, 1024;
# forward, and forward + backward (gradients for q, k, v). Median wall time over repetitions after
# warm-up, with the min-max spread; peak memory of one call (mx.reset_peak_memory / mx.get_peak_memory)
# above what was allocated before it; max |fused - reference| of the outputs (and of the gradients).
# A table on stdout, JSON to --out. --quick: one small shape, two repetitions (a smoke run for the tests).

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
from common import RESULTS, machine, time_median, write_json  # noqa: E402

from hjepa_mlx import blas, kernels  # noqa: E402
from hjepa_mlx.models.attention import fused_attention, reference_attention  # noqa: E402

MODELS = (("ViT-T", 3), ("ViT-S", 6), ("ViT-B", 12))
HEAD_DIM = 64
SEQ_LENS = (64, 196, 256, 576, 1024)
PATHS = {"fused": fused_attention, "reference": reference_attention}


def _forward(fn, scale):
    return lambda q, k, v: fn(q, k, v, scale)


def _forward_backward(fn, scale, cotangent):
    # value and gradients for q, k, v of <attention(q, k, v), cotangent>: one forward + one backward
    return mx.value_and_grad(lambda q, k, v: (fn(q, k, v, scale) * cotangent).sum(), argnums=(0, 1, 2))


def _peak_bytes(call) -> int:
    """Peak memory allocated during one call, above what was allocated before it."""
    mx.synchronize()
    before = mx.get_active_memory()
    mx.reset_peak_memory()
    call()
    return max(0, mx.get_peak_memory() - before)


def _max_diff(a, b) -> float:
    if isinstance(a, (tuple, list)):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    return float(mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).max())


def _max_abs(a) -> float:
    if isinstance(a, (tuple, list)):
        return max(_max_abs(x) for x in a)
    return float(mx.abs(a.astype(mx.float32)).max())


def bench_case(name, heads, seq_len, batch, mode, warmup, repeats) -> dict:
    shape = (batch, heads, seq_len, HEAD_DIM)
    keys = mx.random.split(mx.random.key(seq_len * 100 + heads), 4)
    q, k, v, cot = (mx.random.normal(shape, key=key) for key in keys)
    mx.eval(q, k, v, cot)
    scale = HEAD_DIM ** -0.5
    row = {"model": name, "heads": heads, "head_dim": HEAD_DIM, "seq_len": seq_len, "batch": batch, "pass": mode}
    outputs = {}
    for path, fn in PATHS.items():
        f = _forward(fn, scale) if mode == "forward" else _forward_backward(fn, scale, cot)

        def call(f=f):
            out = f(q, k, v)
            mx.eval(out)
            return out
        timing = time_median(call, warmup=warmup, repeats=repeats)
        timing["peak_memory_bytes"] = _peak_bytes(call)
        row[path] = timing
        outputs[path] = call()
    if kernels.attention_applies(q):
        # the same q, k, v packed as the qkv projection makes them; the output back in head layout
        qkv = mx.stack([q, k, v], axis=1).transpose(0, 3, 1, 2, 4).reshape(batch, seq_len, -1)
        cot_packed = cot.transpose(0, 2, 1, 3).reshape(batch, seq_len, -1)
        mx.eval(qkv, cot_packed)

        def kernel(x):
            return kernels.attention(x, heads, scale)
        if mode == "forward":
            f = kernel
        else:
            f = mx.value_and_grad(lambda x: (kernel(x) * cot_packed).sum())

        def call_kernel():
            out = f(qkv)
            mx.eval(out)
            return out
        timing = time_median(call_kernel, warmup=warmup, repeats=repeats)
        timing["peak_memory_bytes"] = _peak_bytes(call_kernel)
        row["kernel"] = timing
        out = call_kernel()
        if mode == "forward":
            out = out.reshape(batch, seq_len, heads, HEAD_DIM).transpose(0, 2, 1, 3)
        else:   # (value, dqkv) -> (value, (dq, dk, dv)) in head layout
            d = out[1].reshape(batch, seq_len, 3, heads, HEAD_DIM).transpose(2, 0, 3, 1, 4)
            out = (out[0], (d[0], d[1], d[2]))
        row["kernel_speedup"] = row["reference"]["median_s"] / timing["median_s"]
        row["kernel_max_rel_diff"] = _max_diff(out, outputs["reference"]) / max(_max_abs(outputs["reference"]), 1e-30)
    row["speedup"] = row["reference"]["median_s"] / row["fused"]["median_s"]
    row["max_abs_diff"] = _max_diff(outputs["fused"], outputs["reference"])
    # On the CPU the fused path uses the C++ softmax (hjepa_mlx.kernels): equal up to float32 rounding,
    # so the difference is judged relative to the size of the outputs (gradients reach ~10s).
    row["max_rel_diff"] = row["max_abs_diff"] / max(_max_abs(outputs["reference"]), 1e-30)
    return row


def _spread(t) -> str:
    return f"{t['median_s'] * 1e3:9.2f} ({t['min_s'] * 1e3:.1f}-{t['max_s'] * 1e3:.1f})"


def print_table(rows) -> None:
    with_kernel = any("kernel" in r for r in rows)
    head = (f"{'model':6} {'heads':>5} {'N':>5} {'pass':8} {'fused ms (min-max)':>26} {'reference ms (min-max)':>26} "
            f"{'ref/fused':>9} {'peak MB f/r':>13} {'max|diff|':>9}")
    if with_kernel:
        head += f" {'C++ kernel ms (min-max)':>26} {'ref/kernel':>10} {'rel diff':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        peak = f"{r['fused']['peak_memory_bytes'] / 2**20:.1f}/{r['reference']['peak_memory_bytes'] / 2**20:.1f}"
        line = (f"{r['model']:6} {r['heads']:5d} {r['seq_len']:5d} {r['pass']:8} {_spread(r['fused']):>26} "
                f"{_spread(r['reference']):>26} {r['speedup']:9.2f} {peak:>13} {r['max_abs_diff']:9.1e}")
        if "kernel" in r:
            line += f" {_spread(r['kernel']):>26} {r['kernel_speedup']:10.2f} {r['kernel_max_rel_diff']:8.1e}"
        print(line)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="fused vs reference attention: time, peak memory, max difference")
    p.add_argument("--batch", type=int, default=4, help="images per call (default 4)")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per case, after warm-up (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    p.add_argument("--quick", action="store_true", help="a few-seconds smoke run: one small shape, 2 repetitions")
    p.add_argument("--out", default=str(RESULTS / "attention.json"), help="JSON output path")
    args = p.parse_args(argv)

    info = machine()
    print(blas.describe())
    print(f"device: {mx.default_device()}; MLX {mx.__version__}; {info['cpu']} x{info['cpu_count']}")
    on_cpu = mx.default_device().type == mx.cpu
    if on_cpu:
        print("note: on the MLX CPU backend mx.fast.scaled_dot_product_attention is not fused (it runs the same "
              "matmul and softmax ops as the reference); the fused path here is the reference formula with the "
              "C++ softmax of hjepa_mlx.kernels when they are built")
        print(info["kernels"])
    if args.quick:
        models, seq_lens, batch, warmup, repeats = MODELS[:1], (64,), min(args.batch, 2), 1, 2
    else:
        models, seq_lens, batch, warmup, repeats = MODELS, SEQ_LENS, args.batch, args.warmup, args.repeats
    print(f"batch {batch}, head dim {HEAD_DIM}, warm-up {warmup}, repetitions {repeats}, fp32\n")

    bench_case("warm-up", 1, 16, 1, "fwd+bwd", 1, 1)   # first-call costs (thread pools, allocator) off the table
    rows = []
    for name, heads in models:
        for n in seq_lens:
            for mode in ("forward", "fwd+bwd"):
                rows.append(bench_case(name, heads, n, batch, mode, warmup, repeats))
    print_table(rows)
    write_json(args.out, {"machine": info, "blas": blas.describe(measure=False), "device": str(mx.default_device()),
                          "mlx": mx.__version__, "fused_is_fused": not on_cpu, "quick": args.quick,
                          "settings": {"batch": batch, "head_dim": HEAD_DIM, "warmup": warmup, "repeats": repeats,
                                       "dtype": "float32"},
                          "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
