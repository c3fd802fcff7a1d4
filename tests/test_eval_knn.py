"""Weighted k-NN (DINO) against a float64 NumPy reference written here, plus properties that must hold."""

from __future__ import annotations

import numpy as np
import pytest

from hjepa_mlx.errors import UserError
from hjepa_mlx.evaluate.knn import knn_accuracy, knn_evaluate, knn_predict

K_VALUES = (1, 5, 20)


def reference_votes(train_x, train_y, test_x, k, temperature, num_classes):
    """float64, one row at a time: cosine, k most similar, sum of exp(sim / T) per class."""
    train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    test_x = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    votes = np.zeros((len(test_x), num_classes))
    for i, row in enumerate(test_x @ train_x.T):
        for j in np.argsort(-row, kind="stable")[:k]:
            votes[i, train_y[j]] += np.exp(row[j] / temperature)
    return votes


def random_problem(seed, n_train=300, n_test=90, dim=16, classes=7):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_train, dim)), rng.integers(0, classes, n_train),
            rng.standard_normal((n_test, dim)), rng.integers(0, classes, n_test))


def assert_no_near_ties(train_x, test_x, votes_by_k):
    """The comparison is exact only when neither the neighbour ranks nor the winning class are
    decided by float32 rounding: check the data avoids such near-ties (else pick another seed)."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    sim = np.sort(b @ a.T, axis=1)[:, ::-1]
    for k in K_VALUES:                                      # the k-th and (k+1)-th neighbours are distinct
        assert (sim[:, k - 1] - sim[:, k]).min() > 1e-5
    for votes in votes_by_k.values():
        top2 = np.sort(votes, axis=1)[:, -2:]
        assert ((top2[:, 1] - top2[:, 0]) / top2[:, 1]).min() > 1e-4


def test_predictions_match_float64_reference_across_chunks():
    tx, ty, vx, _ = random_problem(0)
    ref = {k: reference_votes(tx, ty, vx, k, 0.07, 7) for k in K_VALUES}
    assert_no_near_ties(tx, vx, ref)
    # 300 train rows and a 300*16-element budget -> 16 test rows per chunk, the last chunk partial.
    got = knn_predict(tx, ty, vx, k_values=K_VALUES, temperature=0.07, num_classes=7,
                      max_chunk_elements=300 * 16)
    for k in K_VALUES:
        np.testing.assert_array_equal(got[k], ref[k].argmax(axis=1))


def test_top1_and_top5_accuracy_match_reference():
    tx, ty, vx, vy = random_problem(1)
    result = knn_evaluate(tx, ty, vx, vy, k_values=K_VALUES, temperature=0.07, max_chunk_elements=1000)
    for k in K_VALUES:
        votes = reference_votes(tx, ty, vx, k, 0.07, 7)
        true = votes[np.arange(len(vy)), vy]
        assert result.top1[k] == pytest.approx((votes.argmax(axis=1) == vy).mean())
        top5 = (((votes > true[:, None]).sum(axis=1) < 5) & (true > 0)).mean()
        assert result.top5[k] == pytest.approx(top5)
    assert result.top5[1] == result.top1[1]                 # one neighbour: no zero-vote class counts
    assert result.num_classes == 7 and result.num_train == 300 and result.num_test == 90
    assert result.as_metrics()["knn_top5_k20"] == result.top5[20]
    assert knn_accuracy(tx, ty, vx, vy, k_values=K_VALUES) == result.top1


def test_no_top5_with_fewer_than_five_classes():
    tx, ty, vx, vy = random_problem(2, classes=3)
    result = knn_evaluate(tx, ty, vx, vy, k_values=(1, 5))
    assert result.top5 == {} and set(result.top1) == {1, 5}


def test_clustered_features_are_classified_perfectly():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, 8)) * 5
    ty, vy = np.repeat(np.arange(4), 30), np.repeat(np.arange(4), 10)
    tx = centres[ty] + rng.standard_normal((120, 8)) * 0.1
    vx = centres[vy] + rng.standard_normal((40, 8)) * 0.1
    assert knn_accuracy(tx, ty, vx, vy, k_values=K_VALUES) == {1: 1.0, 5: 1.0, 20: 1.0}


def test_votes_are_weighted_by_similarity_over_temperature():
    # One very close neighbour of class 0, two farther ones of class 1 (cosines 0.995, 0.9, 0.9).
    angle = np.arccos([0.995, 0.9, 0.9])
    tx = np.stack([np.cos(angle), np.sin(angle) * np.array([1, 1, -1])], axis=1)
    ty = np.array([0, 1, 1])
    vx, vy = np.array([[1.0, 0.0]]), np.array([0])
    # exp(0.995/0.07) > 2 exp(0.9/0.07): the close neighbour wins; at T = 10 the weights are ~equal: majority.
    assert knn_accuracy(tx, ty, vx, vy, k_values=(3,), temperature=0.07)[3] == 1.0
    assert knn_accuracy(tx, ty, vx, vy, k_values=(3,), temperature=10.0)[3] == 0.0


def test_k_larger_than_the_bank_is_clipped_with_a_message(capsys):
    tx, ty, vx, vy = random_problem(4, n_train=12, n_test=5)
    got = knn_accuracy(tx, ty, vx, vy, k_values=(12, 50))
    assert got[12] == got[50]
    assert "clipped to k = 12" in capsys.readouterr().out


@pytest.mark.parametrize("change,message", [
    (lambda tx, ty, vx, vy: (tx * np.nan, ty, vx, vy), "NaN or Inf"),
    (lambda tx, ty, vx, vy: (tx[:0], ty[:0], vx, vy), "at least one train label"),
    (lambda tx, ty, vx, vy: (tx, ty, vx[:, :3], vy), "dimension"),
    (lambda tx, ty, vx, vy: (tx, ty, vx, vy[:-1]), "test labels"),
    (lambda tx, ty, vx, vy: (tx, ty - 1, vx, vy), "non-negative"),
])
def test_bad_inputs_are_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        knn_accuracy(*change(*random_problem(5, n_train=20, n_test=4)))
