"""Loss terms; each returns (scalar, dict of named scalar metrics), reductions in fp32.

jepa.py: prediction loss per hierarchy level; vicreg.py: VICReg terms; contrastive.py: NT-Xent;
total.py: `LossSettings` and `total_loss`, the configured combination.
"""
