"""Multi-crop in training: resampled position tables, local crops in the batch, the VICReg pairs, the rules,
and a run that trains with them."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml

from hjepa_mlx.cli.train import main
from hjepa_mlx.config import load_config
from hjepa_mlx.data.loader import BatchLoader
from hjepa_mlx.errors import UserError
from hjepa_mlx.losses.total import LossSettings, total_loss
from hjepa_mlx.losses.vicreg import VICRegSettings
from hjepa_mlx.models.posemb import sincos_2d, sincos_2d_resampled
from hjepa_mlx.models.vit import ViTEncoder
from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]
LOCAL = ["data.multi_crop.num_local_crops=2", "data.multi_crop.local_crop_size=16"]


def np_sincos(dim, positions):
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2) / (dim / 2.0))
    angles = np.asarray(positions, np.float64)[:, None] * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def test_resampled_table_is_the_full_table_at_the_local_cells_centres():
    assert np.array_equal(np.array(sincos_2d_resampled(16, (8, 8), (8, 8))), np.array(sincos_2d(16, 8, 8)))
    table = np.array(sincos_2d_resampled(16, (2, 4), (8, 8)))
    # a 2x4 grid over 8x8: rows sit at 1.5 and 5.5, columns at 0.5, 2.5, 4.5, 6.5 (raster order)
    rows = np.repeat([1.5, 5.5], 4)
    cols = np.tile([0.5, 2.5, 4.5, 6.5], 2)
    expected = np.concatenate([np_sincos(8, cols), np_sincos(8, rows)], axis=1)
    np.testing.assert_allclose(table, expected, atol=1e-6)


def test_encoder_runs_smaller_images_with_the_resampled_table():
    mx.random.seed(0)
    enc = ViTEncoder(patch_size=4, image_size=16, embed_dim=16, depth=1, num_heads=2, activation="relu")
    small = mx.array(np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32))
    tokens, _ = enc._tokens(small, None)
    expected = enc.patch_embed(small) + sincos_2d_resampled(16, (2, 2), (4, 4))
    np.testing.assert_allclose(np.array(tokens), np.array(expected), atol=1e-6)
    assert enc(small).shape == (2, 4, 16)


class Images:
    def __init__(self, n=6):
        self.images = np.random.default_rng(1).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)

    def __len__(self):
        return len(self.images)

    def load(self, i):
        return self.images[i], i % 3


def local_tf(img, rng):
    return np.full((8, 8, 3), rng.random(), np.float32)


def test_loader_batches_local_crops_deterministically_whatever_the_workers():
    make = lambda workers: BatchLoader(Images(), 3, lambda img, rng: img.astype(np.float32), views=2, seed=4,
                                       num_workers=workers, local_transform=local_tf, num_local=2)
    a, b = next(make(0).epoch(0)), next(make(2).epoch(0))
    assert a.local_crops.shape == (3, 2, 8, 8, 3)
    np.testing.assert_array_equal(a.local_crops, b.local_crops)
    # each crop its own draw: local crop i of the sample at position p comes from rng([seed, epoch, p, 2 + i])
    order = make(0).order(0)
    assert a.local_crops[1, 1, 0, 0, 0] == np.float32(np.random.default_rng([4, 0, 1, 3]).random())
    assert len({float(x) for x in a.local_crops[:, :, 0, 0, 0].ravel()}) == 6 and len(order) == 6


def test_vicreg_with_local_crops_is_the_mean_over_global_and_global_local_pairs():
    rng = np.random.default_rng(0)
    z1, z2 = (mx.array(rng.standard_normal((8, 5)).astype(np.float32)) for _ in range(2))
    local = mx.array(rng.standard_normal((8, 2, 5)).astype(np.float32))          # (B, L, E)
    s = LossSettings(jepa_weight=0.0, terms=(("vicreg", VICRegSettings(weight=1.0)),))
    zero_levels = [(mx.zeros((8, 1, 2, 5)), mx.zeros((8, 1, 2, 5)), mx.ones((8, 1, 2)))]
    feats = {"context_pooled_1": z1, "target_pooled_1": z1, "context_pooled_2": z2, "vicreg_1": z1, "vicreg_2": z2}
    with_local, _ = total_loss(s, zero_levels, {**feats, "vicreg_local": local})

    def np_vicreg(a, b):                     # float64 VICReg (sim 25, std 25, cov 1), written out
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        inv = np.mean((a - b) ** 2)
        var = sum(np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4))) for z in (a, b)) / 2
        cov = 0.0
        for z in (a, b):
            c = np.cov(z, rowvar=False)
            cov += (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / z.shape[1]
        return 25 * inv + 25 * var + cov

    g1, g2, loc = np.array(z1), np.array(z2), np.array(local)
    pairs = [(g1, g2), (g1, loc[:, 0]), (g2, loc[:, 0]), (g1, loc[:, 1]), (g2, loc[:, 1])]
    assert with_local.item() == pytest.approx(np.mean([np_vicreg(a, b) for a, b in pairs]), rel=1e-5)
    without, _ = total_loss(s, zero_levels, feats)
    assert without.item() == pytest.approx(np_vicreg(g1, g2), rel=1e-5)


def config(tmp_path, extra):
    raw = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    return load_config(None, TINY_RUN + [f"experiment.output_dir={tmp_path}"] + list(extra), raw=raw)


@pytest.mark.parametrize("extra, words", [
    (["data.multi_crop.local_crop_size=12"], "multiple of the patch size"),
    (["data.multi_crop.local_crop_size=32"], "smaller than data.image_size"),
    (["loss.type=smoothl1", "loss.hierarchy_weights=[1.0, 0.7, 0.5]"], "needs VICReg's invariance"),
])
def test_impossible_multi_crop_settings_are_refused(tmp_path, extra, words):
    with pytest.raises(UserError, match=words):
        config(tmp_path, ["data.multi_crop.num_local_crops=2"] + extra)
    assert config(tmp_path, LOCAL).config.data.multi_crop.num_local_crops == 2


def test_local_crop_keys_without_local_crops_are_noted(tmp_path):
    notes = config(tmp_path, ["data.multi_crop.local_crop_size=8"]).notes
    assert any("data.multi_crop.local_crop_size has no effect" in note for note in notes)


def test_a_run_with_local_crops_trains_and_the_crops_reach_the_loss(tmp_path, capsys):
    args = TINY_RUN + LOCAL + ["data.batch_size=4", "data.synthetic.num_train=12", "data.synthetic.num_val=4",
                               "training.epochs=1", "training.warmup_epochs=0", "logging.log_frequency=1"]
    assert main([str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(tmp_path / "on")]
                + [f"--set={a}" for a in args]) == 0
    assert "2 local crop(s) of 16 px" in capsys.readouterr().out
    on = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert main([str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(tmp_path / "off")]
                + [f"--set={a}" for a in args if not a.startswith("data.multi_crop")]) == 0
    off = [json.loads(line) for line in (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()]
    first_on = next(r for r in on if "vicreg_loss" in r)
    first_off = next(r for r in off if "vicreg_loss" in r)
    assert np.isfinite(first_on["vicreg_loss"])
    # same images, masks and weights: only the local crops' pairs differ
    assert first_on["loss_prediction"] == pytest.approx(first_off["loss_prediction"], rel=1e-5)
    assert first_on["vicreg_loss"] != pytest.approx(first_off["vicreg_loss"], rel=1e-3)
