"""EMA of the target encoder as a pure function on pytrees."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from hjepa_mlx.models.ema import ema_update


def _trees():
    rng = np.random.default_rng(0)
    def tree():
        return {"a": mx.array(rng.standard_normal((3, 2)).astype(np.float32)),
                "blocks": [{"w": mx.array(rng.standard_normal(4).astype(np.float32))}]}
    return tree(), tree()


def _flat(tree):
    return {k: np.array(v) for k, v in tree_flatten(tree)}


@pytest.mark.parametrize("momentum", [1.0, mx.array(1.0)])
def test_momentum_one_keeps_the_target(momentum):
    target, online = _trees()
    new = _flat(ema_update(target, online, momentum))
    for k, v in _flat(target).items():
        np.testing.assert_array_equal(new[k], v)


def test_momentum_zero_copies_the_online_parameters():
    target, online = _trees()
    new = _flat(ema_update(target, online, 0.0))
    for k, v in _flat(online).items():
        np.testing.assert_array_equal(new[k], v)


@pytest.mark.parametrize("momentum", [0.5, 0.996])
def test_general_momentum_is_the_weighted_mean(momentum):
    target, online = _trees()
    t, o = _flat(target), _flat(online)
    new = _flat(ema_update(target, online, mx.array(momentum)))
    for k in t:
        np.testing.assert_allclose(new[k], momentum * t[k].astype(np.float64) + (1 - momentum) * o[k], atol=1e-6)


def test_ema_is_pure():
    target, online = _trees()
    before = _flat(target)
    ema_update(target, online, 0.5)
    for k, v in _flat(target).items():
        np.testing.assert_array_equal(v, before[k])


def test_rate_form_equals_momentum_form():
    from hjepa_mlx.models.ema import ema_update_rate
    rng = np.random.default_rng(3)
    t = {"w": mx.array(rng.standard_normal((4, 5)).astype(np.float32))}
    o = {"w": mx.array(rng.standard_normal((4, 5)).astype(np.float32))}
    for m in (0.0, 0.5, 0.996, 1.0):
        a = ema_update(t, o, m)["w"]
        b = ema_update_rate(t, o, 1.0 - m)["w"]
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=0, atol=1e-6)
