"""Linear probe on frozen, cached features.

The probe is BatchNorm without affine parameters followed by one linear layer (as MAE / I-JEPA). With
frozen features BatchNorm's statistics are those of the train set, so it is applied once up front as a
standardisation with the train mean and variance (eps 1e-6); the same statistics are used on the test set.

Training: AdamW (with bias correction, as PyTorch), mean cross-entropy, cosine learning-rate decay to 0
over a fixed number of epochs, shuffled mini-batches (the last partial batch is dropped so the compiled
step sees one shape), zero-initialised weights (the problem is convex, so no random init is needed and a
run is deterministic given `seed`).

Learning-rate selection: each LR of a small sweep is trained on 80 % of the TRAIN features and scored on
the held-out 20 %; the chosen LR (ties -> the smaller LR) is retrained on all train features and only
then scored once on the test set. The test set never influences a choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from hjepa_mlx.errors import UserError

LRS = (1e-3, 3e-3, 1e-2, 3e-2)
BN_EPS = 1e-6


def standardise(train: np.ndarray, *others: np.ndarray, eps: float = BN_EPS) -> list[np.ndarray]:
    """Affine-free BatchNorm with train-set statistics: (x - mean_train) / sqrt(var_train + eps).

    Returns float32 arrays [train, *others]; statistics are computed in float64 (population variance).
    """
    train64 = np.asarray(train, np.float64)
    mean, var = train64.mean(axis=0), train64.var(axis=0)
    scale = 1.0 / np.sqrt(var + eps)
    return [((np.asarray(x, np.float64) - mean) * scale).astype(np.float32) for x in (train, *others)]


def train_linear(x: np.ndarray, y: np.ndarray, num_classes: int, *, lr: float, epochs: int, batch_size: int,
                 weight_decay: float, seed: int) -> nn.Linear:
    """A linear classifier trained on already standardised features.

    Args:
      x: (n, D) float32 standardised features; y: (n,) int labels in [0, num_classes).
      lr: AdamW peak learning rate (cosine-decayed to 0); epochs, batch_size: as in `linear_probe`.
      weight_decay: AdamW decoupled weight decay; seed: mini-batch shuffling seed.
    """
    model = nn.Linear(x.shape[1], num_classes)
    model.update({"weight": mx.zeros_like(model.weight), "bias": mx.zeros_like(model.bias)})
    batch_size = min(batch_size, len(x))
    steps_per_epoch = len(x) // batch_size
    schedule = optim.cosine_decay(lr, max(1, epochs * steps_per_epoch))
    opt = optim.AdamW(learning_rate=schedule, weight_decay=weight_decay, bias_correction=True)   # standard Adam
    loss_and_grad = nn.value_and_grad(model, lambda m, xb, yb: nn.losses.cross_entropy(m(xb), yb).mean())
    state = [model.state, opt.state]
    step = _compiled_step(model, opt, loss_and_grad, state)
    xs, ys = mx.array(x), mx.array(np.asarray(y, np.int32))     # resident once; batches are gathered lazily
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(steps_per_epoch):
            idx = mx.array(order[i * batch_size:(i + 1) * batch_size])
            loss = step(xs[idx], ys[idx])
            mx.eval(state, loss)
    return model


def _compiled_step(model, opt, loss_and_grad, state):
    """One AdamW step on a mini-batch, compiled with the model and optimizer state as implicit state."""
    def step(xb, yb):
        loss, grads = loss_and_grad(model, xb, yb)
        opt.update(model, grads)
        return loss
    return mx.compile(step, inputs=state, outputs=state)


def predict_logits(model: nn.Linear, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits (n, C) float32 for standardised features x (n, D)."""
    chunks = [np.array(model(mx.array(x[i:i + batch_size]))) for i in range(0, len(x), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, model.weight.shape[0]), np.float32)


def topk_accuracy(logits: np.ndarray, y: np.ndarray, k: int) -> float:
    """Fraction of rows whose label has fewer than k logits strictly above it (ties count as hits)."""
    true = logits[np.arange(len(y)), y][:, None]
    return float(((logits > true).sum(axis=1) < k).mean())


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, *, lrs: Sequence[float] = LRS, epochs: int = 100, batch_size: int = 256,
                 weight_decay: float = 1e-4, holdout: float = 0.2, seed: int = 0,
                 num_classes: int | None = None) -> dict:
    """Linear-probe top-1 on the test set with the LR chosen on held-out train features.

    Args:
      train_features, train_labels: (N, D) frozen features and (N,) int labels (N >= 2).
      test_features, test_labels: (M, D) and (M,), scored once with the chosen LR.
      lrs: AdamW peak learning rates of the sweep.
      epochs, batch_size: passes over the data and mini-batch size (clipped to the data size).
      weight_decay: AdamW decoupled weight decay.
      holdout: fraction of the train features held out to choose the LR (0 < holdout < 1).
      seed: shuffling and hold-out split seed.
      num_classes: default 1 + the largest label in train or test.

    Returns {'test_top1', 'test_top5' (only when >= 5 classes), 'lr' (chosen), 'val_top1' {lr: held-out
    top-1}}.
    """
    train_x, test_x = _features(train_features, "train"), _features(test_features, "test")
    train_y, test_y = _int_labels(train_labels, len(train_x), "train"), _int_labels(test_labels, len(test_x), "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise UserError(f"linear probe: train features have dimension {train_x.shape[1]}, test {test_x.shape[1]}")
    if not 0.0 < holdout < 1.0 or len(train_x) < 2:
        raise ValueError(f"need 0 < holdout < 1 and >= 2 train rows; got holdout={holdout}, {len(train_x)} rows")
    num_classes = num_classes or int(max(train_y.max(), test_y.max()) + 1)
    fit = dict(epochs=epochs, batch_size=batch_size, weight_decay=weight_decay, seed=seed)

    order = np.random.default_rng(seed).permutation(len(train_x))
    n_val = min(len(train_x) - 1, max(1, round(len(train_x) * holdout)))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    fx, vx = standardise(train_x[fit_idx], train_x[val_idx])
    val_top1 = {}
    for lr in lrs:
        model = train_linear(fx, train_y[fit_idx], num_classes, lr=lr, **fit)
        val_top1[lr] = topk_accuracy(predict_logits(model, vx), train_y[val_idx], 1)
    best = max(val_top1, key=lambda lr: (val_top1[lr], -lr))

    ax, tx = standardise(train_x, test_x)
    logits = predict_logits(train_linear(ax, train_y, num_classes, lr=best, **fit), tx)
    out = {"test_top1": topk_accuracy(logits, test_y, 1), "lr": best, "val_top1": val_top1}
    if num_classes >= 5:
        out["test_top5"] = topk_accuracy(logits, test_y, 5)
    return out


def _features(x, split: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or len(x) == 0:
        raise UserError(f"linear probe needs a non-empty (n, D) {split} feature matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise UserError(f"linear probe: the {split} features contain NaN or Inf; the encoder's weights have "
                        "diverged (evaluate an earlier checkpoint)")
    return x


def _int_labels(y, n: int, split: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if len(y) != n or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise UserError(f"linear probe: {split} labels must be {n} non-negative integers, got {len(y)} of "
                        f"dtype {y.dtype}")
    return y.astype(np.int64)
