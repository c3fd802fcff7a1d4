"""Linear probe on frozen features: BatchNorm without affine (train-set standardisation) + a linear layer,
AdamW with cross-entropy, a small LR sweep selected on a held-out part of the *train* features, then
the test top-1 of the chosen LR."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

LRS = (1e-3, 3e-3, 1e-2, 3e-2)


def standardise(train: np.ndarray, *others: np.ndarray, eps: float = 1e-6):
    mean, var = train.mean(0), train.var(0)
    scale = 1.0 / np.sqrt(var + eps)
    return [((x - mean) * scale).astype(np.float32) for x in (train, *others)]


def _train(x, y, num_classes, lr, epochs, batch, seed):
    mx.random.seed(seed)
    model = nn.Linear(x.shape[1], num_classes)
    opt = optim.AdamW(learning_rate=lr, weight_decay=1e-4)

    def loss_fn(m, xb, yb):
        return nn.losses.cross_entropy(m(xb), yb, reduction="mean")

    grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, opt.state]
    step = mx.compile(lambda xb, yb: _step(model, opt, grad, xb, yb), inputs=state, outputs=state)
    rng = np.random.default_rng(seed)
    n = len(x)
    batch = min(batch, n)
    for _ in range(epochs):
        order = rng.permutation(n)
        for lo in range(0, n - batch + 1, batch):
            idx = order[lo:lo + batch]
            mx.eval(step(mx.array(x[idx]), mx.array(y[idx])))
    return model


def _step(model, opt, grad, xb, yb):
    loss, g = grad(model, xb, yb)
    opt.update(model, g)
    return loss


def _accuracy(model, x, y) -> float:
    pred = mx.argmax(model(mx.array(x)), axis=1)
    return float((pred == mx.array(y)).astype(mx.float32).mean().item())


def linear_probe(train_x, train_y, test_x, test_y, *, lrs=LRS, epochs: int = 50, batch: int = 64,
                 holdout: float = 0.2, seed: int = 0) -> dict:
    """{'test_top1', 'lr', 'val_top1' per lr}: LR chosen on a held-out 20 % of the train features."""
    train_y, test_y = np.asarray(train_y, np.int32), np.asarray(test_y, np.int32)
    num_classes = int(max(train_y.max(), test_y.max()) + 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_x))
    n_val = max(1, int(len(train_x) * holdout))
    val_idx, fit_idx = order[:n_val], order[n_val:]
    fx, vx = standardise(train_x[fit_idx], train_x[val_idx])
    scores = {lr: _accuracy(_train(fx, train_y[fit_idx], num_classes, lr, epochs, batch, seed), vx, train_y[val_idx])
              for lr in lrs}
    best = max(scores, key=lambda lr: (scores[lr], -lr))
    ax, tx = standardise(train_x, test_x)
    model = _train(ax, train_y, num_classes, best, epochs, batch, seed)
    return {"test_top1": _accuracy(model, tx, test_y), "lr": best, "val_top1": scores}
