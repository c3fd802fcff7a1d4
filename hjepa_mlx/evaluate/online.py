"""k-NN on each labelled dataset during training, in that dataset's own label space.

Every configured k is reported (`knn_top1_k{k}`); `knn_top1` (what checkpoint.metric may select on) is
the accuracy at `evaluation.knn.metric_k`, fixed before the run - choosing the best k on the test split
afterwards would report an optimistically biased number.
"""

from __future__ import annotations

from dataclasses import dataclass

from hjepa_mlx.evaluate.features import extract_features, make_pooled_encoder
from hjepa_mlx.evaluate.knn import knn_accuracy


@dataclass(frozen=True)
class KnnSettings:
    """evaluation.knn: every `frequency` epochs (and after the last), k values, the fixed metric k,
    similarity temperature and the image caps."""
    frequency: int
    k_values: tuple[int, ...]
    metric_k: int
    temperature: float
    max_train_images: int
    max_val_images: int


def knn_during_training(model, state, loaders, knn: KnnSettings) -> dict[str, float]:
    encode = make_pooled_encoder(model, state["target"])
    out = {}
    for (name, train_loader), (_, val_loader) in zip(loaders.knn_train, loaders.knn_val):
        tx, ty, _ = extract_features(encode, train_loader.epoch(0), max_images=knn.max_train_images)
        vx, vy, _ = extract_features(encode, val_loader.epoch(0), max_images=knn.max_val_images)
        if len(tx) == 0 or len(vx) == 0:
            continue
        acc = knn_accuracy(tx, ty, vx, vy, k_values=knn.k_values, temperature=knn.temperature)
        suffix = "" if len(loaders.knn_train) == 1 else f"_{name}"
        for k, v in acc.items():
            out[f"knn_top1_k{k}{suffix}"] = v
        out[f"knn_top1{suffix}"] = acc[knn.metric_k]     # one k fixed by the config, never picked on the test split
    if len(loaders.knn_train) > 1:
        out["knn_top1"] = sum(v for key, v in out.items() if key.startswith("knn_top1_") and "_k" not in key) \
            / len(loaders.knn_train)
    return out
