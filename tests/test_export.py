"""Exported encoders: the timm layout against a float64 NumPy implementation of timm's ViT forward (read
from the raw safetensors bytes), exact round trips through `load_encoder`, the project's evaluation
features, what timm cannot represent, bad input; and timm + PyTorch themselves when installed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import yaml
from mlx.utils import tree_flatten, tree_map_with_path

from hjepa_mlx import load_encoder
from hjepa_mlx.build import build_model
from hjepa_mlx.checkpoint import CheckpointManager
from hjepa_mlx.cli.export import main
from hjepa_mlx.config import load_config, to_dict
from hjepa_mlx.errors import UserError
from hjepa_mlx.evaluate.features import make_pooled_encoder
from hjepa_mlx.config.plan import make_plan
from hjepa_mlx.state import init_state
from hjepa_mlx.checkpoint_policy import Position, checkpoint_metadata
from tiny import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


def perturbed(tree, seed: int):
    """Every weight moved off its init, so biases, LayerNorm affines and LayerScale all matter: weights
    N(0, 0.05), biases N(0, 0.1), norm scales and LayerScale gammas 1 + N(0, 0.2) / 0.5 + N(0, 0.2)."""
    rng = np.random.default_rng(seed)

    def move(path, p):
        noise = rng.standard_normal(p.shape).astype(np.float32)
        if path.endswith("gamma"):
            return mx.array(0.5 + 0.2 * noise)
        if "norm" in path and path.endswith("weight"):
            return mx.array(1.0 + 0.2 * noise)
        return mx.array((0.1 if path.endswith("bias") else 0.05) * noise)
    return tree_map_with_path(move, tree)


def make_run(root: Path, *overrides: str):
    """A run directory holding one checkpoint of the tiny model (ViT-T, 32 px, patch 8) with perturbed
    target and context encoders. Returns (run_dir, model, state)."""
    raw = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())
    config = load_config(None, TINY_MODEL + list(overrides), raw=raw).config
    plan = make_plan(config)
    model = build_model(config, plan, quiet=True)
    state = init_state(model)
    state["target"] = perturbed(state["target"], 1)
    state["params"]["encoder"] = perturbed(state["params"]["encoder"], 2)
    CheckpointManager(root / "checkpoints").save(state, checkpoint_metadata(to_dict(config), Position(1, 0, 7), seed=plan.seed, best=None,
                                                                    total_steps=plan.total_steps, run_dir=root), epoch=1)
    return root, model, state


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run shared by the tests that only read it: LayerScale on, relu (the tiny model's default)."""
    return make_run(tmp_path_factory.mktemp("run"), "model.use_layerscale=true")


