"""VICReg terms vs a float64 NumPy reference of the official formulation; known values; permutation;
gradients vs finite differences of the reference."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.losses.vicreg import EPS, GAMMA, vicreg_loss, vicreg_loss_single, vicreg_terms

RNG = np.random.default_rng(11)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Every test draws the same numbers however the tests are selected or ordered."""
    global RNG
    RNG = np.random.default_rng(11)


def m(x):
    return mx.array(np.asarray(x, dtype=np.float32))


def np_variance(z):
    return np.maximum(1.0 - np.sqrt(z.var(axis=0, ddof=1) + 1e-4), 0.0).mean()


def np_covariance(z):
    n, d = z.shape
    zc = z - z.mean(axis=0)
    c = zc.T @ zc / (n - 1)
    return sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d


def np_vicreg(z1, z2, sim=25.0, std=25.0, cov=1.0):
    inv = ((z1 - z2) ** 2).mean()
    var = (np_variance(z1) + np_variance(z2)) / 2
    covariance = np_covariance(z1) + np_covariance(z2)
    return inv, var, covariance, sim * inv + std * var + cov * covariance


def views(n=16, d=6):
    # Per-dimension scales on both sides of gamma = 1, so some variance hinges are active and some not.
    scale = np.linspace(0.3, 2.0, d)
    z1 = RNG.standard_normal((n, d)) * scale + 0.5
    z2 = z1 + 0.3 * RNG.standard_normal((n, d)) @ RNG.standard_normal((d, d))      # correlated dims
    return z1, z2


def test_terms_and_loss_match_numpy():
    z1, z2 = views()
    inv, var, cov, total = np_vicreg(z1, z2, 25.0, 20.0, 2.0)
    loss, metrics = vicreg_loss(m(z1), m(z2), 25.0, 20.0, 2.0)
    assert metrics["vicreg_invariance"].item() == pytest.approx(inv, rel=1e-5)
    assert metrics["vicreg_variance"].item() == pytest.approx(var, rel=1e-5)
    assert metrics["vicreg_covariance"].item() == pytest.approx(cov, rel=1e-5)
    assert loss.item() == pytest.approx(total, rel=1e-5)
    assert 0 < var < 1 and cov > 0                                 # the test exercises every term


def test_single_view_matches_numpy():
    z, _ = views(n=12, d=5)
    loss, metrics = vicreg_loss_single(m(z), 25.0, 1.0)
    assert metrics["vicreg_variance"].item() == pytest.approx(np_variance(z), rel=1e-5)
    assert metrics["vicreg_covariance"].item() == pytest.approx(np_covariance(z), rel=1e-5)
    assert loss.item() == pytest.approx(25.0 * np_variance(z) + np_covariance(z), rel=1e-5)
    assert "vicreg_invariance" not in metrics


def test_identical_views_have_zero_invariance():
    z, _ = views()
    assert vicreg_terms(m(z), m(z))["vicreg_invariance"].item() == 0.0


def test_constant_features_give_the_full_variance_penalty():
    """Var = 0 everywhere: v = gamma - sqrt(eps) = 0.99, i.e. gamma up to the epsilon."""
    const = np.full((8, 4), 3.0)
    value = vicreg_terms(m(const), m(const))["vicreg_variance"].item()
    assert value == pytest.approx(GAMMA - np.sqrt(EPS), abs=1e-6)
    wide = RNG.standard_normal((64, 4)) * 5.0                     # all stds far above gamma: no penalty
    assert vicreg_terms(m(wide), m(wide))["vicreg_variance"].item() == 0.0


def test_decorrelated_features_have_zero_covariance():
    """Columns of a Hadamard matrix (minus the constant one) are centred and mutually orthogonal;
    scaling them differently keeps the covariance diagonal."""
    h2 = np.array([[1, 1], [1, -1]], dtype=np.float64)
    h8 = np.kron(np.kron(h2, h2), h2)
    design = h8[:, 1:] * np.arange(1, 8)
    assert np_covariance(design) == pytest.approx(0.0, abs=1e-20)
    terms = vicreg_terms(m(design), m(design * 0.5))
    assert terms["vicreg_covariance"].item() == pytest.approx(0.0, abs=1e-9)
    # ...while the same columns mixed by a rotation are correlated
    mixed = design @ np.linalg.qr(RNG.standard_normal((7, 7)))[0]
    assert vicreg_terms(m(mixed), m(mixed))["vicreg_covariance"].item() > 1.0


def test_joint_row_permutation_changes_nothing():
    z1, z2 = views()
    perm = RNG.permutation(len(z1))
    a = vicreg_loss(m(z1), m(z2), 25, 25, 1)[0].item()
    b = vicreg_loss(m(z1[perm]), m(z2[perm]), 25, 25, 1)[0].item()
    assert a == pytest.approx(b, rel=1e-6)


def test_gradients_match_finite_differences_of_the_reference():
    z1, z2 = views(n=6, d=3)
    g1, g2 = mx.grad(lambda a, b: vicreg_loss(a, b, 25.0, 25.0, 1.0)[0], argnums=(0, 1))(m(z1), m(z2))
    eps = 1e-5
    for z, grad, which in ((z1, np.array(g1), 0), (z2, np.array(g2), 1)):
        for idx in np.ndindex(z.shape):
            e = np.zeros_like(z)
            e[idx] = eps
            args_plus = (z1 + e, z2) if which == 0 else (z1, z2 + e)
            args_minus = (z1 - e, z2) if which == 0 else (z1, z2 - e)
            numeric = (np_vicreg(*args_plus)[3] - np_vicreg(*args_minus)[3]) / (2 * eps)
            assert grad[idx] == pytest.approx(numeric, rel=1e-3, abs=1e-4), (which, idx)


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="n >= 2"):
        vicreg_loss_single(m(np.ones((1, 3))), 25, 1)
    with pytest.raises(ValueError, match="differ in shape"):
        vicreg_terms(m(np.ones((4, 3))), m(np.ones((4, 2))))


def test_the_variance_hinge_target_is_a_parameter():
    z1, z2 = views()
    std = np.sqrt(np.asarray(z1, np.float64).var(axis=0, ddof=1) + 1e-4)
    for gamma in (0.25, 1.0, 3.0):
        _, metrics = vicreg_loss(m(z1), m(z2), 25.0, 25.0, 1.0, gamma)
        expected = (np.maximum(gamma - std, 0).mean()
                    + np.maximum(gamma - np.sqrt(np.asarray(z2, np.float64).var(axis=0, ddof=1) + 1e-4), 0).mean()) / 2
        assert metrics["vicreg_variance"].item() == pytest.approx(expected, rel=1e-5)
