"""glibc keeps MLX's freed CPU buffers: a repeated large temporary stops page-faulting (and HJEPA_MALLOC=off
restores glibc's defaults, under which it faults every time)."""

import os
import subprocess
import sys

import pytest

# In a fresh process: 20 steps that each make and drop a 48 MiB temporary (above glibc's largest mmap
# threshold); prints the minor page faults of the last 10.
_PROBE = """
import resource
import hjepa_mlx
from hjepa_mlx import allocator
import mlx.core as mx
x = mx.ones((12 * 2 ** 20,))
def step():
    y = x * 2.0
    mx.eval(y)
    del y
for _ in range(10):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(allocator.describe())
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

PAGES_PER_TEMPORARY = 48 * 2 ** 20 // 4096


def _probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != "HJEPA_MALLOC"}
    if env_value is not None:
        env["HJEPA_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line, faults = out.stdout.strip().splitlines()[-2:]
    return line, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_buffers_are_reused_without_page_faults():
    line, kept = _probe(None)
    assert line.startswith("allocator: glibc malloc keeps freed buffers"), line
    assert kept < PAGES_PER_TEMPORARY, f"{kept} page faults in 10 steps: freed memory was returned to the OS"
    line, default = _probe("off")
    assert "HJEPA_MALLOC=off" in line
    # glibc's defaults map and unmap the temporary every step: a fault per page (or per huge page, with
    # transparent huge pages) per step - far more than with the freed memory kept
    assert default > 10 * max(kept, 10), (default, kept)
