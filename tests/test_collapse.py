"""The collapse alarm: RankMe / per-dimension std of pooled target features on a probe set, an alarm after
`patience` bad checks in a row, reset by a good one, and the stop flag."""

import mlx.core as mx
import numpy as np

from hjepa_mlx.collapse import CollapseMonitor, CollapseSettings


class _Features:
    """encode_target: tokens = offset + scale * the image's pixels (one token of 48 numbers)."""

    def encode_target(self, params, images):
        b = images.shape[0]
        return (params["offset"] + params["scale"] * images.reshape(b, -1))[:, None, :]


def _monitor(stop=False):
    settings = CollapseSettings(frequency=2, probe_images=64, rank_fraction=0.1, std_threshold=0.01, patience=2,
                                stop=stop)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((32, 4, 4, 3)).astype(np.float32) for _ in range(2)]
    return CollapseMonitor(settings, _Features(), batches)


def _params(scale):
    return {"offset": mx.full((48,), 3.0), "scale": mx.array(scale)}


def test_healthy_features_raise_no_alarm():
    m = _monitor()
    assert m.due(2) and not m.due(3)
    metrics, warning = m.check(2, _params(1.0))
    assert warning is None and metrics["collapse_alarm"] == 0.0
    assert metrics["rankme"] > 0.1 * 48 and abs(metrics["feature_std"] - 1.0) < 0.2


def test_collapsed_features_alarm_after_patience_and_reset():
    m = _monitor(stop=True)
    metrics, warning = m.check(2, _params(1e-4))
    assert warning is None and metrics["feature_std"] < 0.01 and not m.should_stop      # 1 bad check of 2
    metrics, warning = m.check(4, _params(1e-4))
    assert metrics["collapse_alarm"] == 1.0 and "steps 2-4" in warning and m.should_stop
    _, warning = m.check(6, _params(1.0))
    assert warning is None and not m.should_stop


def test_without_stop_on_collapse_the_run_goes_on():
    m = _monitor(stop=False)
    m.check(2, _params(1e-4))
    _, warning = m.check(4, _params(1e-4))
    assert warning and not m.should_stop
