"""Prediction loss per hierarchy level vs a float64 NumPy reference; weighting, masking, permutation,
accumulation and gradient properties."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.losses.jepa import prediction_loss

RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Every test draws the same numbers however the tests are selected or ordered."""
    global RNG
    RNG = np.random.default_rng(7)


def m(x):
    return mx.array(np.asarray(x, dtype=np.float32))


def np_elementwise(kind, d, delta=1.0):
    """Written from the definitions: smooth-L1 (beta 1); PyTorch's Huber 0.5 d^2 if |d| < delta else
    delta (|d| - delta / 2); squared error."""
    a = np.abs(d)
    if kind == "smoothl1":
        return np.where(a < 1.0, 0.5 * d * d, a - 0.5)
    if kind == "huber":
        return np.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return d * d


def np_level(kind, p, t, w, delta=1.0):
    e = np_elementwise(kind, p - t, delta).mean(axis=-1)                   # (B, M, C)
    sw = w.sum(axis=-1)
    per_block = np.where(sw > 0, (e * w).sum(axis=-1) / np.where(sw > 0, sw, 1.0), 0.0)
    return per_block.mean()


def random_level(b=2, mb=3, c=5, d=4, weights="binary"):
    p = RNG.standard_normal((b, mb, c, d)) * 1.5
    t = RNG.standard_normal((b, mb, c, d))
    w = (RNG.random((b, mb, c)) > 0.3).astype(np.float64) if weights == "binary" else RNG.random((b, mb, c))
    return p, t, w


def as_mlx(levels):
    return [(m(p), m(t), m(w)) for p, t, w in levels]


@pytest.mark.parametrize("kind, delta", [("smoothl1", 1.0), ("mse", 1.0), ("huber", 0.5), ("huber", 2.0)])
@pytest.mark.parametrize("weights", ["binary", "fractional"])
def test_matches_numpy_reference(kind, delta, weights):
    levels = [random_level(weights=weights), random_level(c=3, weights=weights), random_level(c=2, weights=weights)]
    hierarchy = (1.0, 0.5, 0.25)
    loss, metrics = prediction_loss(as_mlx(levels), kind, hierarchy, huber_delta=delta)
    expect = [np_level(kind, *lv, delta) for lv in levels]
    for level, value in enumerate(expect):
        assert metrics[f"loss_level{level}"].item() == pytest.approx(value, rel=1e-5)
    assert loss.item() == pytest.approx(sum(h * e for h, e in zip(hierarchy, expect)), rel=1e-5)
    assert loss.dtype == mx.float32


def test_known_values():
    d = np.array([0.5, -2.0, 3.0, 0.0])
    p = m(d.reshape(1, 1, 1, 4))
    t, w = m(np.zeros((1, 1, 1, 4))), m(np.ones((1, 1, 1)))
    value = lambda kind, delta=1.0: prediction_loss([(p, t, w)], kind, (1.0,), delta)[0].item()
    assert value("smoothl1") == pytest.approx((0.125 + 1.5 + 2.5 + 0) / 4)
    assert value("mse") == pytest.approx((0.25 + 4 + 9 + 0) / 4)
    assert value("huber", 2.0) == pytest.approx((0.125 + 2.0 + 4.0 + 0) / 4)   # delta (|d| - delta/2) past delta
    assert value("huber", 1.0) == pytest.approx(value("smoothl1"))              # delta 1 is smooth-L1
    assert prediction_loss([(p, p, w)], "smoothl1", (1.0,))[0].item() == 0.0


def test_hierarchy_weights_are_multipliers_not_normalised():
    levels = as_mlx([random_level(), random_level(c=2)])
    _, metrics = prediction_loss(levels, "smoothl1", (1.0, 1.0))
    for weights in ((1.0, 1.0), (2.0, 0.5), (0.0, 3.0)):
        total = prediction_loss(levels, "smoothl1", weights)[0].item()
        expect = weights[0] * metrics["loss_level0"].item() + weights[1] * metrics["loss_level1"].item()
        assert total == pytest.approx(expect, rel=1e-6)


