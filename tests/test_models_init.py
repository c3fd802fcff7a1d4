"""I-JEPA weight initialisation: the statistics each parameter must have after construction."""

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from hjepa_mlx.models.init import INIT_STD, ijepa_init, trunc_normal
from hjepa_mlx.models.predictor import Predictor
from hjepa_mlx.models.vit import ViTEncoder

DEPTH = 3


def _encoder():
    return ViTEncoder(patch_size=4, image_size=16, embed_dim=96, depth=DEPTH, num_heads=2)


def _predictor():
    return Predictor(grid=(4, 4), encoder_dim=96, predictor_dim=96, depth=DEPTH, num_heads=2)


def _expected_std(name: str) -> float:
    """0.02, divided by sqrt(2 l) for the residual output projections of block l (1-based)."""
    parts = name.split(".")
    if parts[0] == "blocks" and (parts[2:4] == ["attn", "proj"] or parts[2:4] == ["mlp", "fc2"]):
        return INIT_STD / math.sqrt(2.0 * (int(parts[1]) + 1))
    return INIT_STD


@pytest.mark.parametrize("build", [_encoder, _predictor], ids=["encoder", "predictor"])
def test_weights_follow_ijepa_init(build):
    mx.random.seed(0)
    params = dict(tree_flatten(build().parameters()))
    checked = 0
    for name, value in params.items():
        v = np.array(value, dtype=np.float64)
        if name.endswith(".bias"):
            np.testing.assert_array_equal(v, 0.0, err_msg=name)
        elif "norm" in name and name.endswith(".weight"):
            np.testing.assert_array_equal(v, 1.0, err_msg=name)
        elif name.endswith(".weight"):
            # >= 96*96 samples: the sample std is within ~2 % of the true one (10 % is > 5 sigma)
            assert abs(v.std() / _expected_std(name) - 1) < 0.1, (name, v.std(), _expected_std(name))
            assert abs(v.mean()) < 0.1 * _expected_std(name), name
            checked += 1
    assert checked >= 4 * DEPTH + 1


def test_output_projections_shrink_with_depth():
    mx.random.seed(1)
    blocks = _encoder().blocks
    stds = [np.array(b.mlp.fc2.weight).std() for b in blocks]
    ratios = [stds[0] / s for s in stds]
    np.testing.assert_allclose(ratios, [math.sqrt(l) for l in range(1, DEPTH + 1)], rtol=0.05)


def test_init_follows_the_seed():
    mx.random.seed(3)
    a = tree_flatten(_encoder().parameters())
    mx.random.seed(3)
    b = tree_flatten(_encoder().parameters())
    mx.random.seed(4)
    c = tree_flatten(_encoder().parameters())
    for (name, x), (_, y), (_, z) in zip(a, b, c):
        np.testing.assert_array_equal(np.array(x), np.array(y), err_msg=name)
    assert any(not np.array_equal(np.array(x), np.array(z)) for (_, x), (_, z) in zip(a, c) if x.size > 96)


def test_trunc_normal_is_finite_and_bounded_at_any_std():
    mx.random.seed(5)
    x = np.array(trunc_normal((1000, 1000), std=1.5))
    assert np.isfinite(x).all() and np.abs(x).max() <= 2.0
    y = np.array(trunc_normal((1000, 1000)))
    assert abs(y.std() / INIT_STD - 1) < 0.01


def test_reinit_is_in_place_and_returns_the_module():
    mx.random.seed(6)
    enc = _encoder()
    enc.blocks[0].attn.qkv.bias = mx.ones_like(enc.blocks[0].attn.qkv.bias)
    assert ijepa_init(enc) is enc
    assert float(mx.abs(enc.blocks[0].attn.qkv.bias).max()) == 0.0
