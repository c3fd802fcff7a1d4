"""Fast CPU kernels (GELU, softmax, LayerNorm, attention, biases, AdamW), with MLX's own ops as the reference.

MLX's CPU backend evaluates element-wise transcendental functions one element at a time on one thread
(exact GELU ~25-40 ns per element, softmax ~10 ns), so on a CPU they, not the matmuls, dominate a ViT
step; it runs attention as head transposes plus one small BLAS call per (image, head) and product
(~5-15 GFLOP/s), and a Linear's bias as a one-thread broadcast add (and its gradient as a one-thread sum).
The attention kernel takes the qkv projection and does one (image, head) per job; the bias kernels split
rows over the cores. `hjepa_mlx._kernels` (C++, `csrc/`, built by `pip install`) implements the same
math as MLX primitives with vectorised loops split over the cores, forward and backward, so `mx.grad`,
`mx.compile` and `mx.checkpoint` work unchanged.

Each function here uses the C++ kernel only when it can: the module was built against this MLX
version, the default device is the CPU, the input is float32 and `HJEPA_KERNELS` is not `off`.
Otherwise it calls MLX's op (on Metal and CUDA MLX's fused GPU kernels are the fast path anyway).
When the kernels cannot be used on a CPU, the first call prints one line saying why.
"""

from __future__ import annotations

import contextlib
import os

import mlx.core as mx
import mlx.nn as nn

ENV_VAR = "HJEPA_KERNELS"


def _load():
    """(module or None, reason): the C++ kernels if this process can use them."""
    if os.environ.get(ENV_VAR, "").strip().lower() in {"off", "0", "false", "none"}:
        return None, f"{ENV_VAR}={os.environ[ENV_VAR]}"
    try:
        from hjepa_mlx import _kernels
    except ImportError as exc:
        return None, f"the C++ extension is not built or does not load ({exc}); reinstall with a C++20 compiler"
    if _kernels.mlx_version != mx.__version__:
        return None, (f"the C++ extension was built for MLX {_kernels.mlx_version}, this is MLX {mx.__version__}; "
                      f"reinstall hjepa-mlx")
    try:  # the array type must cross the nanobind boundary and the primitive must evaluate
        x = mx.array([-1.0, 0.0, 2.0])
        ok = mx.allclose(_kernels.gelu(x, stream=mx.cpu), nn.gelu(x), atol=1e-6).item()
    except Exception as exc:  # noqa: BLE001  (any failure here means: do not use the kernels)
        return None, f"the C++ extension does not work with this MLX ({type(exc).__name__}: {exc})"
    if not ok:
        return None, "the C++ extension's GELU disagrees with MLX's; not using it"
    return _kernels, "loaded"


_EXT, _REASON = _load()
_state = {"disabled": 0, "warned": False}


def available() -> bool:
    """True when the C++ kernels loaded and passed their check."""
    return _EXT is not None


def describe() -> str:
    """One line: which kernels element-wise ops use on the CPU (when it says the C++ kernels are not
    used, the wrappers do not say it again)."""
    if _EXT is None:
        _state["warned"] = True
        return f"kernels: MLX's own ops ({_REASON})"
    return (f"kernels: hjepa_mlx C++ CPU kernels ({_EXT.isa()}, {_EXT.threads()} threads) for GELU, softmax, "
            f"LayerNorm, attention, Linear biases, AdamW")


@contextlib.contextmanager
def disabled():
    """Within this block (and in functions traced within it) the wrappers call MLX's own ops."""
    _state["disabled"] += 1
    try:
        yield
    finally:
        _state["disabled"] -= 1


def _device_is_cpu() -> bool:
    return mx.default_device().type == mx.DeviceType.cpu


def use_kernels_for(x: mx.array) -> bool:
    """Whether a wrapper called on x now takes the C++ kernel."""
    if _state["disabled"] or not _device_is_cpu() or x.dtype != mx.float32:
        return False
    if _EXT is None:
        if not _state["warned"]:
            _state["warned"] = True
            print(f"kernels: using MLX's own GELU/softmax/LayerNorm on the CPU (slower): {_REASON}")
        return False
    return True


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, x * Phi(x): `mlx.nn.gelu`'s math."""
    return _EXT.gelu(x) if use_kernels_for(x) else nn.gelu(x)


def softmax(x: mx.array) -> mx.array:
    """Softmax over the last axis: `mx.softmax(x, axis=-1)`'s math."""
    return _EXT.softmax(x) if use_kernels_for(x) else mx.softmax(x, axis=-1)


