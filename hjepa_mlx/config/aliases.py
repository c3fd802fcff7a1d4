"""The one table of accepted legacy spellings (the seed configs spell some keys several ways).

Each entry maps a legacy dotted path to its canonical dotted path. A legacy key may name a whole
section (`data.augmentation` -> `data.transforms`). When a file uses both spellings with different
values, loading fails: we never pick one silently.
"""

from __future__ import annotations

ALIASES: dict[str, str] = {
    # overnight_training_{conservative,aggressive}.yaml write these flat under `model`.
    "model.use_fpn": "model.fpn.use_fpn",
    "model.use_gradient_checkpointing": "training.use_gradient_checkpointing",
    # overnight_training_aggressive.yaml calls the transforms section `augmentation`.
    "data.augmentation": "data.transforms",
    # overnight_safe.yaml spells the VICReg coefficients flat.
    "loss.vicreg_invariance_weight": "loss.vicreg.sim_coeff",
    "loss.vicreg_variance_weight": "loss.vicreg.std_coeff",
    "loss.vicreg_covariance_weight": "loss.vicreg.cov_coeff",
    # All three seeds keep save/eval frequencies under `experiment` as well.
    "experiment.save_frequency": "checkpoint.save_frequency",
    "experiment.eval_frequency": "evaluation.eval_frequency",
}


# Keys this project had and removed, with what replaces them. A user's file that sets one is refused with
# the reason; a resolved config saved by an older version (checkpoint metadata) loads without it.
REMOVED: dict[str, str] = {
    "evaluation.val_batches": "validation now uses every image held out by data.val_holdout; set that instead",
}


def canonical_path(path: str) -> str:
    """The canonical spelling of a dotted path (also for keys below an aliased section)."""
    for legacy, canonical in ALIASES.items():
        if path == legacy or path.startswith(legacy + "."):
            return canonical + path[len(legacy):]
    return path
