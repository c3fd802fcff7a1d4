"""token_energy: the orthogonal split of tokens into common / positional / image / local energy."""

import numpy as np
import pytest

from hjepa_mlx.evaluate.token_energy import PARTS, token_energy

RNG = np.random.default_rng(0)


def _centred(x, axes):
    return x - x.mean(axis=axes, keepdims=True)


def test_each_part_alone_is_all_the_energy():
    b, n, d = 5, 7, 4
    common = np.broadcast_to(RNG.standard_normal(d), (b, n, d))
    positional = np.broadcast_to(_centred(RNG.standard_normal((1, n, d)), 1), (b, n, d))
    image = np.broadcast_to(_centred(RNG.standard_normal((b, 1, d)), 0), (b, n, d))
    local = _centred(_centred(RNG.standard_normal((b, n, d)), 0), 1)
    for name, tokens in zip(PARTS, (common, positional, image, local)):
        e = token_energy(tokens)
        assert e[name] == pytest.approx(1.0, abs=1e-12), (name, e)
        assert sum(e[p] for p in PARTS if p != name) == pytest.approx(0.0, abs=1e-12)


def test_a_mixture_splits_into_the_energies_it_was_built_from():
    b, n, d = 6, 9, 5
    parts = {"common": np.broadcast_to(3 * RNG.standard_normal(d), (b, n, d)),
             "positional": np.broadcast_to(_centred(RNG.standard_normal((1, n, d)), 1), (b, n, d)),
             "image": np.broadcast_to(2 * _centred(RNG.standard_normal((b, 1, d)), 0), (b, n, d)),
             "local": 0.5 * _centred(_centred(RNG.standard_normal((b, n, d)), 0), 1)}
    tokens = sum(parts.values())
    total = (tokens ** 2).sum()
    e = token_energy(tokens.astype(np.float32))
    for name, part in parts.items():
        assert e[name] == pytest.approx((part ** 2).sum() / total, rel=1e-5)
    assert sum(e[p] for p in PARTS) == pytest.approx(1.0, abs=1e-9)


def test_pooled_mean_cosine_of_identical_and_opposite_images():
    tokens = RNG.standard_normal((1, 4, 3))
    assert token_energy(np.repeat(tokens, 3, axis=0))["pooled_mean_cosine"] == pytest.approx(1.0)
    assert token_energy(np.concatenate([tokens, -tokens]))["pooled_mean_cosine"] == pytest.approx(-1.0)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="B >= 2"):
        token_energy(np.ones((1, 4, 3)))
    with pytest.raises(ValueError, match="zero"):
        token_energy(np.zeros((2, 4, 3)))
