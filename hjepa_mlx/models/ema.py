"""The target encoder's exponential moving average, as a pure function of (target, online, momentum)."""

from mlx.utils import tree_map


def ema_update(target, online, momentum):
    """momentum * target + (1 - momentum) * online, leaf by leaf (momentum 1: target unchanged)."""
    return tree_map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)
