"""What VICReg acts on: the expander (with batch-statistics BatchNorm), affine-free normalised tokens, or the
plain pooled tokens - against float64 NumPy."""

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.models.projector import BatchNormTrain, Expander, regularised_features

RNG = np.random.default_rng(0)
TOKENS = RNG.standard_normal((6, 5, 8)).astype(np.float32) * 3 + 1


def _np_bn(x, w, b, eps=1e-5):
    return (x - x.mean(0)) / np.sqrt(x.var(0) + eps) * w + b


def test_batchnorm_uses_the_batch_statistics():
    bn = BatchNormTrain(8)
    bn.weight = mx.array(RNG.uniform(0.5, 2, 8).astype(np.float32))
    bn.bias = mx.array(RNG.standard_normal(8).astype(np.float32))
    x = TOKENS[:, 0].astype(np.float64)
    got = np.array(bn(mx.array(TOKENS[:, 0])))
    np.testing.assert_allclose(got, _np_bn(x, np.array(bn.weight), np.array(bn.bias)), atol=2e-5)


def test_expander_matches_numpy():
    ex = Expander(8, 16)
    pooled = TOKENS.astype(np.float64).mean(1)
    p = {k: np.array(v, dtype=np.float64) for k, v in
         [(k, v) for k, v in __import__("mlx.utils", fromlist=["tree_flatten"]).tree_flatten(ex.parameters())]}
    h = np.maximum(_np_bn(pooled @ p["fc1.weight"].T + p["fc1.bias"], p["bn1.weight"], p["bn1.bias"]), 0)
    h = np.maximum(_np_bn(h @ p["fc2.weight"].T + p["fc2.bias"], p["bn2.weight"], p["bn2.bias"]), 0)
    want = h @ p["fc3.weight"].T + p["fc3.bias"]
    got = np.array(regularised_features(mx.array(TOKENS), "expander", ex))
    assert got.shape == (6, 16)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_layernorm_features_cannot_be_scaled_by_a_gain():
    x = TOKENS.astype(np.float64)
    ln = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    got = np.array(regularised_features(mx.array(TOKENS), "layernorm"))
    np.testing.assert_allclose(got, ln.mean(1), atol=1e-5)
    scaled = np.array(regularised_features(mx.array(TOKENS * 7.0), "layernorm"))   # what a grown LN gain does
    np.testing.assert_allclose(scaled, got, atol=1e-5)
    plain = np.array(regularised_features(mx.array(TOKENS * 7.0), "none"))
    np.testing.assert_allclose(plain, 7.0 * x.mean(1), rtol=1e-5)


def test_unknown_projector_and_missing_expander():
    with pytest.raises(ValueError, match="unknown VICReg projector"):
        regularised_features(mx.array(TOKENS), "mlp")
    with pytest.raises(ValueError, match="needs an Expander"):
        regularised_features(mx.array(TOKENS), "expander")


def test_layernorm_projector_features_cannot_reach_unit_std_on_average():
    """Why loss.vicreg.std_target exists: each affine-free normalised token has norm sqrt(D), so the pooled
    features' per-dimension variances sum to at most D - their mean is <= 1 - whatever the encoder does,
    and equals 1 only when all tokens of an image are identical and images differ maximally."""
    import mlx.core as mx
    import numpy as np

    from hjepa_mlx.models.projector import regularised_features
    rng = np.random.default_rng(0)
    for spread in (0.1, 1.0, 10.0):
        per_image = rng.standard_normal((64, 1, 32)) * spread
        tokens = per_image + rng.standard_normal((64, 9, 32))          # image-specific part + token noise
        z = np.array(regularised_features(mx.array(tokens.astype(np.float32)), "layernorm"), np.float64)
        assert z.var(axis=0).mean() <= 1.0 + 1e-5
    same = np.repeat(rng.standard_normal((64, 1, 32)), 9, axis=1)        # identical tokens: the extreme
    z = np.array(regularised_features(mx.array(same.astype(np.float32)), "layernorm"), np.float64)
    assert z.var(axis=0).mean() > 0.85


def _np_centered(x):
    """float64 reference of the ``centered`` projector: minus the batch's token mean, affine-free LN, pool."""
    x = x.astype(np.float64)
    c = x - x.mean(axis=(0, 1))
    ln = (c - c.mean(-1, keepdims=True)) / np.sqrt(c.var(-1, keepdims=True) + 1e-6)
    return ln.mean(1)


def test_centered_projector_matches_numpy_and_ignores_a_common_vector():
    got = np.array(regularised_features(mx.array(TOKENS), "centered"))
    np.testing.assert_allclose(got, _np_centered(TOKENS), atol=1e-5)
    common = (RNG.standard_normal(8) * 50).astype(np.float32)       # what a ViT's shared token vector does
    shifted = np.array(regularised_features(mx.array(TOKENS + common), "centered"))
    np.testing.assert_allclose(shifted, got, atol=1e-4)
    # the layernorm projector is dominated by it: its features lose almost all their spread across images
    plain = np.array(regularised_features(mx.array(TOKENS), "layernorm"), np.float64)
    swamped = np.array(regularised_features(mx.array(TOKENS + common), "layernorm"), np.float64)
    assert swamped.var(axis=0).mean() < 0.05 * plain.var(axis=0).mean()


def test_centered_projector_can_meet_the_variance_hinge():
    """With the common vector removed, tokens that carry their image (plus noise) give pooled features whose
    per-dimension std approaches VICReg's gamma = 1 - the layernorm projector stays far below it."""
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((64, 1, 32)) * 3 + rng.standard_normal((64, 9, 32)) * 0.3 + 20 * rng.standard_normal(32)
    z = np.array(regularised_features(mx.array(tokens.astype(np.float32)), "centered"), np.float64)
    ln = np.array(regularised_features(mx.array(tokens.astype(np.float32)), "layernorm"), np.float64)
    assert z.std(axis=0, ddof=1).mean() > 0.9
    assert ln.std(axis=0, ddof=1).mean() < 0.3


def test_centered_projector_uses_the_global_batch_mean_when_gathering():
    """Data parallel: rank 0's rows centred by the mean of every rank's tokens equal those rows of the
    single-process result on the whole batch."""
    other = (RNG.standard_normal((6, 5, 8)) * 2 - 3).astype(np.float32)
    whole = np.concatenate([TOKENS, other])

    def row_mean(z):             # two ranks, this one rank 0: the mean over its rows and the other rank's
        return mx.concatenate([z, mx.array(other.mean(axis=1))]).mean(axis=0)
    got = np.array(regularised_features(mx.array(TOKENS), "centered", row_mean=row_mean))
    np.testing.assert_allclose(got, _np_centered(whole)[:6], atol=1e-5)
    local = np.array(regularised_features(mx.array(TOKENS), "centered"))
    assert np.abs(local - got).max() > 1e-2      # the global mean matters: the local one gives other features
