"""training.recompute: the per-block memory estimate against MLX's measured peak, the planner's choice,
and the config wiring (all: every block; fit: as many as the memory limit needs)."""

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from hjepa_mlx.recompute import Stack, choose_recomputed, estimated_bytes, parameter_bytes
from hjepa_mlx.models.vit import ViTEncoder

QUICKSTART = Path(__file__).resolve().parents[1] / "configs/quickstart.yaml"


def _peak_bytes(use_checkpoint, images, depth=4):
    mx.random.seed(0)
    enc = ViTEncoder(patch_size=4, image_size=32, embed_dim=64, depth=depth, num_heads=4, use_checkpoint=use_checkpoint)
    mx.eval(enc.parameters())

    def loss(model, x):
        return (model(x) ** 2).mean()
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    value, grads = nn.value_and_grad(enc, lambda x: loss(enc, x))(images)
    mx.eval(value, grads)
    return mx.get_peak_memory() - base


@pytest.mark.parametrize("kernels_on", [True, False])
def test_estimate_tracks_the_measured_activation_memory_per_block(kernels_on):
    """With the C++ kernels (attention keeps no map) and with MLX's ops (it keeps two)."""
    import contextlib

    from hjepa_mlx import kernels
    images = mx.array(np.random.default_rng(0).standard_normal((32, 32, 32, 3)).astype(np.float32))
    # 8 blocks, of which the first 0 / 2 / 4 are recomputed: while the stored activations decide the peak
    # (past ~6 of 8 here the backward's one-block transient does), every recomputed block lowers it
    with contextlib.nullcontext() if kernels_on else kernels.disabled():
        peaks = {n: _peak_bytes(n, images, depth=8) for n in (0, 2, 4)}
        maps = not kernels.attention_applies(images)
    assert peaks[0] > peaks[2] > peaks[4], peaks
    measured_per_block = (peaks[0] - peaks[4]) / 4
    s = Stack("encoder", 8, sequences=32, tokens=64, width=64, hidden=256, heads=4,
              attention_map=maps)
    estimated_per_block = s.block_bytes - s.input_bytes
    # an estimate for a choice: within 1.5x of what MLX measures (fitted to 1.0 here)
    assert 1 / 1.5 <= estimated_per_block / measured_per_block <= 1.5, (estimated_per_block, measured_per_block)


def _stacks():
    return [Stack("encoder", 12, 32, 63, 384, 1536, 6), Stack("predictor", 6, 64, 97, 384, 1536, 6)]


def test_choice_is_none_when_everything_fits_and_all_when_nothing_does():
    stacks, fixed = _stacks(), parameter_bytes(_stacks())
    none = {s.name: 0 for s in stacks}
    assert choose_recomputed(stacks, estimated_bytes(stacks, none, fixed), fixed) == none
    assert choose_recomputed(stacks, fixed / 2, fixed) == {s.name: s.depth for s in stacks}


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_choice_fits_the_limit_with_the_fewest_blocks(fraction):
    stacks, fixed = _stacks(), parameter_bytes(_stacks())
    everything = estimated_bytes(stacks, {}, fixed)
    least = estimated_bytes(stacks, {s.name: s.depth for s in stacks}, fixed)
    limit = least + fraction * (everything - least)
    chosen = choose_recomputed(stacks, limit, fixed)
    assert estimated_bytes(stacks, chosen, fixed) <= limit
    # minimal: recomputing one block fewer anywhere no longer fits
    assert 0 < sum(chosen.values()) < sum(s.depth for s in stacks)
    for name, n in chosen.items():
        if n:
            assert estimated_bytes(stacks, {**chosen, name: n - 1}, fixed) > limit, (name, chosen)


def test_config_all_recomputes_every_block_and_fit_none_on_a_roomy_machine(monkeypatch):
    from hjepa_mlx import build
    from hjepa_mlx.config import load_config
    from hjepa_mlx.config.plan import make_plan

    def choice(*overrides):
        config = load_config(QUICKSTART,
                             overrides=["training.use_gradient_checkpointing=true", *overrides]).config
        return build.recompute_choice(config, make_plan(config))

    enc, pred, line = choice()
    assert (enc, pred) == (12, 2) and "training.recompute: all" in line
    monkeypatch.setattr(build, "device_memory_bytes", lambda: 1e12)
    assert choice("training.recompute=fit")[:2] == (0, 0)
    monkeypatch.setattr(build, "device_memory_bytes", lambda: 1e6)
    enc, pred, line = choice("training.recompute=fit")
    assert (enc, pred) == (12, 2) and "does NOT fit" in line
    config = load_config(QUICKSTART).config        # checkpointing off: nothing recomputed
    assert build.recompute_choice(config, make_plan(config)) == (False, False, None)
