"""Recomputation (mx.checkpoint around each block) changes memory, never the loss or the gradients."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from hjepa_mlx.models.predictor import Predictor
from hjepa_mlx.models.vit import ViTEncoder


class _Tiny(nn.Module):
    def __init__(self, use_checkpoint, use_rope):
        super().__init__()
        mx.random.seed(0)
        common = dict(use_layerscale=True, layerscale_init=0.1, use_rope=use_rope, use_checkpoint=use_checkpoint)
        self.encoder = ViTEncoder(patch_size=4, image_size=16, embed_dim=16, depth=2, num_heads=2, **common)
        self.predictor = Predictor(grid=(4, 4), encoder_dim=16, predictor_dim=8, depth=2, num_heads=2, **common)

    def loss(self, images, ctx_idx, tgt_idx, target):
        pred = self.predictor(self.encoder(images, ctx_idx), ctx_idx, tgt_idx)
        diff = mx.abs(pred - target)
        return mx.where(diff < 1.0, 0.5 * diff * diff, diff - 0.5).mean()   # smooth-L1, beta 1


@pytest.mark.parametrize("use_rope", [False, True])
def test_checkpointing_gives_the_same_loss_and_gradients(use_rope, monkeypatch):
    from hjepa_mlx.models import vit
    calls = {"n": 0}
    original = vit.Block.__call__

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)
    monkeypatch.setattr(vit.Block, "__call__", counted)
    rng = np.random.default_rng(1)
    images = mx.array(rng.standard_normal((2, 16, 16, 3)).astype(np.float32))
    ctx_idx = mx.array(np.array([[0, 1, 2, 4, 5, 6], [9, 10, 11, 13, 14, 15]], dtype=np.int32))
    tgt_idx = mx.array(np.array([[[10, 11], [14, 15]], [[0, 1], [4, 5]]], dtype=np.int32))
    target = mx.array(rng.standard_normal((2, 2, 2, 16)).astype(np.float32))
    results, block_calls = [], []
    for use_checkpoint in (False, 1, True):     # 1: the leading block of each stack (recompute: fit)
        model = _Tiny(use_checkpoint, use_rope)
        calls["n"] = 0
        loss, grads = nn.value_and_grad(model, model.loss)(images, ctx_idx, tgt_idx, target)
        mx.eval(loss, grads)
        results.append((loss.item(), dict(tree_flatten(grads))))
        block_calls.append(calls["n"])
    # 4 blocks (2 encoder + 2 predictor): recomputation runs each recomputed block again in the backward pass
    assert block_calls == [4, 6, 8], block_calls
    loss_a, grads_a = results[0]
    for loss_b, grads_b in results[1:]:
        assert abs(loss_a - loss_b) <= 1e-6
        assert grads_a.keys() == grads_b.keys()
        for name in grads_a:
            np.testing.assert_allclose(np.array(grads_b[name]), np.array(grads_a[name]), atol=1e-6, rtol=0,
                                       err_msg=name)
    assert max(float(mx.abs(g).max()) for g in grads_a.values()) > 1e-3