def test_weight_zero_cells_do_not_contribute():
    p, t, w = random_level(b=2, mb=2, c=6, d=3)
    w[0, 1] = 0.0                                              # a block with no cell at all
    base = prediction_loss(as_mlx([(p, t, w)]), "smoothl1", (1.0,))[0].item()
    garbage = p + np.where(w[..., None] == 0, 1e3, 0.0)
    assert prediction_loss(as_mlx([(garbage, t, w)]), "smoothl1", (1.0,))[0].item() == pytest.approx(base, rel=1e-6)
    assert np.isfinite(base)


def test_permuting_cells_within_a_level_changes_nothing():
    p, t, w = random_level(c=7)
    base = prediction_loss(as_mlx([(p, t, w)]), "mse", (1.0,))[0].item()
    perm = RNG.permutation(7)
    permuted = prediction_loss(as_mlx([(p[:, :, perm], t[:, :, perm], w[:, :, perm])]), "mse", (1.0,))[0].item()
    assert permuted == pytest.approx(base, rel=1e-6)


def test_mean_over_micro_batches_equals_the_whole_batch():
    """Per-block normalisation: the loss of a batch is the mean of its halves' losses even when the
    blocks have different numbers of cells (the documented reason for not using one batch-wide ratio)."""
    p, t, w = random_level(b=4, c=6)
    whole = prediction_loss(as_mlx([(p, t, w)]), "smoothl1", (1.0,))[0].item()
    halves = [prediction_loss(as_mlx([(p[i:i + 2], t[i:i + 2], w[i:i + 2])]), "smoothl1", (1.0,))[0].item()
              for i in (0, 2)]
    assert whole == pytest.approx(np.mean(halves), rel=1e-6)


@pytest.mark.parametrize("kind, delta", [("smoothl1", 1.0), ("mse", 1.0), ("huber", 0.7)])
def test_gradient_matches_analytic_numpy(kind, delta):
    p, t, w = random_level(b=2, mb=2, c=3, d=4, weights="fractional")
    f = lambda x: prediction_loss([(x, m(t), m(w))], kind, (0.6,), delta)[0]
    grad = np.array(mx.grad(f)(m(p)), dtype=np.float64)
    d = p - t
    if kind == "mse":
        de = 2 * d
    else:
        beta = 1.0 if kind == "smoothl1" else delta
        de = np.where(np.abs(d) < beta, d, beta * np.sign(d))          # derivative of both forms
    b, mb, _, dim = p.shape
    expect = 0.6 * de / dim * (w / w.sum(axis=-1, keepdims=True))[..., None] / (b * mb)
    np.testing.assert_allclose(grad, expect, rtol=1e-5, atol=1e-8)


def test_gradient_matches_finite_differences():
    p, t, w = random_level(b=1, mb=2, c=3, d=2, weights="fractional")
    f = lambda x: prediction_loss([(x, m(t), m(w))], "smoothl1", (1.0,))[0]
    grad = np.array(mx.grad(f)(m(p)), dtype=np.float64)
    eps = 1e-3
    for idx in np.ndindex(p.shape):
        e = np.zeros_like(p)
        e[idx] = eps
        numeric = (np_level("smoothl1", p + e, t, w) - np_level("smoothl1", p - e, t, w)) / (2 * eps)
        assert grad[idx] == pytest.approx(numeric, rel=1e-3, abs=1e-6)


def test_targets_are_constants():
    p, t, w = random_level()
    g = mx.grad(lambda x: prediction_loss([(m(p), x, m(w))], "mse", (1.0,))[0])(m(t))
    assert np.abs(np.array(g)).max() == 0.0


def test_mismatched_levels_and_unknown_kind_are_errors():
    levels = as_mlx([random_level()])
    with pytest.raises(ValueError, match="hierarchy weights"):
        prediction_loss(levels, "mse", (1.0, 1.0))
    with pytest.raises(ValueError, match="unknown prediction loss"):
        prediction_loss(levels, "l1", (1.0,))
