"""k-NN vs a float64 NumPy reference, linear probe on separable features, RankMe vs NumPy, report."""

from __future__ import annotations

import numpy as np
import pytest

from hjepa_mlx.evaluate.knn import knn_accuracy
from hjepa_mlx.evaluate.linear_probe import linear_probe, standardise
from hjepa_mlx.evaluate.quality import feature_quality, rankme
from hjepa_mlx.evaluate.report import format_report

RNG = np.random.default_rng(5)


def np_knn(tx, ty, vx, k, t, c):
    tx = tx / np.linalg.norm(tx, axis=1, keepdims=True)
    vx = vx / np.linalg.norm(vx, axis=1, keepdims=True)
    sim = vx @ tx.T
    preds = []
    for row in sim:
        top = np.argsort(-row)[:k]
        votes = np.zeros(c)
        for j in top:
            votes[ty[j]] += np.exp(row[j] / t)
        preds.append(votes.argmax())
    return np.array(preds)


def test_knn_matches_numpy_reference():
    tx, ty = RNG.standard_normal((200, 16)), RNG.integers(0, 5, 200)
    vx, vy = RNG.standard_normal((70, 16)), RNG.integers(0, 5, 70)
    got = knn_accuracy(tx, ty, vx, vy, k_values=(1, 5, 20), temperature=0.07, num_classes=5, chunk=32)
    for k in (1, 5, 20):
        assert got[k] == pytest.approx((np_knn(tx, ty, vx, k, 0.07, 5) == vy).mean())


def test_knn_on_clustered_data_is_perfect():
    centres = RNG.standard_normal((4, 8)) * 5
    ty = np.repeat(np.arange(4), 30)
    vy = np.repeat(np.arange(4), 10)
    tx = centres[ty] + RNG.standard_normal((120, 8)) * 0.1
    vx = centres[vy] + RNG.standard_normal((40, 8)) * 0.1
    assert knn_accuracy(tx, ty, vx, vy, k_values=(1, 20))[20] == 1.0


def test_linear_probe_separates_linearly_separable_features():
    centres = RNG.standard_normal((6, 10)) * 3
    labels = RNG.integers(0, 6, 600)
    x = centres[labels] + RNG.standard_normal((600, 10)) * 0.5 + 7     # separable with a margin, off-centre
    result = linear_probe(x[:500], labels[:500], x[500:], labels[500:], epochs=40, seed=0)
    assert result["test_top1"] >= 0.95, result
    assert result["lr"] in result["val_top1"]


def test_standardisation_matches_numpy():
    a, b = RNG.standard_normal((50, 4)) * 3 + 2, RNG.standard_normal((10, 4))
    sa, sb = standardise(a, b)
    np.testing.assert_allclose(sa, (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-6), rtol=1e-5)
    np.testing.assert_allclose(sb, (b - a.mean(0)) / np.sqrt(a.var(0) + 1e-6), rtol=1e-5)


def test_rankme_of_identity_rank_one_and_random():
    assert rankme(np.eye(16)) == pytest.approx(16.0, rel=1e-4)
    u = RNG.standard_normal((100, 1))
    assert rankme(u @ RNG.standard_normal((1, 16))) == pytest.approx(1.0, abs=1e-3)
    z = RNG.standard_normal((500, 32))
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(z) == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_collapse_flags():
    healthy = feature_quality(RNG.standard_normal((400, 16)))
    assert not healthy["rank_collapse"] and not healthy["dimensional_collapse"] and not healthy["complete_collapse"]
    collapsed = feature_quality(np.ones((400, 16)) + RNG.standard_normal((400, 16)) * 1e-9)
    assert collapsed["complete_collapse"]
    rank_one = feature_quality(RNG.standard_normal((400, 1)) @ RNG.standard_normal((1, 64)))
    assert rank_one["rank_collapse"]


def test_report_always_shows_the_baseline():
    text = format_report({"trained": {"knn": 0.8}, "random-init": {"knn": 0.2}})
    assert "trained" in text and "random-init" in text and "0.8" in text
    with pytest.raises(ValueError):
        format_report({"trained": {"knn": 0.8}})
