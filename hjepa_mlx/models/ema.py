"""The target encoder's exponential moving average, as a pure function of (target, online, momentum)."""

from __future__ import annotations

from mlx.utils import tree_map


def ema_update(target_params, online_params, momentum):
    """New target parameters: momentum * target + (1 - momentum) * online, leaf by leaf.

    target_params, online_params: pytrees (nested dicts / lists of arrays) of the same structure.
    momentum: a float or a scalar array (an array derived from the step inside a compiled step, so a new
    value does not retrace). momentum 1 keeps the target, 0 copies the online parameters.
    Pure: returns a new tree, mutates nothing. Keep both trees fp32 (master weights).
    """
    return tree_map(lambda t, o: momentum * t + (1.0 - momentum) * o, target_params, online_params)