def images(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def export(*args: str) -> int:
    return main([str(a) for a in args])


# ------------------------------------------------------------------ NumPy references

def read_safetensors(path: Path) -> tuple[dict, dict]:
    """(arrays, metadata) from the raw bytes: 8-byte little-endian header length, JSON header, data."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    metadata = header.pop("__metadata__", {})
    body = raw[8 + size:]
    arrays = {}
    for key, entry in header.items():
        assert entry["dtype"] == "F32", (key, entry["dtype"])
        start, end = entry["data_offsets"]
        arrays[key] = np.frombuffer(body[start:end], dtype="<f4").reshape(entry["shape"]).astype(np.float64)
    return arrays, metadata


_erf = np.vectorize(math.erf)
ACT = {"gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
       "relu": lambda x: np.maximum(x, 0.0),
       "quick_gelu": lambda x: x / (1.0 + np.exp(-1.702 * x))}


def layer_norm(x, weight, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def timm_vit_forward(sd: dict, kw: dict, x: np.ndarray) -> np.ndarray:
    """timm's VisionTransformer.forward_features in float64 for x (B, 3, H, W): conv patchify (OIHW),
    + pos_embed (no class token), pre-norm blocks with qkv reshaped (B, N, 3, heads, hd), LayerScale,
    final norm. Returns tokens (B, N, D)."""
    b, c, h, w = x.shape
    p, d, heads = kw["patch_size"], kw["embed_dim"], kw["num_heads"]
    hd = d // heads
    patches = x.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
    t = patches @ sd["patch_embed.proj.weight"].reshape(d, -1).T + sd["patch_embed.proj.bias"]
    t = t + sd["pos_embed"]
    n = t.shape[1]
    act = ACT[kw.get("act_layer") or "gelu"]
    for i in range(kw["depth"]):
        g = lambda name: sd[f"blocks.{i}.{name}"]  # noqa: E731
        y = layer_norm(t, g("norm1.weight"), g("norm1.bias"))
        qkv = (y @ g("attn.qkv.weight").T + g("attn.qkv.bias")).reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        s = q @ k.transpose(0, 1, 3, 2) * hd ** -0.5
        s = np.exp(s - s.max(-1, keepdims=True))
        o = ((s / s.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
        o = o @ g("attn.proj.weight").T + g("attn.proj.bias")
        t = t + (o * g("ls1.gamma") if kw.get("init_values") is not None else o)
        y = layer_norm(t, g("norm2.weight"), g("norm2.bias"))
        m = act(y @ g("mlp.fc1.weight").T + g("mlp.fc1.bias")) @ g("mlp.fc2.weight").T + g("mlp.fc2.bias")
        t = t + (m * g("ls2.gamma") if kw.get("init_values") is not None else m)
    return layer_norm(t, sd["norm.weight"], sd["norm.bias"])


# ------------------------------------------------------------------ parity

CASES = {  # activation -> (extra overrides, timm act_layer)
    "gelu": (["model.mlp_activation=gelu", "model.use_layerscale=true"], "gelu"),
    "relu": (["model.mlp_activation=relu"], "relu"),
    "gelu_fast": (["model.mlp_activation=gelu_fast", "model.use_layerscale=true"], "quick_gelu"),
}


@pytest.mark.parametrize("activation", sorted(CASES))
def test_timm_export_matches_a_float64_numpy_timm_vit(tmp_path, capsys, activation):
    overrides, act_layer = CASES[activation]
    run_dir, _, _ = make_run(tmp_path, *overrides)
    out = tmp_path / "timm.safetensors"
    assert export(run_dir, "--out", out) == 0
    assert "timm.create_model(" in capsys.readouterr().out

    sd, meta = read_safetensors(out)
    kw = json.loads(meta["timm_kwargs"])
    assert meta["format"] == "timm" and meta["encoder"] == "target" and meta["step"] == "7"
    assert kw["act_layer"] == act_layer and kw["class_token"] is False and kw["global_pool"] == "avg"
    assert kw["fc_norm"] is False and kw["num_classes"] == 0 and kw["img_size"] == 32 and kw["patch_size"] == 8
    assert ("init_values" in kw) == ("model.use_layerscale=true" in overrides)
    assert sd["patch_embed.proj.weight"].shape == (192, 3, 8, 8)                 # OIHW
    assert sd["pos_embed"].shape == (1, 16, 192)
    assert json.loads(meta["timm_pretrained_cfg"])["mean"] == [0.485, 0.456, 0.406]

    x = images()
    reference = timm_vit_forward(sd, kw, x.transpose(0, 3, 1, 2).astype(np.float64))
    encoder = load_encoder(run_dir)
    tokens = np.array(encoder(x), dtype=np.float64)
    assert tokens.shape == reference.shape == (2, 16, 192)
    assert np.abs(tokens - reference).max() <= TOLERANCE
    assert np.abs(np.array(encoder.pool(x)) - reference.mean(axis=1)).max() <= TOLERANCE
    assert np.abs(reference).mean() > 0.1           # a real signal, not near-zero tokens


def test_exports_round_trip_exactly_through_load_encoder(tmp_path, tiny_run):
    run_dir, _, state = tiny_run
    from_run = load_encoder(run_dir)
    want = dict(tree_flatten(state["target"]))
    assert set(from_run.parameters()) == set(want)
    assert all(mx.array_equal(from_run.parameters()[k], v).item() for k, v in want.items())
    x = images(seed=3)
    for fmt in ("mlx", "timm"):
        out = tmp_path / f"{fmt}.safetensors"
        assert export(run_dir, "--format", fmt, "--out", out) == 0
        loaded = load_encoder(out)
        assert loaded.config == from_run.config and loaded.info["encoder"] == "target"
        assert all(mx.array_equal(loaded.parameters()[k], v).item() for k, v in want.items()), fmt
        assert mx.array_equal(loaded(x), from_run(x)).item(), fmt


def test_context_encoder_on_request(tmp_path, capsys):
    run_dir, _, state = make_run(tmp_path)
    assert export(run_dir / "checkpoints", "--encoder", "context", "--format", "mlx") == 0
    out = run_dir / "export" / "context_encoder_mlx.safetensors"          # the default --out
    assert str(out) in capsys.readouterr().out
    loaded = load_encoder(out)
    want = dict(tree_flatten(state["params"]["encoder"]))
    assert all(mx.array_equal(loaded.parameters()[k], v).item() for k, v in want.items())
    assert loaded.info["encoder"] == "context"
    assert not mx.array_equal(load_encoder(run_dir)(images()), loaded(images())).item()


def test_features_are_the_evaluation_features(tiny_run):
    run_dir, model, state = tiny_run
    encoder = load_encoder(run_dir)
    x = mx.array(images(4, seed=5))
    for level in (0, 1):
        want = make_pooled_encoder(model, state["target"], level)(x)
        assert np.abs(np.array(encoder.features(x, level)) - np.array(want)).max() <= 1e-6
    processed = encoder.preprocess(np.full((40, 48, 3), 128, np.uint8))
    assert processed.shape == (32, 32, 3) and processed.dtype == np.float32


def test_rope_encoder_goes_to_mlx_but_not_to_timm(tmp_path, capsys):
    run_dir, _, _ = make_run(tmp_path, "model.rope.use_rope=true")
    assert export(run_dir, "--format", "timm") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RoPE" in err[0] and "--format mlx" in err[0]
    assert not (run_dir / "export").exists()
    assert export(run_dir, "--format", "mlx") == 0
    loaded = load_encoder(run_dir / "export" / "target_encoder_mlx.safetensors")
    assert loaded.config["use_rope"] is True
    assert mx.array_equal(loaded(images()), load_encoder(run_dir)(images())).item()


def _corrupt_cases(tmp_path: Path, run_dir: Path) -> dict:
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)
    checkpoint = CheckpointManager(run_dir / "checkpoints").latest()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[:100_000])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    foreign = tmp_path / "foreign.safetensors"
    mx.save_safetensors(str(foreign), {"weight": mx.zeros((2, 2))})
    return {"missing": (tmp_path / "nope", "does not exist"), "empty": (empty, "no checkpoint"),
            "truncated": (truncated, "corrupt"), "garbage": (garbage, "corrupt"),
            "foreign": (foreign, "neither a training checkpoint")}


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "garbage", "foreign"])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, tiny_run, case):
    path, message = _corrupt_cases(tmp_path, tiny_run[0])[case]
    assert export(path) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert "Traceback" not in captured.out + captured.err
    with pytest.raises(UserError, match=message):
        load_encoder(path)


def test_exports_refuse_what_they_do_not_hold(tmp_path, tiny_run):
    run_dir = tiny_run[0]
    out = tmp_path / "timm.safetensors"
    assert export(run_dir, "--out", out) == 0
    with pytest.raises(UserError, match="--encoder context"):
        load_encoder(out, encoder="context")
    arrays, metadata = mx.load(str(out), return_metadata=True)
    arrays["pos_embed"] = arrays["pos_embed"] + 0.01          # as if fine-tuned in timm
    changed = tmp_path / "changed.safetensors"
    mx.save_safetensors(str(changed), arrays, metadata=metadata)
    with pytest.raises(UserError, match="sin-cos table"):
        load_encoder(changed)
    assert export(run_dir, "--out", CheckpointManager(run_dir / "checkpoints").latest()) == 2
    assert export(run_dir, "--out", tmp_path) == 2                           # a directory


# ------------------------------------------------------------------ timm itself (optional)

def test_timm_loads_the_export_with_no_missing_keys_and_matches(tmp_path):
    torch = pytest.importorskip("torch", reason="timm parity needs torch + timm (pip install torch timm)")
    timm = pytest.importorskip("timm", reason="timm parity needs torch + timm (pip install torch timm)")
    run_dir, _, _ = make_run(tmp_path, "model.mlp_activation=gelu", "model.use_layerscale=true")
    out = tmp_path / "timm.safetensors"
    assert export(run_dir, "--out", out) == 0
    _, meta = read_safetensors(out)
    model = timm.create_model(meta["timm_architecture"], pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(out), **json.loads(meta["timm_pretrained_cfg"])),
                              **json.loads(meta["timm_kwargs"])).eval()
    from safetensors.torch import load_file
    result = model.load_state_dict(load_file(str(out)), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = images(seed=9)
    with torch.no_grad():
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        tokens, pooled = model.forward_features(xt).numpy(), model(xt).numpy()
    encoder = load_encoder(run_dir)
    assert np.abs(np.array(encoder(x)) - tokens).max() <= TOLERANCE
    assert np.abs(np.array(encoder.pool(x)) - pooled).max() <= TOLERANCE


def test_the_model_shows_its_templates_read_only(tiny_run):
    _, model, state = tiny_run
    assert model.grid == model.encoder.grid == (4, 4)
    assert model.target_encoder is not model.encoder and "key" not in state
    with pytest.raises(AttributeError):
        model.grid = (1, 1)
