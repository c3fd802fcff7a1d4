"""The run lifecycle: one trace per run, exact resume, NaN skip, seed determinism, accumulation
equivalence, and every seed config end to end on tiny generated files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml
from mlx.utils import tree_flatten

from hjepa_mlx.build import build_mask_plan, build_model, step_settings
from hjepa_mlx.cli.train import main
from hjepa_mlx.config import load_config
from hjepa_mlx.masks import sample_masks
from hjepa_mlx.config.plan import make_plan
from hjepa_mlx.state import init_state
from hjepa_mlx.step import make_train_step
from hjepa_mlx.batch import Batch, device_batch
from tiny import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]

TINY = TINY_RUN + ["data.batch_size=4", "data.synthetic.num_train=28", "data.synthetic.num_val=8",
                   "logging.log_frequency=1", "training.epochs=2", "training.warmup_epochs=1"]


def tiny_config(tmp_path, extra=(), *, prediction_only=False):
    raw = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    if prediction_only:  # no VICReg: its batch statistics make micro-batches differ from one big batch
        raw["loss"] = {"type": "smoothl1", "hierarchy_weights": raw["loss"]["hierarchy_weights"]}
    return load_config(None, TINY + [f"experiment.output_dir={tmp_path}"] + list(extra), raw=raw)


def params_of(run_dir: Path) -> dict:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    return {k: np.array(v) for k, v in mx.load(str(run_dir / "checkpoints" / latest)).items()}


def run(tmp_path, *extra, name="run"):
    out = tmp_path / name
    args = [str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(out)]
    for item in TINY + list(extra):
        args += ["--set", item]
    return main(args), out


def test_train_step_traces_once_across_epochs_and_resume(tmp_path, capsys):
    code, out = run(tmp_path, "training.epochs=3", "checkpoint.save_frequency=1")
    assert code == 0
    log = (out / "train.log").read_text()
    assert "traced 1 time(s)" in log
    assert "checkpoint step_00000006.safetensors: " in log and "MB, the full training state" in log
    # resume: continue for one more epoch in a new process-like call; still one trace in that call
    code, _ = run(tmp_path, "training.epochs=4", "checkpoint.save_frequency=1")
    assert code == 2  # the directory holds checkpoints and no --resume was given: refused, nothing changed
    args = [str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(out), "--resume", "auto"]
    for item in TINY + ["training.epochs=4"]:
        args += ["--set", item]
    assert main(args) == 0
    assert (out / "train.log").read_text().count("traced 1 time(s)") == 2


def _stop_after(monkeypatch, steps: int):
    """Make the run behave as if SIGTERM arrived after `steps` optimizer steps."""
    import hjepa_mlx.train as train_mod

    original = train_mod.StopRequested

    class StopAfter(original):
        def __enter__(self):
            super().__enter__()
            self.calls = 0
            return self

        @property
        def signal(self):
            self.calls += 1
            return "SIGTERM" if self.calls == steps else None

        @signal.setter
        def signal(self, value):
            pass

    monkeypatch.setattr(train_mod, "StopRequested", StopAfter)
    return lambda: monkeypatch.setattr(train_mod, "StopRequested", original)


def _resume(out, *extra):
    args = [str(ROOT / "configs/quickstart.yaml"), "--output-dir", str(out), "--resume", "auto"]
    for item in TINY + list(extra):
        args += ["--set", item]
    return main(args)


@pytest.mark.parametrize("stop_at", [6, 9])   # 6: an epoch boundary; 9: the middle of epoch 2
def test_exact_resume_is_bit_identical(tmp_path, monkeypatch, stop_at):
    """N steps straight == N' steps, kill (SIGTERM), resume, the rest: bit-identical parameters on CPU."""
    code, straight = run(tmp_path, name="straight")
    assert code == 0
    restore = _stop_after(monkeypatch, stop_at)
    code, cut = run(tmp_path, name="cut")
    restore()
    assert code == 130
    meta = json.loads(sorted((cut / "checkpoints").glob("step_*.json"))[-1].read_text())
    assert meta["step"] == stop_at
    assert _resume(cut) == 0
    a, b = params_of(straight), params_of(cut)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_same_seed_same_metrics(tmp_path):
    run(tmp_path, "training.epochs=1", name="a")
    run(tmp_path, "training.epochs=1", name="b")
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("time", "images_per_s", "memory_gb",
                                                                                     "eta_s", "peak_memory_gb")}
                       for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "a") == strip(tmp_path / "b")


def _step_setup(tmp_path, extra=(), prediction_only=False):
    config = tiny_config(tmp_path, extra, prediction_only=prediction_only).config
    plan = make_plan(config)
    model = build_model(config, plan, quiet=True)
    state = init_state(model)
    masks = build_mask_plan(config, plan)
    return config, plan, model, state, masks


