"""Losses against float64 NumPy references, known values, finite differences and permutation properties."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.losses.contrastive import nt_xent
from hjepa_mlx.losses.jepa import prediction_loss
from hjepa_mlx.losses.total import LossSettings, total_loss
from hjepa_mlx.losses.vicreg import vicreg_loss, vicreg_loss_single, vicreg_terms

RNG = np.random.default_rng(1)


def m(x):
    return mx.array(np.asarray(x, dtype=np.float32))


# ---- NumPy references (float64)

def np_smooth_l1(d, beta=1.0):
    a = np.abs(d)
    return np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta)


def np_level_loss(p, t, w, kind, delta=1.0):
    d = p - t
    e = {"smoothl1": np_smooth_l1(d), "mse": d * d, "huber": delta * np_smooth_l1(d, delta)}[kind].mean(-1)
    per_block = (e * w).sum(-1) / np.maximum(w.sum(-1), 1.0)
    return per_block.mean()


def np_vicreg(z1, z2, sim=25.0, std=25.0, cov=1.0):
    n, d = z1.shape
    inv = ((z1 - z2) ** 2).mean()

    def var(z):
        return np.maximum(1.0 - np.sqrt(z.var(axis=0, ddof=1) + 1e-4), 0).mean()

    def covt(z):
        zc = z - z.mean(0)
        c = zc.T @ zc / (n - 1)
        return (c ** 2).sum() / d - (np.diag(c) ** 2).sum() / d

    v = (var(z1) + var(z2)) / 2
    c = covt(z1) + covt(z2)
    return inv, v, c, sim * inv + std * v + cov * c


def np_nt_xent(z1, z2, t, cosine=True):
    z = np.concatenate([z1, z2])
    if cosine:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    s = z @ z.T / t
    np.fill_diagonal(s, -np.inf)
    pos = np.concatenate([np.arange(n // 2, n), np.arange(n // 2)])
    logp = s - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True)) - s.max(1, keepdims=True)
    return -logp[np.arange(n), pos].mean(), (s.argmax(1) == pos).mean()


# ---- prediction loss

@pytest.mark.parametrize("kind", ["smoothl1", "mse", "huber"])
def test_prediction_loss_matches_numpy(kind):
    levels, expect = [], 0.0
    weights = (1.0, 0.7)
    for lw in weights:
        p, t = RNG.standard_normal((2, 3, 5, 4)) * 2, RNG.standard_normal((2, 3, 5, 4))
        w = (RNG.random((2, 3, 5)) > 0.3).astype(np.float64)
        levels.append((m(p), m(t), m(w)))
        expect += lw * np_level_loss(p, t, w, kind, 0.5)
    loss, metrics = prediction_loss(levels, kind, weights, huber_delta=0.5)
    assert loss.item() == pytest.approx(expect, rel=1e-5)
    assert set(metrics) == {"loss_level0", "loss_level1"}


def test_prediction_loss_ignores_weight_zero_cells_and_cell_order():
    p, t = RNG.standard_normal((1, 2, 6, 3)), RNG.standard_normal((1, 2, 6, 3))
    w = np.array([[[1, 1, 0, 1, 0, 1], [1, 0, 1, 1, 1, 0]]], dtype=np.float64)
    base = prediction_loss([(m(p), m(t), m(w))], "smoothl1", (1.0,))[0].item()
    p2 = p.copy()
    p2[w == 0] += 100.0                                        # garbage in empty cells changes nothing
    assert prediction_loss([(m(p2), m(t), m(w))], "smoothl1", (1.0,))[0].item() == pytest.approx(base, rel=1e-6)
    perm = RNG.permutation(6)
    permuted = prediction_loss([(m(p[:, :, perm]), m(t[:, :, perm]), m(w[:, :, perm]))], "smoothl1", (1.0,))[0]
    assert permuted.item() == pytest.approx(base, rel=1e-6)


def test_prediction_loss_gradient_matches_finite_differences():
    p, t = RNG.standard_normal((1, 1, 3, 2)), RNG.standard_normal((1, 1, 3, 2))
    w = m(np.ones((1, 1, 3)))
    f = lambda x: prediction_loss([(x, m(t), w)], "smoothl1", (1.0,))[0]
    g = np.array(mx.grad(f)(m(p)), dtype=np.float64)
    d = p - t
    analytic = np.where(np.abs(d) < 1, d, np.sign(d)) / d.size
    np.testing.assert_allclose(g, analytic, atol=1e-6)


def test_targets_get_no_gradient():
    p, t, w = m(RNG.standard_normal((1, 1, 3, 2))), m(RNG.standard_normal((1, 1, 3, 2))), m(np.ones((1, 1, 3)))
    g = mx.grad(lambda x: prediction_loss([(p, x, w)], "mse", (1.0,))[0])(t)
    assert np.abs(np.array(g)).max() == 0.0


# ---- VICReg

def test_vicreg_terms_match_numpy():
    z1, z2 = RNG.standard_normal((16, 6)) * 0.7, RNG.standard_normal((16, 6)) * 1.3 + 0.2
    inv, v, c, total = np_vicreg(z1, z2)
    loss, metrics = vicreg_loss(m(z1), m(z2), 25.0, 25.0, 1.0)
    assert metrics["vicreg_invariance"].item() == pytest.approx(inv, rel=1e-5)
    assert metrics["vicreg_variance"].item() == pytest.approx(v, rel=1e-5)
    assert metrics["vicreg_covariance"].item() == pytest.approx(c, rel=1e-4)
    assert loss.item() == pytest.approx(total, rel=1e-5)


def test_vicreg_known_values():
    z = RNG.standard_normal((32, 4))
    assert vicreg_terms(m(z), m(z))["vicreg_invariance"].item() == 0.0                 # identical views
    const = np.ones((8, 4))
    assert vicreg_terms(m(const), m(const))["vicreg_variance"].item() == pytest.approx(1 - 1e-2, abs=1e-6)
    # decorrelated: orthogonal columns (Hadamard-like +-1 design) have zero covariance
    h = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=np.float64)
    design = np.repeat(h[:, 1:], 2, axis=0)
    assert vicreg_terms(m(design), m(design))["vicreg_covariance"].item() == pytest.approx(0.0, abs=1e-10)
    single, _ = vicreg_loss_single(m(design), 25.0, 1.0)
    _, v, c, _ = np_vicreg(design, design)
    assert single.item() == pytest.approx(25.0 * v + c / 2, rel=1e-5)


def test_vicreg_is_invariant_to_joint_row_permutation_and_has_correct_gradient():
    z1, z2 = RNG.standard_normal((10, 3)), RNG.standard_normal((10, 3))
    perm = RNG.permutation(10)
    a = vicreg_loss(m(z1), m(z2), 25, 25, 1)[0].item()
    b = vicreg_loss(m(z1[perm]), m(z2[perm]), 25, 25, 1)[0].item()
    assert a == pytest.approx(b, rel=1e-5)
    f = lambda x: vicreg_loss(x, m(z2), 25, 25, 1)[0]
    g = np.array(mx.grad(f)(m(z1)), dtype=np.float64)
    eps = 1e-3
    for idx in [(0, 0), (4, 2), (9, 1)]:
        e = np.zeros_like(z1)
        e[idx] = eps
        num = (np_vicreg(z1 + e, z2)[3] - np_vicreg(z1 - e, z2)[3]) / (2 * eps)
        assert g[idx] == pytest.approx(num, rel=1e-2, abs=1e-3)


# ---- NT-Xent

@pytest.mark.parametrize("cosine", [True, False])
def test_nt_xent_matches_numpy(cosine):
    z1, z2 = RNG.standard_normal((6, 5)), RNG.standard_normal((6, 5))
    loss, metrics = nt_xent(m(z1), m(z2), 0.1 if cosine else 5.0, cosine)
    expect, acc = np_nt_xent(z1, z2, 0.1 if cosine else 5.0, cosine)
    assert loss.item() == pytest.approx(expect, rel=1e-4)
    assert metrics["contrastive_accuracy"].item() == pytest.approx(acc)


def test_nt_xent_separated_pairs_reach_the_minimum():
    z = np.eye(8)[:4] * 1.0
    loss, metrics = nt_xent(m(z), m(z), 0.05)
    assert loss.item() < 1e-6 and metrics["contrastive_accuracy"].item() == 1.0
    perm = RNG.permutation(4)
    assert nt_xent(m(z[perm]), m(z[perm]), 0.05)[0].item() == pytest.approx(loss.item(), abs=1e-7)


# ---- composition

def test_total_loss_combines_terms_as_documented():
    levels = [(m(RNG.standard_normal((2, 1, 3, 4))), m(RNG.standard_normal((2, 1, 3, 4))), m(np.ones((2, 1, 3))))]
    feats = {f"{k}_pooled_{v}": m(RNG.standard_normal((6, 4))) for k in ("context", "target") for v in (1, 2)}
    s = LossSettings(hierarchy_weights=(1.0,), jepa_weight=2.0, vicreg=True, vicreg_weight=0.1, contrastive=True,
                     contrastive_weight=0.3, temperature=0.2, on_context=True)
    total, metrics = total_loss(s, levels, feats)
    pred = prediction_loss(levels, "smoothl1", (1.0,))[0].item()
    vic = vicreg_loss(feats["context_pooled_1"], feats["context_pooled_2"], 25, 25, 1)[0].item()
    con = nt_xent(feats["context_pooled_1"], feats["context_pooled_2"], 0.2)[0].item()
    assert total.item() == pytest.approx(2.0 * pred + 0.1 * vic + 0.3 * con, rel=1e-5)
    assert s.needs_two_views and not LossSettings(vicreg=True, sim_coeff=0.0).needs_two_views
