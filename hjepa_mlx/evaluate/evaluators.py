"""The evaluation protocols `--protocol` can name: fn(tx, ty, vx, vy, *, k_values, temperature, seed) ->
{metric: value}, on one encoder's features (NumPy) of the labelled train (tx, ty) and test (vx, vy) images.

The built-ins are registered at the end of this module, in the order their metrics are reported.
"""

from __future__ import annotations

from collections.abc import Callable

from hjepa_mlx.registry import Registry

Evaluator = Callable[..., dict]

EVALUATORS: Registry[Evaluator] = Registry("evaluator")


def register_evaluator(name: str, fn: Evaluator) -> None:
    EVALUATORS.add(name, fn)


def unregister_evaluator(name: str) -> None:
    EVALUATORS.remove(name)


def evaluator(name: str) -> Evaluator:
    """The evaluator named `name`; UserError listing the known names otherwise."""
    return EVALUATORS.get(name)


def evaluator_names() -> tuple[str, ...]:
    return EVALUATORS.names()


def knn_metrics(tx, ty, vx, vy, *, k_values, temperature: float, seed: int) -> dict:
    from hjepa_mlx.evaluate.knn import knn_accuracy

    acc = knn_accuracy(tx, ty, vx, vy, k_values=k_values, temperature=temperature)
    return {f"knn_top1_k{k}": v for k, v in acc.items()}


def linear_metrics(tx, ty, vx, vy, *, k_values, temperature: float, seed: int) -> dict:
    from hjepa_mlx.evaluate.linear_probe import linear_probe

    probe = linear_probe(tx, ty, vx, vy, seed=seed)
    return {"linear_top1": probe["test_top1"], "linear_lr": probe["lr"]}


def quality_metrics(tx, ty, vx, vy, *, k_values, temperature: float, seed: int) -> dict:
    from hjepa_mlx.evaluate.quality import feature_quality

    return feature_quality(vx)      # of the test features: no labels needed


register_evaluator("knn", knn_metrics)
register_evaluator("linear", linear_metrics)
register_evaluator("quality", quality_metrics)
