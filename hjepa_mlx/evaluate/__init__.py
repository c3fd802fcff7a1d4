"""Evaluation of a frozen encoder: features.py (extract and pool features), knn.py (DINO weighted k-NN),
linear_probe.py (affine-free BatchNorm + linear layer, LR chosen on held-out train features), quality.py
(RankMe, per-dimension std, collapse flags), evaluators.py (the protocols by name, register_evaluator),
report.py (table beside the random-init baseline, JSON).

These modules take plain arrays and callables and know nothing of the model or the config; the wiring
lives in hjepa_mlx/cli/evaluate.py and hjepa_mlx/evaluate/online.py.
"""
