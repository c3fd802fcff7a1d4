"""RankMe and per-dimension statistics against NumPy written here; collapse flags on features built to
have (or not have) each kind of collapse."""

from __future__ import annotations

import numpy as np
import pytest

from hjepa_mlx.errors import UserError
from hjepa_mlx.evaluate.quality import collapse_flags, direction_spread, feature_quality, per_dim_std, rankme

RNG = np.random.default_rng(7)


def reference_rankme(z):
    s = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
    p = s / np.abs(s).sum() + 1e-7
    return np.exp(-np.sum(p * np.log(p)))


def test_rankme_of_identity_is_the_dimension():
    assert rankme(np.eye(16)) == pytest.approx(16.0, rel=1e-4)


def test_rankme_of_a_rank_one_matrix_is_one():
    z = RNG.standard_normal((100, 1)) @ RNG.standard_normal((1, 16))
    assert rankme(z) == pytest.approx(1.0, abs=1e-4)


def test_rankme_of_random_features_matches_numpy_and_is_near_full():
    z = RNG.standard_normal((500, 32)).astype(np.float32)
    assert rankme(z) == pytest.approx(reference_rankme(z), rel=1e-9)
    assert 0.8 * 32 < rankme(z) <= 32


def test_rankme_of_features_in_a_subspace_is_the_subspace_dimension():
    z = RNG.standard_normal((400, 4)) @ np.linalg.qr(RNG.standard_normal((24, 4)))[0].T   # 4-D subspace of R^24
    assert 3.0 < rankme(z) <= 4.0 + 1e-6


def test_per_dim_std_and_direction_spread_match_numpy():
    z = RNG.standard_normal((300, 12)) * np.linspace(0.1, 3, 12) + 5
    np.testing.assert_allclose(per_dim_std(z), np.sqrt(((z - z.mean(axis=0)) ** 2).mean(axis=0)), rtol=1e-12)
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    assert direction_spread(z) == pytest.approx(np.sqrt(1 - np.sum(unit.mean(axis=0) ** 2)), rel=1e-9)


def test_healthy_features_raise_no_flag():
    metrics = feature_quality(RNG.standard_normal((400, 16)))
    assert collapse_flags(metrics) == []
    assert metrics["rankme_max"] == 16 and metrics["dead_dim_fraction"] == 0.0
    assert metrics["direction_spread"] > 0.9
    assert not (metrics["rank_collapse"] or metrics["dimensional_collapse"] or metrics["complete_collapse"])


def test_every_image_mapped_to_one_direction_is_complete_collapse():
    z = np.ones((400, 16)) + RNG.standard_normal((400, 16)) * 1e-3
    metrics = feature_quality(z)
    assert "complete collapse" in collapse_flags(metrics) and metrics["complete_collapse"]


def test_rank_one_features_are_rank_collapse():
    metrics = feature_quality(RNG.standard_normal((400, 1)) @ RNG.standard_normal((1, 64)))
    assert "rank collapse" in collapse_flags(metrics)


def test_mostly_dead_dimensions_are_dimensional_collapse():
    z = RNG.standard_normal((400, 20))
    z[:, :12] = 0.5 + RNG.standard_normal((400, 12)) * 1e-5  # 12 of 20 dimensions nearly constant
    metrics = feature_quality(z)
    assert metrics["dead_dim_fraction"] == pytest.approx(0.6)
    assert "dimensional collapse" in collapse_flags(metrics)
    z[:, :12] = RNG.standard_normal((400, 12)) * 0.1         # small but alive: not dead
    assert feature_quality(z)["dead_dim_fraction"] == 0.0


def test_bad_features_are_user_errors():
    with pytest.raises(UserError, match="NaN or Inf"):
        rankme(np.full((4, 3), np.nan))
    with pytest.raises(UserError, match="non-empty"):
        feature_quality(np.zeros((0, 3)))
