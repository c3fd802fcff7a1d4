"""The I-JEPA predictor: shapes, the sequence it builds (against a NumPy assembly), block independence."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map
from test_models_reference import np_layer_norm, np_linear, np_sincos_2d_ijepa, to_numpy

from hjepa_mlx.errors import UserError
from hjepa_mlx.models.hierarchy import hierarchy_levels, level_grid
from hjepa_mlx.models.predictor import Predictor

GRID = (4, 5)
D, P = 16, 12


def _predictor(**kw):
    mx.random.seed(0)
    args = dict(grid=GRID, encoder_dim=D, predictor_dim=P, depth=2, num_heads=3)
    return Predictor(**{**args, **kw})


def _inputs(b=2, m=3, nc=6, k=4, seed=1):
    rng = np.random.default_rng(seed)
    n = GRID[0] * GRID[1]
    ctx_idx = np.stack([rng.choice(n, nc, replace=False) for _ in range(b)]).astype(np.int32)
    tgt_idx = np.stack([[rng.choice(n, k, replace=False) for _ in range(m)] for _ in range(b)]).astype(np.int32)
    context = rng.standard_normal((b, nc, D))
    return context, ctx_idx, tgt_idx


def _run(pred, context, ctx_idx, tgt_idx):
    return pred(mx.array(context.astype(np.float32)), mx.array(ctx_idx), mx.array(tgt_idx))


def test_output_shape():
    context, ctx_idx, tgt_idx = _inputs()
    assert _run(_predictor(), context, ctx_idx, tgt_idx).shape == (2, 3, 4, D)


@pytest.mark.parametrize("rope", [False, True])
def test_predictor_equals_numpy_assembly_of_each_block_sequence(rope):
    """Per block m: [embed(context) + pos(ctx) ; mask_token + pos(target_m)] through the blocks (the MLX
    Block, itself checked against NumPy), LayerNorm, mask-token outputs, projection - assembled in NumPy."""
    pred = _predictor(use_rope=rope, rope_theta=100.0)
    context, ctx_idx, tgt_idx = _inputs()
    out = np.array(_run(pred, context, ctx_idx, tgt_idx))
    p = to_numpy(pred.parameters())
    table = np_sincos_2d_ijepa(P, *GRID)
    for b in range(2):
        for m in range(3):
            seq = np.concatenate([np_linear(context[b], p["embed"]) + table[ctx_idx[b]],
                                  p["mask_token"] + table[tgt_idx[b, m]]])[None]
            idx = np.concatenate([ctx_idx[b], tgt_idx[b, m]])[None]
            positions = (mx.array(idx // GRID[1]), mx.array(idx % GRID[1])) if rope else None
            x = mx.array(seq.astype(np.float32))
            for block in pred.blocks:
                x = block(x, positions)
            x = np_layer_norm(np.array(x, dtype=np.float64), p["norm"]["weight"], p["norm"]["bias"])
            expected = np_linear(x[0, 6:], p["proj"])
            np.testing.assert_allclose(out[b, m], expected, atol=2e-5, rtol=1e-4)


def test_blocks_do_not_see_each_other():
    pred = _predictor()
    context, ctx_idx, tgt_idx = _inputs()
    a = np.array(_run(pred, context, ctx_idx, tgt_idx))
    changed = tgt_idx.copy()
    changed[:, 1] = (changed[:, 1] + 7) % 20
    b = np.array(_run(pred, context, ctx_idx, changed))
    np.testing.assert_allclose(b[:, [0, 2]], a[:, [0, 2]], atol=1e-6, rtol=0)
    assert np.abs(b[:, 1] - a[:, 1]).max() > 1e-4


def test_context_order_does_not_matter_and_target_order_permutes():
    pred = _predictor(use_rope=True)
    context, ctx_idx, tgt_idx = _inputs()
    a = np.array(_run(pred, context, ctx_idx, tgt_idx))
    perm_c = np.random.default_rng(2).permutation(6)
    b = np.array(_run(pred, context[:, perm_c], ctx_idx[:, perm_c], tgt_idx))
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    perm_t = np.array([2, 0, 3, 1])
    c = np.array(_run(pred, context, ctx_idx, tgt_idx[:, :, perm_t]))
    np.testing.assert_allclose(c, a[:, :, perm_t], atol=1e-5, rtol=0)


def test_mask_token_is_a_learned_parameter_and_tables_are_not():
    from mlx.utils import tree_flatten
    names = [k for k, _ in tree_flatten(_predictor().parameters())]
    assert "mask_token" in names and not any("pos" in k for k in names)


def test_dropout_is_refused_clearly():
    with pytest.raises(UserError, match="dropout"):
        _predictor(dropout=0.1)


@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("use_fpn", [False, True])
def test_prediction_shapes_per_hierarchy_level(levels, use_fpn):
    from hjepa_mlx.models.hierarchy import FPN

    pred = _predictor()
    context, ctx_idx, tgt_idx = _inputs()
    out = _run(pred, context, ctx_idx, tgt_idx)
    rows, cols = tgt_idx // GRID[1], tgt_idx % GRID[1]
    level_idx = [mx.array((rows >> l) * level_grid(GRID, l)[1] + (cols >> l)) for l in range(levels)]
    fpn = FPN(levels, D, 8) if use_fpn else None
    result = hierarchy_levels(out, out + 1.0, level_idx, GRID, normalize_embeddings=True, fpn=fpn)
    assert len(result) == levels
    for level, (p, t, w) in enumerate(result):
        cells = 4 if level == 0 and not use_fpn else int(np.prod(level_grid(GRID, level)))
        assert p.shape == t.shape == (2, 3, cells, D)
        assert w.shape == (2, 3, cells)


# ---------------------------------------------------------------- shared-context variant

def test_block_attention_bias_lets_context_see_context_and_each_block_itself():
    from hjepa_mlx.models.predictor import BLOCKED, block_attention_bias
    allowed = np.array(block_attention_bias(2, 2, 1)) == 0      # rows/cols: c0 c1 b0 b1
    expected = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(allowed, expected)
    assert np.array(block_attention_bias(2, 2, 1)).min() == BLOCKED


@pytest.mark.parametrize("rope", [False, True])
def test_shared_context_equals_the_exact_predictor_at_depth_one(rope):
    """With one block, a mask token's output depends on the context only through the block's input, which
    both variants share; only the context rows' own outputs differ, and those are not returned."""
    context, ctx_idx, tgt_idx = _inputs()

    def run(**kw):      # weights x 10: I-JEPA's 0.02-std init makes every block nearly the identity
        pred = _predictor(**kw)
        pred.update(tree_map(lambda p: p * 10, pred.parameters()))
        return np.array(_run(pred, context, ctx_idx, tgt_idx))

    exact, shared = run(depth=1, use_rope=rope), run(depth=1, use_rope=rope, shared_context=True)
    np.testing.assert_allclose(shared, exact, atol=1e-5, rtol=1e-5)
    assert np.abs(exact).mean() > 0.1
    deeper = [run(depth=2, use_rope=rope, shared_context=s) for s in (False, True)]
    assert np.abs(deeper[0] - deeper[1]).max() > 1e-2      # deeper, the context stops seeing the queries


@pytest.mark.parametrize("fused", [False, True])
def test_shared_context_blocks_are_isolated_from_each_other(fused):
    pred = _predictor(shared_context=True, use_fused_attention=fused)
    context, ctx_idx, tgt_idx = _inputs()
    together = np.array(_run(pred, context, ctx_idx, tgt_idx))
    for m in range(3):
        alone = np.array(_run(pred, context, ctx_idx, tgt_idx[:, m:m + 1]))
        np.testing.assert_allclose(together[:, m], alone[:, 0], atol=2e-6, rtol=1e-5)
