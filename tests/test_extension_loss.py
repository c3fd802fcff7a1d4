"""A loss term registered from outside the package (here, in this file only): configured under loss.terms,
checked like a config section, listed by --dry-run, and added as weight * term to a real training step."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import pytest

from hjepa_mlx.cli.train import main
from hjepa_mlx.config import load_config
from hjepa_mlx.config.schema import num
from hjepa_mlx.errors import UserError
from hjepa_mlx.losses.registry import LossTerm, register_loss_term, unregister_loss_term
from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]


# ---- the extension: a regulariser pulling the batch mean of the pooled context features towards `target`
@dataclass(frozen=True)
class Toy:
    weight: float = num(1.0, 0.0)
    target: float = 0.0


def toy(s: Toy, features: dict):
    value = mx.mean((features["context_pooled_1"].mean(axis=0) - s.target) ** 2)
    return value, {"toy_loss": value}
# ---- (registered by the fixture: register_loss_term(LossTerm("toy", Toy, toy)))


@pytest.fixture(autouse=True)
def toy_term():
    register_loss_term(LossTerm("toy", Toy, toy))
    yield
    unregister_loss_term("toy")


TOY = ["loss.terms.toy.weight=0.5", "loss.terms.toy.target=1.0"]
ONE_STEP = TINY_RUN + ["data.batch_size=4", "data.synthetic.num_train=12", "data.synthetic.num_val=4",
                       "training.epochs=1", "training.steps_per_epoch=1", "training.warmup_epochs=0",
                       "logging.log_frequency=1", "logging.collapse_frequency=0", "logging.plot_frequency=0",
                       "logging.log_images=false", "logging.log_attention=false"]


def quickstart(extra=(), raw_loss=None):
    path = ROOT / "configs/quickstart.yaml"
    if raw_loss is None:
        return load_config(path, list(extra)).config
    import yaml
    raw = yaml.safe_load(path.read_text())
    raw["loss"] = {**raw["loss"], **raw_loss}
    return load_config(None, list(extra), raw=raw).config


def test_a_config_with_the_term_validates_from_the_file_or_set():
    assert quickstart(TOY).loss.terms == {"toy": Toy(weight=0.5, target=1.0)}
    assert quickstart(raw_loss={"terms": {"toy": {"weight": 0.25}}}).loss.terms == {"toy": Toy(0.25, 0.0)}
    assert quickstart().loss.terms == {}


@pytest.mark.parametrize("terms, message", [
    ({"toy": {"weight": 0.5, "traget": 1.0}}, "unknown key 'loss.terms.toy.traget'; did you mean "
                                              "'loss.terms.toy.target'? valid keys here: weight, target"),
    ({"toy": {"scale": 1.0}}, "unknown key 'loss.terms.toy.scale'; valid keys here: weight, target"),
    ({"toy": {"target": "high"}}, "'loss.terms.toy.target' must be a number"),
    ({"toy": {"weight": -1.0}}, "'loss.terms.toy.weight' = -1.0 is out of range"),
    ({"toys": {"weight": 1.0}}, "'loss.terms.toys': 'toys' is not a registered loss term; registered: vicreg, "
                                "contrastive, toy"),
    ({"vicreg": {"weight": 1.0}}, "the built-in term 'vicreg' is configured by loss.vicreg_weight"),
])
def test_a_bad_entry_is_refused_naming_its_key(terms, message):
    with pytest.raises(UserError) as err:
        quickstart(raw_loss={"terms": terms})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_dry_run_lists_the_term_and_the_resolved_config_keeps_it(capsys):
    args = [str(ROOT / "configs/quickstart.yaml"), "--dry-run", "--no-calibrate"]
    assert main(args + [a for item in TOY for a in ("--set", item)]) == 0
    out = capsys.readouterr().out
    assert "+ 0.5 x toy (target 1.0)" in out
    assert "  terms:\n    toy:\n      weight: 0.5\n      target: 1.0\n" in out


def test_one_training_step_adds_weight_times_the_term(tmp_path):
    args = [str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(tmp_path / "run")]
    assert main(args + [a for item in ONE_STEP + TOY for a in ("--set", item)]) == 0
    record = next(r for r in map(json.loads, (tmp_path / "run/metrics.jsonl").read_text().splitlines())
                  if "toy_loss" in r)
    assert record["toy_loss"] > 0.01           # so the 0.5 x toy below is far above float rounding
    # quickstart: jepa_weight 1, VICReg weight 1 (loss.type combined), no NT-Xent
    expected = record["loss_prediction"] + 1.0 * record["vicreg_loss"] + 0.5 * record["toy_loss"]
    assert record["loss_total"] == pytest.approx(expected, rel=1e-5)
    assert record["loss"] == record["loss_total"]
