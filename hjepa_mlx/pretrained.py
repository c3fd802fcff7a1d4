"""A trained encoder outside the training loop: `load_encoder(path) -> Encoder`.

    import hjepa_mlx
    encoder = hjepa_mlx.load_encoder("runs/quickstart")          # or an exported .safetensors
    tokens = encoder(images)             # (B, H, W, 3) normalised float -> (B, N, D)

`path` is a run directory (its latest checkpoint), a training checkpoint, or an export of
`scripts/export.py` (`--format mlx` or `--format timm`); see `hjepa_mlx.export`. From a checkpoint the
target (EMA) encoder is loaded unless `encoder="context"`.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from hjepa_mlx.errors import UserError
from hjepa_mlx.export import EncoderWeights, read_encoder_weights


class Encoder:
    """A frozen ViT encoder.

    encoder(images) -> tokens (B, N, D): images (B, H, W, 3) float (NumPy or MLX), normalised as
      `preprocess` does; tokens after the encoder's final LayerNorm, in raster patch order. This is
      timm's `model.forward_features(x)` for the timm export.
    encoder.pool(images) -> (B, D): the mean of the tokens; timm's `model(x)` for the timm export.
    encoder.features(images, level=0) -> (B, D): the project's evaluation features (scripts/evaluate.py,
      online k-NN): tokens layer-normed without affine parameters, then averaged (level 0) or averaged
      per 2^level x 2^level cell, L2-normalised and averaged over cells.
    encoder.preprocess(image uint8 (H, W, 3)) -> float32 (S, S, 3): the evaluation transform (resize the
      shorter side to S / 0.875, centre crop S, (x / 255 - mean) / std).
    Attributes: module (the `ViTEncoder`), config (its arguments), info (encoder, step, source),
    image_size, grid, mean, std.
    """

    def __init__(self, weights: EncoderWeights):
        from hjepa_mlx.data.transforms import IMAGENET_MEAN, IMAGENET_STD, make_eval_transform
        from hjepa_mlx.models.vit import ViTEncoder

        self.config = dict(weights.config)
        self.info = dict(weights.info)
        self.module = ViTEncoder(**self.config)
        _check_shapes(self.module, weights)
        self.module.update(tree_unflatten(list(weights.params.items())))
        self.module.freeze()
        mx.eval(self.module.parameters())
        self.image_size = self.config["image_size"]
        self.grid = self.module.grid
        self.mean, self.std = tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
        self._transform = make_eval_transform(self.image_size, mean=self.mean, std=self.std)
        self._tokens = mx.compile(self.module.__call__)

    def __call__(self, images) -> mx.array:
        images = mx.array(images, dtype=mx.float32) if not isinstance(images, mx.array) else images
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"expected images (B, {self.image_size}, {self.image_size}, 3), got "
                             f"{tuple(images.shape)}; see Encoder.preprocess")
        return self._tokens(images.astype(mx.float32))

    def pool(self, images) -> mx.array:
        return self(images).mean(axis=1)

    def features(self, images, level: int = 0) -> mx.array:
        from hjepa_mlx.evaluate.features import level_features
        from hjepa_mlx.models.hierarchy import TARGET_LN_EPS

        tokens = mx.fast.layer_norm(self(images), None, None, TARGET_LN_EPS)
        return level_features(tokens, self.grid, level)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return self._transform(np.asarray(image, dtype=np.uint8))

    def parameters(self) -> dict:
        """{flat name: array} of the encoder's weights (MLX layouts)."""
        return dict(tree_flatten(self.module.parameters()))


def _check_shapes(module, weights: EncoderWeights) -> None:
    expected = dict(tree_flatten(module.parameters()))
    source = weights.info.get("source")
    missing = sorted(set(expected) - set(weights.params))
    extra = sorted(set(weights.params) - set(expected))
    if missing or extra:
        what = f"lacks '{missing[0]}'" if missing else f"has '{extra[0]}', which the encoder does not"
        raise UserError(f"{source}: the encoder weights {what} ({len(missing)} missing, {len(extra)} extra); "
                        f"the file does not match the architecture it describes")
    for key, ref in expected.items():
        got = weights.params[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise UserError(f"{source}: '{key}' has shape {tuple(got.shape)}, the encoder expects "
                            f"{tuple(ref.shape)}; the file does not match the architecture it describes")


def load_encoder(path, encoder: str | None = None) -> Encoder:
    """The encoder stored at `path` (run directory, checkpoint, or export), ready to run.
    encoder: 'target' (default for checkpoints) or 'context'. UserError for a missing, corrupt or
    foreign file."""
    return Encoder(read_encoder_weights(path, encoder))
