"""Where VICReg looks: the representation the regulariser acts on, chosen so its hinge cannot be cheated.

VICReg's variance term asks every dimension of the pooled features to have std >= 1 across the batch.
Applied to the context encoder's output after its *affine* final LayerNorm, that is met by growing the
LayerNorm gain - which the target path's affine-free normalisation removes again - so the term stops
acting on the representation (measured: vicreg_variance flat at ~0.6 while the target features' std fell).
Four choices (`loss.vicreg.projector`):

- ``none``: the mean-pooled encoder tokens, as before (kept for comparison).
- ``layernorm``: the tokens normalised without affine parameters (as the target), then mean-pooled:
  no gain to grow; the hinge must be met by the features varying across images.
- ``centered``: the tokens minus their mean over the batch (every token of every image; the global batch
  under data parallelism), then as ``layernorm``. A ViT's tokens share a large common vector (62 % of
  their energy at init, 84 % after a quick start with ``layernorm``); per-token normalisation spends each
  token's unit norm on it, which bounds the pooled features' variance far below the hinge, shrinks the
  covariance term by std^4 (to ~1/600 of its design scale) and lets the invariance term be met by growing
  the common vector. Removed first, the regulariser sees only what differs between images and positions.
- ``expander``: VICReg's own design, an MLP Linear-BN-ReLU, Linear-BN-ReLU, Linear on the mean-pooled
  tokens (Bardes et al. 2022, section 4.2). Its BatchNorm uses the batch statistics of the step (the
  expander exists only for the loss, so no running statistics are kept and the step stays pure).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from hjepa_mlx.kernels import layer_norm

PROJECTORS = ("none", "layernorm", "centered", "expander")
BN_EPS = 1e-5
TOKEN_LN_EPS = 1e-6


class BatchNormTrain(nn.Module):
    """BatchNorm over the batch axis with learned scale/shift and no running statistics: x (n, d)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = mx.ones((dim,))
        self.bias = mx.zeros((dim,))

    def __call__(self, x: mx.array) -> mx.array:
        mean = x.mean(axis=0)
        var = mx.var(x, axis=0)            # biased, as BatchNorm normalises
        return (x - mean) * mx.rsqrt(var + BN_EPS) * self.weight + self.bias


class Expander(nn.Module):
    """VICReg's expander: Linear(d, e)-BN-ReLU, Linear(e, e)-BN-ReLU, Linear(e, e). x (n, d) -> (n, e)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim)
        self.bn1 = BatchNormTrain(dim)
        self.fc2 = nn.Linear(dim, dim)
        self.bn2 = BatchNormTrain(dim)
        self.fc3 = nn.Linear(dim, dim)

    def __call__(self, x: mx.array) -> mx.array:
        x = nn.relu(self.bn1(self.fc1(x)))
        x = nn.relu(self.bn2(self.fc2(x)))
        return self.fc3(x)


def regularised_features(tokens: mx.array, kind: str, expander: Expander | None = None,
                         row_mean=None) -> mx.array:
    """The (B, E) features VICReg acts on, from context-encoder tokens (B, N, D) (see the module docstring).
    row_mean: None, or (B, D) -> (D,) the mean over every rank's rows (distributed.global_row_mean), so that
    ``centered`` subtracts the global batch's mean (equal token counts: the mean of image means is the token mean)."""
    if kind not in PROJECTORS:
        raise ValueError(f"unknown VICReg projector {kind!r}; choose one of {PROJECTORS}")
    tokens = tokens.astype(mx.float32)
    if kind == "centered":
        image_means = tokens.mean(axis=1)
        tokens = tokens - (image_means.mean(axis=0) if row_mean is None else row_mean(image_means))
    if kind in ("layernorm", "centered"):
        return layer_norm(tokens, None, None, TOKEN_LN_EPS).mean(axis=1)
    pooled = tokens.mean(axis=1)
    if kind == "expander":
        if expander is None:
            raise ValueError("the 'expander' projector needs an Expander module")
        return expander(pooled)
    return pooled
