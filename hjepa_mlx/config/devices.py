"""Map the config's `device:` name onto an MLX device, and say so when it differs from the request."""

from __future__ import annotations

import sys

import mlx.core as mx


def _gpu_backend() -> str | None:
    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return None


def resolve_device(requested: str) -> tuple[mx.Device, str | None]:
    """(device, message): the message is None when we gave exactly what was asked."""
    backend = _gpu_backend()
    if requested == "cpu":
        return mx.cpu, None
    if requested == "auto":
        if backend:
            return mx.gpu, f"device: auto -> GPU ({backend})"
        return mx.cpu, "device: auto -> CPU (no Metal or CUDA GPU visible to MLX)"
    want = {"gpu": None, "mps": "metal", "cuda": "cuda"}[requested]
    if backend and (want is None or want == backend):
        return mx.gpu, None
    if backend:
        return mx.gpu, f"device: '{requested}' is not available here; using the {backend} GPU instead"
    where = "macOS without Metal" if sys.platform == "darwin" else sys.platform
    return mx.cpu, (f"device: '{requested}' is not available on this machine ({where}, no GPU visible to "
                    f"MLX); using the CPU - expect CPU speed")
