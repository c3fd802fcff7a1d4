"""The precision policy: bf16 compute only on a GPU, a message when asked for bf16 on the CPU."""

import mlx.core as mx

from hjepa_mlx.models.precision import cast_floating, compute_dtype


def test_no_amp_is_fp32_silently():
    assert compute_dtype(False, mx.Device(mx.cpu)) == (mx.float32, None)
    assert compute_dtype(False, mx.Device(mx.gpu)) == (mx.float32, None)


def test_amp_on_cpu_falls_back_to_fp32_and_says_why():
    dtype, message = compute_dtype(True, mx.Device(mx.cpu))
    assert dtype == mx.float32
    assert "bf16" in message and "10x slower" in message and "fp32" in message and "\n" not in message


def test_amp_on_gpu_is_bf16():
    dtype, message = compute_dtype(True, mx.Device(mx.gpu))
    assert dtype == mx.bfloat16 and "bf16" in message


def test_cast_floating_leaves_integers_alone():
    tree = {"w": mx.ones((2,)), "idx": mx.array([1, 2]), "nested": [mx.zeros((1,))]}
    out = cast_floating(tree, mx.bfloat16)
    assert out["w"].dtype == mx.bfloat16 and out["nested"][0].dtype == mx.bfloat16
    assert out["idx"].dtype == mx.int32
    assert tree["w"].dtype == mx.float32          # master weights untouched