def layer_norm(x: mx.array, weight: mx.array | None, bias: mx.array | None, eps: float) -> mx.array:
    """LayerNorm over the last axis: `mx.fast.layer_norm`'s math (weight and bias (D,) or None)."""
    if (weight is None) == (bias is None) and use_kernels_for(x):
        return _EXT.layer_norm(x, weight, bias, eps)
    return mx.fast.layer_norm(x, weight, bias, eps)


def attention_applies(qkv: mx.array, mask: mx.array | None = None) -> bool:
    """Whether `attention` takes this call to the C++ kernel (else the caller runs MLX's ops)."""
    return use_kernels_for(qkv) and (mask is None or mask.ndim == 2)


def attention(qkv: mx.array, num_heads: int, scale: float, mask: mx.array | None = None) -> mx.array:
    """softmax(scale q k^T + mask) v per head straight from the qkv projection (B, N, 3 * D), laid out
    (B, N, 3, H, hd) as `Attention.qkv` makes it; mask None or an additive (N, N) bias. Returns (B, N, D).
    The C++ kernel only: call it where `attention_applies`."""
    return _EXT.attention(qkv, num_heads, scale, None if mask is None else mask.astype(mx.float32))


def add_bias(x: mx.array, bias: mx.array) -> mx.array:
    """x (..., D) + bias (D,): `x + bias`'s math; on the CPU kernels threaded, into x's buffer when x is dead
    after it, with a threaded column sum as the bias gradient (MLX's broadcast add and its sum run on one
    thread: ~10 % of overnight_safe's step went to Linear biases, README "Measured numbers")."""
    if use_kernels_for(x) and bias.dtype == mx.float32:
        return _EXT.bias_add(x, bias)
    return x + bias


def linear(x: mx.array, weight: mx.array, bias: mx.array | None = None) -> mx.array:
    """x @ weight.T (+ bias): `mlx.nn.Linear`'s math, the bias through `add_bias` on the CPU kernels."""
    if bias is None:
        return x @ weight.T
    return add_bias(x @ weight.T, bias) if use_kernels_for(x) else mx.addmm(bias, x, weight.T)


BIAS_ACTIVATIONS = {"gelu": 0, "relu": 1}    # the activations the fused kernel knows, by its kind number


def bias_activation(h: mx.array, bias: mx.array, activation: str) -> mx.array:
    """act(h + bias) for an MLP's first Linear after its matmul: on the CPU kernels one threaded pass
    (forward, and backward with the bias gradient); else `add_bias` then the activation's own function
    (`kernels.gelu` for "gelu", mlx.nn's for "relu" and "gelu_fast")."""
    if activation in BIAS_ACTIVATIONS and use_kernels_for(h) and bias.dtype == mx.float32:
        return _EXT.bias_act(h, bias, BIAS_ACTIVATIONS[activation])
    fn = {"gelu": gelu, "relu": nn.relu, "gelu_fast": nn.gelu_fast_approx}[activation]
    return fn(add_bias(h, bias))


def adamw_applies(params, grads) -> bool:
    """Whether `optim.adamw_update` takes these trees to the C++ AdamW (every leaf float32, on the CPU)."""
    from mlx.utils import tree_flatten

    leaves = [x for tree in (params, grads) for _, x in tree_flatten(tree)]
    return bool(leaves) and all(x.dtype == mx.float32 for x in leaves) and use_kernels_for(leaves[0])


def adamw(p, g, m, v, scalars, b1: float, b2: float, eps: float) -> list:
    """[p, m, v] after one AdamW step of one float32 parameter (see optim.adamw_update; scalars (6,):
    lr, weight decay, 1 - b1^t, 1 - b2^t, grad scale, keep). The C++ kernel only: where `adamw_applies`."""
    return _EXT.adamw(p, g, m, v, scalars, b1, b2, eps)


class Linear(nn.Linear):
    """`mlx.nn.Linear` (same parameters and checkpoints) computed by `linear` above."""

    def __call__(self, x: mx.array) -> mx.array:
        return linear(x, self.weight, self.get("bias"))


class LayerNorm(nn.LayerNorm):
    """`mlx.nn.LayerNorm` (same parameters and checkpoints) computed by `layer_norm` above."""

    def __call__(self, x: mx.array) -> mx.array:
        return layer_norm(x, self.get("weight"), self.get("bias"), self.eps)
