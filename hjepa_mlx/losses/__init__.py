"""Loss terms; each returns (scalar, dict of named scalar metrics), reductions in fp32.

jepa.py: prediction loss per hierarchy level; registry.py: the terms added to it, by name; vicreg.py:
VICReg and its term; contrastive.py: NT-Xent and its term; total.py: `LossSettings` and `total_loss`,
the configured combination.
"""

# The built-in terms register on import, in this order: total_loss adds the terms in registration order,
# VICReg before NT-Xent.
from hjepa_mlx.losses import vicreg  # noqa: F401  isort: skip
from hjepa_mlx.losses import contrastive  # noqa: F401  isort: skip
