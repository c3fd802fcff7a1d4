"""The strict config system: the seeds load, aliases resolve, and every broken config gets one clear line."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hjepa_mlx.cli.train import main
from hjepa_mlx.config import dump_yaml, load_config
from hjepa_mlx.config.aliases import ALIASES
from hjepa_mlx.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ["overnight_safe", "overnight_training_conservative", "overnight_training_aggressive"]
QUICKSTART = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())


@pytest.mark.parametrize("name", SEEDS)
def test_seed_configs_load_unchanged_and_pass_dry_run(name, capsys):
    assert main([str(ROOT / f"configs/{name}.yaml"), "--dry-run", "--no-calibrate"]) == 0
    out = capsys.readouterr().out
    assert "# plan" in out and "vit_small_patch16_224" in out


def test_seed_files_match_the_reference_document():
    reference = (ROOT.parent / "shared/reference/SEED_CONFIGS.md")
    if not reference.exists():
        pytest.skip("../shared is not beside the checkout")
    text = reference.read_text()
    for name in SEEDS:
        block = text.split(f"## {name}.yaml\n```yaml\n", 1)[1].split("```", 1)[0]
        assert yaml.safe_load(block) == yaml.safe_load((ROOT / f"configs/{name}.yaml").read_text())


def test_aliases_map_each_seed_spelling_onto_the_canonical_key():
    safe = load_config(ROOT / "configs/overnight_safe.yaml").config
    assert (safe.loss.vicreg.sim_coeff, safe.loss.vicreg.std_coeff, safe.loss.vicreg.cov_coeff) == (25, 25, 1)
    assert safe.checkpoint.save_frequency == 10 and safe.evaluation.eval_frequency == 10
    aggressive = load_config(ROOT / "configs/overnight_training_aggressive.yaml").config
    assert aggressive.model.fpn.use_fpn and aggressive.model.fpn.feature_dim == 384
    assert aggressive.data.transforms.strategy == "deit3" and aggressive.data.transforms.crop_scale == (0.4, 1.0)
    assert aggressive.training.use_gradient_checkpointing
    assert aggressive.model.layerscale_init == pytest.approx(1e-5)  # YAML reads `1e-5` as a string
    conservative = load_config(ROOT / "configs/overnight_training_conservative.yaml").config
    assert conservative.model.use_layerscale and not conservative.training.use_gradient_checkpointing


def test_every_alias_points_at_a_real_key():
    for legacy, canonical in ALIASES.items():
        raw = {}
        node = raw
        *parents, leaf = legacy.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = {} if legacy == "data.augmentation" else copy.deepcopy(_canonical_value(canonical))
        load_config(None, raw=_merge(copy.deepcopy(QUICKSTART), raw))


def _canonical_value(path):
    node = load_config(None, raw=QUICKSTART).config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def _merge(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def test_set_overrides_are_validated_and_go_through_aliases():
    lc = load_config(ROOT / "configs/quickstart.yaml", ["training.epochs=7", "model.use_fpn=true",
                                                        "masking.mask_scale=[0.1, 0.2]"])
    assert lc.config.training.epochs == 7 and lc.config.model.fpn.use_fpn
    assert lc.config.masking.mask_scale == (0.1, 0.2)
    with pytest.raises(UserError, match="training.lrr"):
        load_config(ROOT / "configs/quickstart.yaml", ["training.lrr=1"])


def test_resolved_config_round_trips(tmp_path):
    for name in SEEDS + ["quickstart"]:
        config = load_config(ROOT / f"configs/{name}.yaml").config
        out = tmp_path / f"{name}.yaml"
        out.write_text(dump_yaml(config))
        assert load_config(out).config == config


def test_disabled_feature_keys_are_reported_not_dropped(capsys):
    assert main([str(ROOT / "configs/overnight_safe.yaml"), "--dry-run", "--no-calibrate"]) == 0
    out = capsys.readouterr().out
    assert "model.rope.theta has no effect because model.rope.use_rope is False" in out


# ---- the corpus of broken configs: each must give exit code 2 and one line naming the problem

def _with(path, value):
    cfg = copy.deepcopy(QUICKSTART)
    node = cfg
    *parents, leaf = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return cfg


BROKEN = {
    # typo'd keys at each level
    "top-level typo": ({**QUICKSTART, "trainig": {}}, "did you mean 'training'"),
    "section typo": (_with("model.encodr_type", "x"), "did you mean 'model.encoder_type'"),
    "nested typo": (_with("model.predictor.dpeth", 2), "model.predictor.dpeth"),
    "deep typo": (_with("model.ema.momentum_ned", 1.0), "did you mean 'model.ema.momentum_end'"),
    "key in wrong section": (_with("model.lr", 0.1), "did you mean 'training.lr'"),
    "knn typo": (_with("evaluation.knn.k_value", [1]), "evaluation.knn.k_value"),
    "dataset entry typo": (_with("data.datasets", [{"nme": "cifar10"}]), "data.datasets[0].nme"),
    # wrong types
    "string for int": (_with("training.epochs", "ten"), "'training.epochs' must be an integer"),
    "float for int": (_with("data.batch_size", 3.5), "'data.batch_size' must be an integer"),
    "int for bool": (_with("model.use_flash_attention", 1), "'model.use_flash_attention' must be true or false"),
    "string for float": (_with("training.lr", "fast"), "'training.lr' must be a number"),
    "scalar for pair": (_with("masking.mask_scale", 0.2), "'masking.mask_scale' must be a list"),
    "three for pair": (_with("masking.aspect_ratio", [1, 2, 3]), "'masking.aspect_ratio' must be a list of 2"),
    "scalar for section": (_with("model.predictor", 6), "'model.predictor' must be a mapping"),
    "bad choice": (_with("training.lr_schedule", "cosin"), "did you mean 'cosine'"),
    "bad device": (_with("device", "tpu"), "'device' = 'tpu' is not allowed"),
    "null for required": (_with("training.lr", None), "'training.lr' must be a number, got null"),
    # out-of-range values
    "negative lr": (_with("training.lr", -0.1), "'training.lr' = -0.1 is out of range"),
    "zero batch": (_with("data.batch_size", 0), "'data.batch_size' = 0 is out of range"),
    "scale above one": (_with("masking.context_scale", [0.85, 1.2]), "'masking.context_scale'"),
    "zero scale": (_with("masking.mask_scale", [0.0, 0.2]), "'masking.mask_scale'"),
    "reversed pair": (_with("masking.mask_scale", [0.3, 0.1]), "low <= high"),
    "momentum above one": (_with("model.ema.momentum", 1.5), "'model.ema.momentum' = 1.5 is out of range"),
    "beta of one": (_with("training.betas", [0.9, 1.0]), "'training.betas'"),
    # cross-field rules
    "hierarchy weights length": (_with("loss.hierarchy_weights", [1.0]), "one weight per level"),
    "embed_dim mismatch": (_with("model.embed_dim", 384), "model.embed_dim is 384"),
    "image not divisible": (_with("data.image_size", 60), "not divisible by the patch size"),
    "unknown encoder": (_with("model.encoder_type", "vit_huge_patch16_224"), "vit_huge_patch16_224"),
    "warmup longer than run": (_with("training.warmup_epochs", 50), "training.warmup_epochs"),
    "metric mode": (_with("checkpoint.mode", "max"), "set checkpoint.mode: min"),
    "datasets without multi": (_with("data.datasets", [{"name": "cifar10"}]), "data.use_multi_dataset is false"),
    "unknown dataset": (_with("data.dataset", "mnist"), "'mnist' is not a known dataset"),
    # conflicting aliases
    "conflicting vicreg spellings": (_merge(_with("loss.vicreg_invariance_weight", 5.0),
                                            {"loss": {"vicreg": {"sim_coeff": 25.0}}}),
                                     "two spellings of the same key"),
    "conflicting fpn spellings": (_merge(_with("model.use_fpn", True), {"model": {"fpn": {"use_fpn": False}}}),
                                  "'model.use_fpn'"),
    "conflicting sections": (_merge(_with("data.augmentation", {"color_jitter": 0.9}), {}), "data.augmentation"),
    # loss terms that would be dropped
    "vicreg keys while off": (_merge(_with("loss.type", "smoothl1"), {}), "VICReg is off"),
    "contrastive keys while off": (_with("loss.contrastive_weight", 0.5), "loss.use_contrastive is false"),
    "combined without vicreg": (_with("loss.use_vicreg", False), "means prediction + VICReg"),
    # features we refuse, with the reason
    "pin_memory": (_with("data.pin_memory", True), "unified memory"),
    "wandb": (_with("logging.use_wandb", True), "not supported"),
    "predictor dropout": (_with("model.predictor.dropout", 0.1), "not implemented"),
    "no position information": (_with("model.rope", {"use_rope": False, "absolute_table": False}),
                                "without any position information"),
    "mixup": (_merge(_with("data.transforms.strategy", "deit3"),
                     {"data": {"transforms": {"deit3": {"mixup_alpha": 0.8}}}}), "supervised-only"),
}


def _write(tmp_path, cfg, name="broken.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_config_gives_one_line_and_exit_2(case, tmp_path, capsys):
    cfg, expected = BROKEN[case]
    code = main([str(_write(tmp_path, cfg)), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err


FILE_CASES = {
    "missing file": (lambda d: d / "nope.yaml", "config file not found"),
    "directory": (lambda d: d, "is a directory"),
    "empty file": (lambda d: _text(d, ""), "is empty"),
    "only comments": (lambda d: _text(d, "# nothing here\n"), "is empty"),
    "invalid yaml": (lambda d: _text(d, "model: [unclosed\n"), "invalid YAML at line"),
    "tab indentation": (lambda d: _text(d, "model:\n\tdepth: 2\n"), "invalid YAML"),
    "list at top": (lambda d: _text(d, "- a\n- b\n"), "top level must be a mapping"),
    "scalar at top": (lambda d: _text(d, "42\n"), "top level must be a mapping"),
    "bad override": (None, "expected KEY=VALUE"),
    "bad override key": (None, "--set training.lrr"),
}


def _text(d, text):
    p = d / "t.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_broken_files_and_overrides(case, tmp_path, capsys):
    make, expected = FILE_CASES[case]
    if make is None:
        good = _write(tmp_path, QUICKSTART, "good.yaml")
        arg = "training.epochs" if case == "bad override" else "training.lrr=1"
        code = main([str(good), "--set", arg, "--dry-run"])
    else:
        code = main([str(make(tmp_path)), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err


def test_cli_subprocess_has_no_traceback(tmp_path):
    path = _write(tmp_path, _with("model.encodr_type", "x"))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), "--config", str(path), "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {path}: unknown key 'model.encodr_type'; "
                                               f"did you mean 'model.encoder_type'?"]


def test_removed_key_is_refused_with_its_replacement(tmp_path):
    from hjepa_mlx.config import load_config
    from hjepa_mlx.errors import UserError
    path = tmp_path / "c.yaml"
    path.write_text("evaluation:\n  val_batches: 4\n")
    with pytest.raises(UserError, match="val_batches' was removed: .*data.val_holdout"):
        load_config(path)
    with pytest.raises(UserError, match="was removed"):
        load_config(None, ["evaluation.val_batches=2"], raw={})
    # a resolved config saved by an older version still loads (checkpoint metadata), with a note
    loaded = load_config(None, raw={"evaluation": {"val_batches": 4}}, resolved=True)
    assert any("val_batches" in n for n in loaded.notes)


def test_knn_metric_k_must_be_computed():
    from hjepa_mlx.config import load_config
    from hjepa_mlx.errors import UserError
    with pytest.raises(UserError, match="metric_k 7 is not one of"):
        load_config(None, ["evaluation.knn.enabled=true", "evaluation.knn.metric_k=7"], raw={})


def test_vicreg_projector_keys_need_vicreg():
    from hjepa_mlx.config import load_config
    from hjepa_mlx.errors import UserError
    with pytest.raises(UserError, match="loss.vicreg.projector is set but VICReg is off"):
        load_config(None, ["loss.vicreg.projector=layernorm"], raw={"loss": {"type": "smoothl1"}})
    notes = load_config(None, ["loss.vicreg.projector=layernorm", "loss.vicreg.expander_dim=64"],
                        raw={"loss": {"type": "combined"}}).notes
    assert any("expander_dim" in n for n in notes)
