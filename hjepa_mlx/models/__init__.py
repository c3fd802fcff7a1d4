"""Model templates (nn.Module) and pure helpers: ViT encoder, predictor, hierarchy pooling + FPN, EMA, precision.

Import from the submodules (`hjepa_mlx.models.vit`, `.predictor`, ...); this package file stays empty so
that importing one piece does not import them all.
"""
