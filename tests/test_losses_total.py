"""The configured loss combines its terms as documented in losses/total.py."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from hjepa_mlx.losses.contrastive import NTXentSettings, nt_xent
from hjepa_mlx.losses.jepa import prediction_loss
from hjepa_mlx.losses.total import LossSettings, total_loss
from hjepa_mlx.losses.vicreg import VICRegSettings, vicreg_loss, vicreg_loss_single

RNG = np.random.default_rng(3)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Every test draws the same numbers however the tests are selected or ordered."""
    global RNG
    RNG = np.random.default_rng(3)


def m(x):
    return mx.array(np.asarray(x, dtype=np.float32))


def levels():
    return [(m(RNG.standard_normal((2, 2, c, 4))), m(RNG.standard_normal((2, 2, c, 4))), m(np.ones((2, 2, c))))
            for c in (4, 2)]


def features(two_views=True):
    names = ("context", "target")
    return {f"{n}_pooled_{v}": m(RNG.standard_normal((6, 5))) for n in names for v in ((1, 2) if two_views else (1,))}


def test_prediction_only():
    lv = levels()
    s = LossSettings(prediction_kind="huber", huber_delta=0.5, hierarchy_weights=(1.0, 0.5), jepa_weight=2.0)
    total, metrics = total_loss(s, lv, features(False))
    pred, _ = prediction_loss(lv, "huber", (1.0, 0.5), 0.5)
    assert total.item() == pytest.approx(2.0 * pred.item(), rel=1e-6)
    assert set(metrics) == {"loss_total", "loss_prediction", "loss_level0", "loss_level1"}
    assert not s.needs_two_views


def test_all_terms_on_context_features():
    lv, f = levels(), features()
    s = LossSettings(hierarchy_weights=(1.0, 0.5), jepa_weight=2.0,
                     terms=(("vicreg", VICRegSettings(0.1, sim_coeff=20.0, std_coeff=25.0, cov_coeff=2.0)),
                            ("contrastive", NTXentSettings(0.3, temperature=0.2, on_context=True))))
    total, metrics = total_loss(s, lv, f)
    pred = prediction_loss(lv, "smoothl1", (1.0, 0.5))[0].item()
    vic = vicreg_loss(f["context_pooled_1"], f["context_pooled_2"], 20.0, 25.0, 2.0)[0].item()
    con = nt_xent(f["context_pooled_1"], f["context_pooled_2"], 0.2)[0].item()
    assert total.item() == pytest.approx(2.0 * pred + 0.1 * vic + 0.3 * con, rel=1e-5)
    assert metrics["loss_total"].item() == total.item() and metrics["loss_prediction"].item() == pytest.approx(pred)
    assert {"vicreg_invariance", "vicreg_variance", "vicreg_covariance", "contrastive_loss",
            "contrastive_accuracy"} <= set(metrics)


def test_contrastive_on_target_features_pairs_each_context_with_the_other_views_target():
    lv, f = levels(), features()
    s = LossSettings(hierarchy_weights=(1.0, 1.0),
                     terms=(("contrastive", NTXentSettings(0.5, temperature=0.3, use_cosine=False, on_context=False)),))
    total, metrics = total_loss(s, lv, f)
    a = nt_xent(f["context_pooled_1"], f["target_pooled_2"], 0.3, False)[0].item()
    b = nt_xent(f["context_pooled_2"], f["target_pooled_1"], 0.3, False)[0].item()
    pred = metrics["loss_prediction"].item()
    assert total.item() == pytest.approx(pred + 0.5 * (a + b) / 2, rel=1e-5)
    assert metrics["contrastive_loss"].item() == pytest.approx((a + b) / 2, rel=1e-5)

    # The term trains the context features and leaves the target features constant.
    def loss_of(ctx1, ctx2, tgt1, tgt2):
        g = {"context_pooled_1": ctx1, "context_pooled_2": ctx2, "target_pooled_1": tgt1, "target_pooled_2": tgt2}
        return total_loss(s, lv, g)[0]

    names = ("context_pooled_1", "context_pooled_2", "target_pooled_1", "target_pooled_2")
    grads = mx.grad(loss_of, argnums=(0, 1, 2, 3))(*(f[n] for n in names))
    largest = [float(np.abs(np.array(g)).max()) for g in grads]
    assert largest[0] > 0 and largest[1] > 0 and largest[2] == 0 and largest[3] == 0


def test_vicreg_single_view_when_invariance_is_off():
    lv, f = levels(), features(False)
    s = LossSettings(hierarchy_weights=(1.0, 1.0),
                     terms=(("vicreg", VICRegSettings(0.2, sim_coeff=0.0, std_coeff=10.0, cov_coeff=3.0)),))
    assert not s.needs_two_views
    total, metrics = total_loss(s, lv, f)
    single = vicreg_loss_single(f["context_pooled_1"], 10.0, 3.0)[0].item()
    assert total.item() == pytest.approx(metrics["loss_prediction"].item() + 0.2 * single, rel=1e-5)
    assert "vicreg_invariance" not in metrics


def test_missing_second_view_is_an_error_not_a_silent_fallback():
    lv, f = levels(), features(False)
    with pytest.raises(ValueError, match="context_pooled_2"):
        total_loss(LossSettings(hierarchy_weights=(1.0, 1.0), terms=(("vicreg", VICRegSettings(sim_coeff=25.0)),)), lv, f)
    with pytest.raises(ValueError, match="context_pooled_2"):
        total_loss(LossSettings(hierarchy_weights=(1.0, 1.0), terms=(("contrastive", NTXentSettings()),)), lv, f)


@pytest.mark.parametrize("vicreg, sim, contrastive, expect", [(False, 25.0, False, False), (True, 25.0, False, True),
                                                              (True, 0.0, False, False), (False, 0.0, True, True),
                                                              (True, 0.0, True, True)])
def test_needs_two_views(vicreg, sim, contrastive, expect):
    terms = ((("vicreg", VICRegSettings(sim_coeff=sim)),) if vicreg else ()) + \
        ((("contrastive", NTXentSettings()),) if contrastive else ())
    assert LossSettings(terms=terms).needs_two_views is expect


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="prediction_kind"):
        LossSettings(prediction_kind="l1")
    with pytest.raises(ValueError, match="temperature"):
        LossSettings(terms=(("contrastive", NTXentSettings(temperature=0.0)),))