def _batch(config, plan, masks, k, b, seed=0):
    rng = np.random.default_rng(seed)
    size = config.data.image_size
    host = [Batch(images=rng.standard_normal((b, size, size, 3), dtype=np.float32), labels=np.zeros(b, np.int32),
                  dataset_ids=np.zeros(b, np.int32), images_view2=rng.standard_normal((b, size, size, 3), dtype=np.float32),
                  masks=sample_masks(masks, b, 0, i, 0)) for i in range(k)]
    return device_batch(host, plan.two_views)


def test_nonfinite_update_is_skipped_without_retrace(tmp_path):
    config, plan, model, state, masks = _step_setup(tmp_path)
    step, traces = make_train_step(model, step_settings(config, plan))
    good = _batch(config, plan, masks, 1, 4)
    bad = {**good, "images": good["images"] * mx.array(float("nan"))}
    state, _ = step(state, good)
    before = {k: np.array(v) for k, v in tree_flatten(state["params"])}
    state, metrics = step(state, bad)
    mx.eval(state, metrics)
    after = {k: np.array(v) for k, v in tree_flatten(state["params"])}
    assert float(metrics["skipped"].item()) == 1.0
    assert int(state["skipped_total"].item()) == 1 and int(state["skipped_run"].item()) == 1
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    state, metrics = step(state, good)
    mx.eval(state)
    assert int(state["skipped_run"].item()) == 0 and traces.count == 1


def test_consecutive_nonfinite_steps_stop_the_run(tmp_path, capsys):
    code, _ = run(tmp_path, "training.lr=1e30", "training.clip_grad=0", "training.max_nonfinite_steps=2")
    err = capsys.readouterr().err
    assert code == 2 and "non-finite for 2 consecutive steps" in err, err


def test_accumulation_matches_one_big_batch(tmp_path):
    """k micro-batches of b give the same update as one batch of k*b (VICReg off: its batch statistics
    are per micro-batch by design, so only the prediction loss is compared)."""
    config, plan, model, state, masks = _step_setup(tmp_path, prediction_only=True)
    b, k = 4, 2
    big = _batch(config, plan, masks, 1, b * k)
    micro = {key: value.reshape(k, b, *value.shape[2:]) for key, value in big.items()}
    s1 = step_settings(config, plan)
    step1, _ = make_train_step(model, s1)
    from dataclasses import replace
    step2, _ = make_train_step(model, replace(s1, accumulation_steps=k))
    out1, m1 = step1(state, big)
    out2, m2 = step2(state, micro)
    mx.eval(out1, out2)
    assert abs(m1["loss"].item() - m2["loss"].item()) < 1e-5
    # AdamW's update is invariant to a constant gradient scale, so only the gradient norm shows a sum of
    # k micro-batch gradients that was not divided by k
    assert m2["grad_norm"].item() == pytest.approx(m1["grad_norm"].item(), rel=1e-4)
    for (key, a), (_, c) in zip(tree_flatten(out1["params"]), tree_flatten(out2["params"])):
        np.testing.assert_allclose(np.array(a), np.array(c), rtol=1e-4, atol=1e-6, err_msg=key)


def test_run_directory_holds_everything(tmp_path):
    code, out = run(tmp_path, "training.epochs=1")
    assert code == 0
    for name in ("config.yaml", "metrics.jsonl", "train.log", "checkpoints/latest"):
        assert (out / name).exists(), name
    assert any((out / "tensorboard").iterdir())
    assert load_config(out / "config.yaml").config.training.epochs == 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in records)
    assert {"loss", "lr", "momentum", "grad_norm", "loss_level0", "loss_level1"} <= set(records[0])


# ---- the seed configs, end to end on tiny files in the real formats

def _write_cifar10(root: Path, n=16):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": [int(v) for v in rng.integers(0, 10, n)],
                 b"batch_label": b"x", b"filenames": [b"f"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def _write_stl10(root: Path, n=16):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for part in ("train", "test", "unlabeled"):
        rng.integers(0, 255, (n, 3, 96, 96), dtype=np.uint8).tofile(folder / f"{part}_X.bin")
        if part != "unlabeled":
            rng.integers(1, 11, n, dtype=np.uint8).tofile(folder / f"{part}_y.bin")


def _write_imagenet100(root: Path):
    from PIL import Image
    from hjepa_mlx.data.imagenet100_wnids import IMAGENET100_WNIDS
    rng = np.random.default_rng(2)
    for split in ("train", "val"):
        for wnid in IMAGENET100_WNIDS:
            (root / split / wnid).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / split / wnid / "a.JPEG")


SEED_TINY = ["data.image_size=32", "model.encoder_type=vit_small_patch16_32", "model.num_hierarchies=2",
             "model.predictor.depth=1", "data.batch_size=4", "data.num_workers=0", "training.epochs=1",
             "training.warmup_epochs=0", "training.steps_per_epoch=2", "masking.num_masks=1", "masking.min_keep=1",
             "masking.mask_scale=[0.2, 0.3]", "evaluation.knn.max_train_images=8",
             "evaluation.knn.max_val_images=8", "model.mlp_activation=relu", "data.val_holdout=4",
             "logging.collapse_frequency=1", "logging.collapse_probe_images=4"]


