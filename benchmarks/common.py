"""Shared benchmark plumbing: machine description, timing with warm-up, medians, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import hjepa_mlx  # noqa: F401  (loads the optimized BLAS before mlx.core)
from hjepa_mlx import blas

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import mlx.core as mx

    from hjepa_mlx import allocator, kernels

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "mlx": mx.__version__, "device": str(mx.default_device()), "blas": blas.describe(measure=False),
            "kernels": kernels.describe(), "allocator": allocator.describe()}


def print_machine(info: dict) -> None:
    print(f"machine: {info['cpu']} x{info['cpu_count']}, {info['platform']}")
    print(f"MLX {info['mlx']} on {info['device']}; {info['blas']}")
    print(info["kernels"])
    print(info["allocator"])


def time_median(fn: Callable[[], object], *, warmup: int = 2, repeats: int = 5) -> dict:
    """Median and spread of wall time (seconds) of fn() after warm-up; fn must block until done."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def write_json(path: str | Path, payload: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {path}")
    return path
