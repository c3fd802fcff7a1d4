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


def ema_update_rate(target_params, online_params, rate):
    """The same update written with the rate 1 - momentum: target + rate * (online - target).

    The train step uses this form: near the end of a run the momentum is within ~1e-8 of 1, which a
    float32 momentum rounds to exactly 1.0 (an update that does nothing), while the float32 rate keeps
    its full relative precision (see schedules.ema_rate_at). rate 0 keeps the target, 1 copies online.
    """
    return tree_map(lambda t, o: t + rate * (o - t), target_params, online_params)