@pytest.mark.parametrize("name", ["overnight_safe", "overnight_training_conservative", "overnight_training_aggressive"])
def test_seed_config_runs_end_to_end_on_tiny_files(name, tmp_path):
    data = tmp_path / "data"
    if name == "overnight_training_aggressive":
        _write_imagenet100(data / "imagenet")
        paths = [f"data.data_path={data / 'imagenet'}"]
        weights = "loss.hierarchy_weights=[1.0, 0.8]"
    else:
        _write_cifar10(data)
        _write_stl10(data)
        paths = [f"data.datasets=[{{name: cifar10, weight: 0.5, path: {data}}}, {{name: stl10, weight: 0.5, path: {data}}}]"]
        weights = "loss.hierarchy_weights=[1.0, 0.7]"
    args = [str(ROOT / f"configs/{name}.yaml"), "--output-dir", str(tmp_path / "run")]
    for item in SEED_TINY + paths + [weights]:
        args += ["--set", item]
    assert main(args) == 0
    run_dir = tmp_path / "run"
    assert (run_dir / "checkpoints" / "latest").exists()
    events = b"".join(p.read_bytes() for p in (run_dir / "tensorboard").iterdir())
    metrics = (run_dir / "metrics.jsonl").read_text()
    logging = load_config(ROOT / f"configs/{name}.yaml").config.logging
    # every logging switch the seed turns on leaves its trace (protobuf keeps tags as plain bytes)
    assert (b"masks" in events) == logging.log_images
    assert (b"attention" in events) == logging.log_attention
    assert (b"gradients/encoder" in events) == logging.log_gradients
    assert ("dataset_samples/" in metrics) == logging.log_dataset_distribution
    assert '"rankme"' in metrics and '"feature_std"' in metrics       # the collapse alarm's checks


@pytest.mark.parametrize("k", [1, 3])
def test_ema_is_applied_once_per_optimizer_step_after_adamw(tmp_path, k):
    """target' = target + rate * (params' - target) with params' the updated online encoder and rate the
    schedule's 1 - momentum at the step: fails if the EMA is dropped, applied before AdamW, or applied once
    per micro-batch."""
    from hjepa_mlx.step import ema_rate_at
    config, plan, model, state, masks = _step_setup(tmp_path)
    settings = step_settings(config, plan)
    from dataclasses import replace
    settings = replace(settings, accumulation_steps=k, ema_start=0.5, ema_end=0.9, warmup_steps=0)  # visible
    step, _ = make_train_step(model, settings)
    new, _ = step(state, _batch(config, plan, masks, k, 2))
    mx.eval(new)
    rate = ema_rate_at(settings, 0).item()
    assert rate == pytest.approx(0.5)
    online = dict(tree_flatten(new["params"]["encoder"]))
    before = dict(tree_flatten(state["target"]))
    moved = 0.0
    for key, got in tree_flatten(new["target"]):
        want = np.array(before[key]) + rate * (np.array(online[key]) - np.array(before[key]))
        np.testing.assert_allclose(np.array(got), want, rtol=1e-5, atol=1e-7, err_msg=key)
        moved = max(moved, float(np.abs(np.array(got) - np.array(before[key])).max()))
    assert moved > 1e-6          # the online encoder did change, so a dropped EMA could not pass


def test_stop_on_collapse_saves_a_checkpoint_and_exits_3(tmp_path, capsys):
    """A rank threshold no feature set can meet makes every check bad: with patience 1 and
    training.stop_on_collapse the run stops at the first check, with a checkpoint to resume from."""
    code, out = run(tmp_path, "training.epochs=2", "logging.collapse_frequency=2", "logging.collapse_probe_images=4",
                    "logging.collapse_rank_fraction=1.0", "logging.collapse_patience=1",
                    "training.stop_on_collapse=true")
    assert code == 3
    log = (out / "train.log").read_text()
    assert "stopping: collapse alarm" in log and "steps 2-2" in log
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_00000002.safetensors"


def test_parallel_streams_give_bit_identical_steps(tmp_path):
    """training.parallel_streams moves the target forward and the second view to another stream: the same
    ops, so three optimizer steps (with NT-Xent against target features, which reads both) end identical."""
    extra = ["loss.use_contrastive=true"]
    results = []
    for parallel in (False, True):
        config, plan, model, state, masks = _step_setup(tmp_path, extra + [f"training.parallel_streams={parallel}"])
        assert (model._side_stream is not None) == parallel
        step, _ = make_train_step(model, step_settings(config, plan))
        for i in range(3):
            state, metrics = step(state, _batch(config, plan, masks, 1, 4, seed=i))
        mx.eval(state, metrics)
        results.append((dict(tree_flatten(state)), metrics["loss"].item()))
    (a, loss_a), (b, loss_b) = results
    assert loss_a == loss_b
    for key in a:
        assert np.array_equal(np.array(a[key]), np.array(b[key])), key
