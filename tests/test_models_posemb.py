"""2-D sin-cos tables and axial 2-D RoPE against float64 NumPy, plus the RoPE properties."""

import mlx.core as mx
import numpy as np
import pytest
from test_models_reference import np_rope, np_sincos_2d_ijepa

from hjepa_mlx.models.posemb import grid_positions, rope_fused, rope_reference, sincos_2d, sincos_2d_numpy

IMPLS = {"reference": rope_reference, "fused": rope_fused}


@pytest.mark.parametrize("dim, h, w", [(16, 4, 4), (32, 3, 5), (384, 14, 14)])
def test_sincos_table_equals_ijepa_formula(dim, h, w):
    ref = np_sincos_2d_ijepa(dim, h, w)
    np.testing.assert_allclose(sincos_2d_numpy(dim, h, w), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.array(sincos_2d(dim, h, w)), ref, rtol=0, atol=1e-6)


def test_sincos_table_halves_encode_column_then_row():
    t = sincos_2d_numpy(8, 3, 4)                       # index = row * 4 + col
    same_col = [1, 5, 9]                               # col 1, rows 0..2
    same_row = [4, 5, 6, 7]                            # row 1, cols 0..3
    assert np.ptp(t[same_col, :4], axis=0).max() == 0  # first half depends on the column only
    assert np.ptp(t[same_row, 4:], axis=0).max() == 0  # second half on the row only
    assert np.ptp(t[same_row, :4], axis=0).max() > 0.1


def test_sincos_table_rejects_widths_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_numpy(18, 2, 2)


def _rope_inputs(b=2, n=5, h=3, hd=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, n, h, hd))
    idx = rng.integers(0, 49, size=(b, n))             # gathered positions on a 7 x 7 grid
    return x, idx // 7, idx % 7


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("theta", [10000.0, 100.0])
def test_rope_matches_numpy(impl, theta):
    x, rows, cols = _rope_inputs()
    out = IMPLS[impl](mx.array(x.astype(np.float32)), mx.array(rows), mx.array(cols), theta)
    np.testing.assert_allclose(np.array(out), np_rope(x, rows, cols, theta), atol=2e-6, rtol=0)


def test_rope_fused_equals_reference():
    x, rows, cols = _rope_inputs(b=3, n=11, h=2, hd=32, seed=1)
    args = (mx.array(x.astype(np.float32)), mx.array(rows), mx.array(cols), 10000.0)
    np.testing.assert_allclose(np.array(rope_fused(*args)), np.array(rope_reference(*args)), atol=1e-5, rtol=0)


def test_rope_gradients_fused_equal_reference():
    x, rows, cols = _rope_inputs(seed=2)
    w = mx.array(np.random.default_rng(3).standard_normal(x.shape).astype(np.float32))
    grads = [mx.grad(lambda t, f=f: (f(t, mx.array(rows), mx.array(cols), 100.0) * w).sum())(
        mx.array(x.astype(np.float32))) for f in IMPLS.values()]
    np.testing.assert_allclose(np.array(grads[0]), np.array(grads[1]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_rope_preserves_norms_per_head(impl):
    x, rows, cols = _rope_inputs(seed=4)
    out = np.array(IMPLS[impl](mx.array(x.astype(np.float32)), mx.array(rows), mx.array(cols), 10000.0))
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)
    assert np.abs(out - x).max() > 0.1                 # it did rotate


@pytest.mark.parametrize("impl", IMPLS)
def test_rope_dot_product_depends_only_on_relative_position(impl):
    rng = np.random.default_rng(5)
    q = np.broadcast_to(rng.standard_normal((1, 1, 1, 16)), (1, 4, 1, 16)).astype(np.float32)
    k = np.broadcast_to(rng.standard_normal((1, 1, 1, 16)), (1, 4, 1, 16)).astype(np.float32)
    # the same offset (dr, dc) = (2, -1) from four different query positions
    q_rows, q_cols = np.array([[0, 3, 5, 10]]), np.array([[4, 1, 7, 2]])
    k_rows, k_cols = q_rows + 2, q_cols - 1
    rope = IMPLS[impl]
    rq = np.array(rope(mx.array(q), mx.array(q_rows), mx.array(q_cols), 100.0))
    rk = np.array(rope(mx.array(k), mx.array(k_rows), mx.array(k_cols), 100.0))
    dots = (rq * rk).sum(-1).reshape(-1)
    np.testing.assert_allclose(dots, dots[0], rtol=1e-4, atol=1e-5)
    # and a different offset gives a different product (the test can fail)
    rk2 = np.array(rope(mx.array(k), mx.array(q_rows + 1), mx.array(q_cols + 3), 100.0))
    assert abs((rq * rk2).sum(-1).reshape(-1)[0] - dots[0]) > 1e-3


def test_grid_positions_of_raster_indices():
    rows, cols = grid_positions(mx.array([[0, 6, 13, 20]]), 7)
    assert rows.tolist() == [[0, 0, 1, 2]] and cols.tolist() == [[0, 6, 6, 6]]
