"""NT-Xent vs a float64 NumPy reference (cosine and raw dot product); known values; symmetries;
gradients vs finite differences of the reference."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.losses.contrastive import nt_xent

RNG = np.random.default_rng(5)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Every test draws the same numbers however the tests are selected or ordered."""
    global RNG
    RNG = np.random.default_rng(5)


def m(x):
    return mx.array(np.asarray(x, dtype=np.float32))


def np_nt_xent(z1, z2, t, cosine=True):
    """Loop form, straight from the definition: row i's positive is its other view, the softmax runs
    over the 2B - 1 rows other than i."""
    z = np.concatenate([z1, z2])
    if cosine:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    losses, hits = [], []
    for i in range(n):
        pos = (i + n // 2) % n
        others = [j for j in range(n) if j != i]
        s = np.array([z[i] @ z[j] / t for j in others])
        top = s.max()
        log_norm = top + np.log(np.exp(s - top).sum())
        losses.append(log_norm - z[i] @ z[pos] / t)
        hits.append(others[int(np.argmax(s))] == pos)
    return float(np.mean(losses)), float(np.mean(hits))


@pytest.mark.parametrize("cosine, temperature", [(True, 0.1), (True, 0.5), (False, 4.0)])
def test_matches_numpy(cosine, temperature):
    z1 = RNG.standard_normal((6, 5)) * np.linspace(0.5, 3.0, 6)[:, None]      # unequal norms
    z2 = z1 + 0.8 * RNG.standard_normal((6, 5))
    loss, metrics = nt_xent(m(z1), m(z2), temperature, cosine)
    expect, accuracy = np_nt_xent(z1, z2, temperature, cosine)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert metrics["contrastive_loss"].item() == loss.item()
    assert metrics["contrastive_accuracy"].item() == pytest.approx(accuracy)
    assert 0 < accuracy < 1                                        # a mix of hits and misses is exercised


def test_cosine_flag_changes_the_similarity():
    z1, z2 = RNG.standard_normal((4, 3)) * 3, RNG.standard_normal((4, 3))
    assert nt_xent(m(z1), m(z2), 1.0, True)[0].item() != pytest.approx(nt_xent(m(z1), m(z2), 1.0, False)[0].item())


def test_separated_pairs_at_low_temperature_reach_zero_loss_and_full_accuracy():
    z = np.eye(8)[:4]                                     # 4 orthogonal directions, each seen by both views
    z2 = z + 0.01 * RNG.standard_normal(z.shape)
    loss, metrics = nt_xent(m(z), m(z2), 0.05)
    assert loss.item() < 1e-6 and metrics["contrastive_accuracy"].item() == 1.0


def test_indistinguishable_embeddings_give_log_of_the_negatives():
    z = np.ones((5, 3))
    loss, metrics = nt_xent(m(z), m(z), 0.1)
    assert loss.item() == pytest.approx(math.log(2 * 5 - 1), rel=1e-6)


def test_joint_row_permutation_and_view_swap_change_nothing():
    z1, z2 = RNG.standard_normal((7, 4)), RNG.standard_normal((7, 4))
    base = nt_xent(m(z1), m(z2), 0.2)[0].item()
    perm = RNG.permutation(7)
    assert nt_xent(m(z1[perm]), m(z2[perm]), 0.2)[0].item() == pytest.approx(base, rel=1e-6)
    assert nt_xent(m(z2), m(z1), 0.2)[0].item() == pytest.approx(base, rel=1e-6)


@pytest.mark.parametrize("cosine", [True, False])
def test_gradient_matches_finite_differences_of_the_reference(cosine):
    z1, z2 = RNG.standard_normal((3, 2)), RNG.standard_normal((3, 2))
    t = 0.5 if cosine else 2.0
    g1, g2 = mx.grad(lambda a, b: nt_xent(a, b, t, cosine)[0], argnums=(0, 1))(m(z1), m(z2))
    eps = 1e-5
    for which, grad in ((0, np.array(g1)), (1, np.array(g2))):
        for idx in np.ndindex(z1.shape):
            e = np.zeros_like(z1)
            e[idx] = eps
            plus = (z1 + e, z2) if which == 0 else (z1, z2 + e)
            minus = (z1 - e, z2) if which == 0 else (z1, z2 - e)
            numeric = (np_nt_xent(*plus, t, cosine)[0] - np_nt_xent(*minus, t, cosine)[0]) / (2 * eps)
            assert grad[idx] == pytest.approx(numeric, rel=1e-3, abs=1e-5), (which, idx)


def test_mismatched_views_are_errors():
    with pytest.raises(ValueError, match="two"):
        nt_xent(m(np.ones((3, 2))), m(np.ones((4, 2))), 0.1)
