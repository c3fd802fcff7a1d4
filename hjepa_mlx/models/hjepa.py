"""H-JEPA as pure functions over parameter trees: the module objects are templates only.

`HJEPAModel.loss(params, target_params, micro)` runs, for one micro-batch:
  context encoder on the context indices (view 1, and view 2 when two views are used),
  target encoder on the full image (no gradient) + layer norm without affine parameters,
  predictor for every target block, hierarchy pooling (+ FPN), and the configured loss terms.
The prediction loss uses view 1; view 2 only feeds the pooled features of the loss terms (VICReg, NT-Xent,
registered ones: losses/registry.py); multi-crop's local crops (`local_crops`, when present) only feed VICReg.
"""

from __future__ import annotations

import contextlib

import mlx.core as mx
import mlx.nn as nn

from hjepa_mlx.levels import parent_cells
from hjepa_mlx.losses.total import LossSettings, total_loss
from hjepa_mlx.models.hierarchy import hierarchy_levels, target_features
from hjepa_mlx.models.precision import cast_floating
from hjepa_mlx.models.projector import Expander, regularised_features


class HJEPAModel(nn.Module):
    def __init__(self, *, encoder, target_encoder, predictor, fpn, grid, num_levels: int,
                 normalize_embeddings: bool, loss_settings: LossSettings, two_views: bool,
                 compute_dtype=mx.float32, vicreg_projector: str = "none", expander: Expander | None = None,
                 side_stream=None, feature_gather=None, feature_mean=None):
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        if fpn is not None:
            self.fpn = fpn
        if expander is not None:
            self.expander = expander      # trainable: params["expander"]
        self._projector = vicreg_projector
        # Templates kept out of the trainable tree: the target encoder's weights live in state["target"].
        self._target_encoder = target_encoder
        self._fpn = fpn
        self._grid = grid
        self._num_levels = num_levels
        self._normalize = normalize_embeddings
        self._loss_settings = loss_settings
        self._two_views = two_views
        self._dtype = compute_dtype
        self._side_stream = side_stream   # None: everything on the default stream (training.parallel_streams)
        self._gather = feature_gather     # data parallel: (B, D) -> (N*B, D) of every rank (distributed.gather_rows)
        self._row_mean = feature_mean     # data parallel: (B, D) -> (D,) over every rank (distributed.global_row_mean)

    # Read-only views of the templates, for the code that draws, evaluates or times the model.
    @property
    def target_encoder(self):
        """The target encoder's module template (its weights live in state["target"], not here)."""
        return self._target_encoder

    @property
    def grid(self) -> tuple[int, int]:
        """(grid_h, grid_w) patch grid."""
        return self._grid

    @property
    def loss_settings(self) -> LossSettings:
        return self._loss_settings

    def levels(self, pred, gathered, level_idx):
        """The hierarchy levels of predictions and gathered targets (B, M, K, D), as the loss pools them."""
        return hierarchy_levels(pred, gathered, level_idx, self._grid, self._normalize, fpn=self._fpn)

    @property
    def num_levels(self) -> int:
        return self._num_levels

    def _cast(self, tree):
        return cast_floating(tree, self._dtype)

    def encode_target(self, target_params, images):
        """Frozen target encoder tokens (B, N, D), layer-normed without affine parameters, fp32."""
        self._target_encoder.update(self._cast(target_params))
        out = target_features(self._target_encoder, images.astype(self._dtype))
        return mx.stop_gradient(out.astype(mx.float32))

    def _side(self):
        """Where independent work goes: the second stream when training.parallel_streams is on."""
        return mx.stream(self._side_stream) if self._side_stream is not None else contextlib.nullcontext()

    def _regularised(self, tokens):
        return regularised_features(tokens, self._projector, getattr(self, "expander", None), self._row_mean)

    def _local_features(self, crops):
        """Multi-crop's local crops (B, L, h, w, 3), unmasked through the context encoder -> (B, L, E), what
        VICReg acts on for each crop (the same projector as the global views); batch first, so the data-
        parallel gather concatenates ranks along the batch like every other feature."""
        b, n = crops.shape[:2]
        tokens = self.encoder(crops.reshape(b * n, *crops.shape[2:]).astype(self._dtype))
        return self._regularised(tokens).reshape(b, n, -1)

    def loss(self, params, target_params, micro):
        self.update(self._cast(params))
        images = micro["images"].astype(self._dtype)
        context_idx, target_idx = micro["context_idx"], micro["target_idx"]
        level_idx = [parent_cells(target_idx, self._grid, level) for level in range(self._num_levels)]

        with self._side():
            target_tokens = self.encode_target(target_params, micro["images"])       # (B, N, D)
        gathered = mx.take_along_axis(target_tokens[:, None], target_idx[..., None], axis=2)  # (B, M, K, D)

        context = self.encoder(images, context_idx)                                   # (B, Nc, D)
        pred = self.predictor(context, context_idx, target_idx).astype(mx.float32)    # (B, M, K, D)
        levels = self.levels(pred, gathered, level_idx)

        features = {"context_pooled_1": context.astype(mx.float32).mean(axis=1),
                    "target_pooled_1": target_tokens.mean(axis=1)}
        wanted = self._loss_settings.extra_features   # what the enabled terms read beyond the pooled features
        # "none" acts on the pooled tokens themselves: the VICReg term falls back to context_pooled_*
        vicreg = "vicreg_1" in wanted and self._projector != "none"
        if vicreg:
            features["vicreg_1"] = self._regularised(context)
        if self._two_views:
            images2 = micro["images_view2"]
            # view 2 has its own mask (masks.MaskBatch.context_idx_view2): shared masks let VICReg be met by position
            with self._side():
                context2 = self.encoder(images2.astype(self._dtype), micro["context_idx_view2"])
            features["context_pooled_2"] = context2.astype(mx.float32).mean(axis=1)
            if vicreg:
                features["vicreg_2"] = self._regularised(context2)
            if "local_crops" in micro:
                features["vicreg_local"] = self._local_features(micro["local_crops"])
            if "target_pooled_2" in wanted:   # e.g. NT-Xent against target features: view 2's targets
                features["target_pooled_2"] = self.encode_target(target_params, images2).mean(axis=1)
        if self._gather is not None:      # the loss terms' batch statistics over the global batch
            features = {name: self._gather(value) for name, value in features.items()}
        loss, metrics = total_loss(self._loss_settings, levels, features)
        metrics = {**metrics,
                   "context_std": features["context_pooled_1"].std(axis=0).mean(),
                   "target_std": features["target_pooled_1"].std(axis=0).mean()}
        return loss, metrics
