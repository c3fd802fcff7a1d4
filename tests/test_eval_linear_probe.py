"""Linear probe: standardisation and the AdamW/cross-entropy steps against float64 NumPy, accuracy on
separable features, LR selection blind to the test set, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from hjepa_mlx.errors import UserError
from hjepa_mlx.evaluate.linear_probe import linear_probe, standardise, topk_accuracy, train_linear


def separable(seed, n=600, dim=10, classes=6):
    """Gaussian clusters with a margin, far from the origin (so the standardisation matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.standard_normal((n, dim)) * 0.5 + 7).astype(np.float32), y


def test_standardisation_matches_numpy_float64():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((50, 4)) * [3, 0.01, 1, 100] + 2).astype(np.float32)
    b = rng.standard_normal((10, 4)).astype(np.float32)
    sa, sb = standardise(a, b)
    a, b = a.astype(np.float64), b.astype(np.float64)
    mean, var = a.mean(axis=0), ((a - a.mean(axis=0)) ** 2).mean(axis=0)
    np.testing.assert_allclose(sa, (a - mean) / np.sqrt(var + 1e-6), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sb, (b - mean) / np.sqrt(var + 1e-6), rtol=1e-5, atol=1e-5)
    assert sa.dtype == sb.dtype == np.float32


def reference_two_adamw_steps(x, y, classes, lr, wd):
    """Full-batch mean cross-entropy from zero weights; AdamW with bias correction (b = 0.9, 0.999,
    eps 1e-8, decay applied as w *= 1 - lr_t wd before the Adam step); lr_t cosine over 2 steps: lr, lr/2."""
    x = x.astype(np.float64)
    params = {"weight": np.zeros((classes, x.shape[1])), "bias": np.zeros(classes)}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    onehot = np.eye(classes)[y]
    for t, lr_t in ((1, lr), (2, lr * 0.5)):
        logits = x @ params["weight"].T + params["bias"]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dlogits = (p - onehot) / len(x)
        grads = {"weight": dlogits.T @ x, "bias": dlogits.sum(axis=0)}
        for k in params:
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
            w = params[k] * (1 - lr_t * wd)
            params[k] = w - lr_t * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)
    return params


def test_training_steps_match_numpy_adamw_reference():
    x, y = separable(1, n=40, dim=5, classes=3)
    x = standardise(x)[0]
    model = train_linear(x, y, 3, lr=0.05, epochs=2, batch_size=40, weight_decay=0.1, seed=0)
    ref = reference_two_adamw_steps(x, y, 3, lr=0.05, wd=0.1)
    np.testing.assert_allclose(np.array(model.weight), ref["weight"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.array(model.bias), ref["bias"], rtol=1e-4, atol=1e-6)


def test_separable_features_are_probed_above_95_percent():
    x, y = separable(2)
    result = linear_probe(x[:500], y[:500], x[500:], y[500:], epochs=20, batch_size=64, seed=0)
    assert result["test_top1"] >= 0.95, result
    assert result["test_top5"] >= result["test_top1"]
    assert set(result["val_top1"]) == {1e-3, 3e-3, 1e-2, 3e-2} and result["lr"] in result["val_top1"]
    assert result["val_top1"][result["lr"]] == max(result["val_top1"].values())


def test_lr_choice_never_looks_at_the_test_set_and_is_deterministic():
    x, y = separable(3, n=300)
    x = x + np.random.default_rng(3).standard_normal(x.shape).astype(np.float32) * 3   # not trivially separable
    args = dict(lrs=(1e-3, 3e-2), epochs=5, batch_size=32, seed=1)
    first = linear_probe(x[:200], y[:200], x[200:], y[200:], **args)
    assert linear_probe(x[:200], y[:200], x[200:], y[200:], **args) == first
    shuffled = np.random.default_rng(0).permutation(y[200:])
    other = linear_probe(x[:200], y[:200], x[200:], shuffled, **args)
    assert other["lr"] == first["lr"] and other["val_top1"] == first["val_top1"]


def test_topk_accuracy_counts_labels_with_fewer_than_k_logits_above():
    logits = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 0.0]])
    y = np.array([0, 0, 1])
    assert topk_accuracy(logits, y, 1) == pytest.approx(2 / 3)      # the tie in row 3 counts as a hit
    assert topk_accuracy(logits, y, 3) == 1.0


def test_non_finite_features_are_a_user_error():
    x, y = separable(4, n=20)
    with pytest.raises(UserError, match="NaN or Inf"):
        linear_probe(np.where(x > 8, np.inf, x), y, x, y, epochs=1)
