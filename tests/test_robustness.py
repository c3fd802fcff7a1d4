"""Hostile input, tried as a hostile user would: a seeded fuzzer over the shipped configs, the issue's
list of nonsense values, hostile tar archives and corrupt dataset files. Each must end in one clear
line (UserError / exit 2) or a valid plan: never a traceback, never silently accepted nonsense, never
a write outside the target. (Checkpoints, locks and resume: test_robustness_runs.py; the kill -9
drill: test_kill_drill.py, marked slow.)"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import pickle
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from hjepa_mlx.config import load_config
from hjepa_mlx.errors import UserError
from hjepa_mlx.config.plan import make_plan
from hjepa_mlx.config.plan_checks import check_plan

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


# ------------------------------------------------------------------ the config fuzzer

def validate(raw: dict, overrides=()) -> str:
    """What `train.py --dry-run` decides without touching data: 'ok' (a valid plan) or the one-line
    UserError message. Anything else propagates (a traceback in the CLI) and fails the test."""
    try:
        loaded = load_config(None, list(overrides), raw=raw)
        plan = make_plan(loaded.config)
        mask_plan = check_plan(loaded.config, plan)
    except UserError as exc:
        return f"error: {exc}"
    assert plan.steps_per_epoch is None or plan.steps_per_epoch >= 1
    assert plan.total_steps is None or plan.total_steps >= 1
    assert 1 <= mask_plan.num_context < plan.grid[0] * plan.grid[1]
    return "ok"


HOSTILE = [None, "", -1, 0, 10 ** 400, "1" + "0" * 400, "nan", float("inf"), "abc", [], {}, True, "x\x00y",
           "\ud800", 2 ** 64, 0.5, -0.5, 1e308, [1, 1], [1.0, 1.0], list(range(300)), {"deep": [[[[1]]]]},
           "/", 10 ** 6, 1000, 3]


def _leaf_paths(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, prefix + (key,))
        else:
            yield prefix + (key,)


def mutate(raw: dict, rng: random.Random) -> tuple[dict, str]:
    """One to three random edits of a config: a leaf set to a hostile value, a leaf deleted, a section
    replaced by a scalar, an unknown key added."""
    tree = yaml.safe_load(yaml.safe_dump(raw))          # a deep copy
    edits = []
    for _ in range(rng.randint(1, 3)):
        paths = list(_leaf_paths(tree))
        path = rng.choice(paths)
        node = tree
        for part in path[:-1]:
            node = node[part]
        kind = rng.random()
        if kind < 0.7:
            value = rng.choice(HOSTILE)
            node[path[-1]] = value
            edits.append(f"{'.'.join(map(str, path))}={value!r:.40}")
        elif kind < 0.8:
            del node[path[-1]]
            edits.append(f"del {'.'.join(map(str, path))}")
        elif kind < 0.9 and len(path) > 1:
            section = tree
            for part in path[:-2]:
                section = section[part]
            section[path[-2]] = rng.choice(HOSTILE)
            edits.append(f"{'.'.join(map(str, path[:-1]))}=scalar")
        else:
            node[path[-1] + "_typo"] = 1
            edits.append(f"{'.'.join(map(str, path))}_typo")
    return tree, "; ".join(edits)


@pytest.fixture
def cached_masks(monkeypatch):
    """Mask planning simulates 4,096 draws; mutants share geometries, so plan each one once."""
    import hjepa_mlx.masks as masks
    monkeypatch.setattr(masks, "plan_masks", functools.lru_cache(maxsize=None)(masks.plan_masks))


def test_config_fuzzer_gives_one_line_or_a_valid_plan(cached_masks, capsys):
    rng = random.Random(16)
    seeds = [yaml.safe_load(p.read_text()) for p in CONFIGS]
    outcomes = {"ok": 0, "error": 0}
    for i in range(240):
        base = seeds[i % len(seeds)]
        raw, edits = mutate(base, rng)
        try:
            result = validate(raw)
        except Exception as exc:     # a traceback for the user
            pytest.fail(f"mutant {i} ({edits}) raised {type(exc).__name__}: {exc}")
        if result != "ok":
            assert "\n" not in result and len(result) < 1000, (edits, result)
        outcomes["ok" if result == "ok" else "error"] += 1
    capsys.readouterr()
    assert outcomes["ok"] + outcomes["error"] == 240
    assert outcomes["error"] > 100 and outcomes["ok"] > 10, outcomes    # the mutations bite, and not always


QUICK = yaml.safe_load((ROOT / "configs/quickstart.yaml").read_text())


SET_TEXTS = ["", "null", "-1", "0", "1e999", "-.inf", ".nan", "[1, 2", "{a: 1}", "abc", "1" * 400, "&a [*a]",
             "x\udcff", "[" * 100 + "]" * 100, "true", "2.5", "[0.5, 0.4]", "[1, 1]", "{}", "[]", "64", "99999"]


def test_set_fuzzer_gives_one_line_or_a_valid_plan(cached_masks, capsys):
    from hjepa_mlx.config.loader import _all_paths
    from hjepa_mlx.config.schema import Config

    rng = random.Random(17)
    keys = _all_paths(Config)
    outcomes = {"ok": 0, "error": 0}
    for i in range(120):
        override = f"{rng.choice(keys)}={rng.choice(SET_TEXTS)}"
        try:
            result = validate(QUICK, [override])
        except Exception as exc:
            pytest.fail(f"--set {override!r:.80} raised {type(exc).__name__}: {exc}")
        if result != "ok":
            assert "\n" not in result and len(result) < 1000, (override, result)
        outcomes["ok" if result == "ok" else "error"] += 1
    capsys.readouterr()
    assert outcomes["error"] > 60 and outcomes["ok"] >= 1, outcomes




def with_set(*overrides):
    return validate(QUICK, overrides)


# (override or raw edit, what the one-line message must name); each was a traceback or accepted before
NONSENSE = [
    (["experiment.seed=18446744073709551616"], "experiment.seed"),
    (["training.lr=1" + "0" * 400], "training.lr"),
    (["data.batch_size=1" + "0" * 400], "data.batch_size"),
    (["data.batch_size=100000"], "0 steps per epoch"),
    (["training.accumulation_steps=1000"], "0 steps per epoch"),
    (["training.steps_per_epoch=1000"], "training.steps_per_epoch 1,000 is beyond the data"),
    (["masking.mask_scale=[1, 1]"], "cover the whole"),
    (["masking.num_masks=1000"], "masking.num_masks"),
    (["masking.min_keep=1000"], "masking.min_keep"),
    (["data.image_size=8192"], "memory"),
    (["experiment.output_dir="], "experiment.output_dir is empty"),
    (["experiment.output_dir=/"], "filesystem root"),
    (["checkpoint.metric=train_loss"], "train_loss"),
    (["experiment.name=\udcff"], "surrogate"),
    (["checkpoint.save_every_minutes=-1"], "checkpoint.save_every_minutes"),
]


@pytest.mark.parametrize("overrides,named", NONSENSE)
def test_listed_nonsense_is_refused_in_one_line(overrides, named, cached_masks):
    result = with_set(*overrides)
    assert result.startswith("error: ") and named in result and "\n" not in result


def test_nul_in_a_path_and_a_dataset_without_a_name():
    raw = yaml.safe_load(yaml.safe_dump(QUICK))
    raw["data"]["data_path"] = "./da\x00ta"
    assert "NUL" in validate(raw)
    raw = yaml.safe_load(yaml.safe_dump(QUICK))
    del raw["data"]["dataset"]
    raw["data"]["use_multi_dataset"] = True
    raw["data"]["datasets"] = [{"weight": 1.0, "path": "./data"}]
    assert "data.datasets[0] has no name" in validate(raw)


@pytest.mark.parametrize("text,named", [
    ("experiment:\n  seed: 1\n  seed: 2\n", "duplicate key 'seed' (first at line 2, again at line 3)"),
    ("training:\n  lr: 0.1\ntraining:\n  epochs: 2\n", "duplicate key 'training' (first at line 1, again at line 3)"),
    ("a: &a [*a]\n", "refers to itself"),
    ("x: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")), "expands to more than"),
])
def test_hostile_yaml_files(text, named, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=None) as info:
        load_config(path)
    assert named in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("args,named", [
    (["--set", "data.batch_size=100000"], "0 steps per epoch"),
    (["--output-dir", "/"], "filesystem root"),
    (["--set", "masking.mask_scale=[1, 1]"], "cover the whole"),
])
def test_cli_subprocess_one_line_exit_2(args, named):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/train.py"), str(ROOT / "configs/quickstart.yaml"),
                           "--dry-run", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert named in proc.stderr


# ------------------------------------------------------------------ hostile archives

spec = importlib.util.spec_from_file_location("download_data", ROOT / "scripts/download_data.py")
dd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dd)


def member(name, kind="file", target="", data=b"x", mode=0o644):
    info = tarfile.TarInfo(name)
    info.mode = mode
    if kind == "file":
        info.size = len(data)
        return info, io.BytesIO(data)
    info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                 "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
    info.linkname = target
    return info, None


def archive(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for spec_ in members:
            tar.addfile(*member(*spec_))
    return path


F = "stl10_binary"
HOSTILE_ARCHIVES = {
    "symlink chain": [(f"{F}/a", "sym", "."), (f"{F}/a/b", "sym", ".."), (f"{F}/a/b/c", "sym", ".."),
                      (f"{F}/a/b/c/escape", "file")],
    "chain to a parent then a file": [(f"{F}/up", "sym", ".."), (f"{F}/up/up2", "sym", ".."),
                                      (f"{F}/up/up2/x", "file")],
    "link re-pointed later": [(f"{F}/d", "dir"), (f"{F}/l", "sym", "d/.."), (f"{F}/d", "sym", "..")],
    "absolute symlink": [(f"{F}/abs", "sym", "/etc/passwd")],
    "symlink up": [(f"{F}/up", "sym", "../../outside")],
    "hard link up": [(f"{F}/hard", "hard", "../outside")],
    "hard link through a symlink": [(f"{F}/s", "sym", ".."), (f"{F}/h", "hard", f"{F}/s/../x")],
    "absolute path": [("/tmp/evil", "file")],
    "dot-dot": [(f"{F}/../evil", "file")],
    "device node": [(f"{F}/dev", "chr")],
    "fifo": [(f"{F}/fifo", "fifo")],
    "link loop": [(f"{F}/x", "sym", "y"), (f"{F}/y", "sym", "x"), (f"{F}/x/z", "file")],
}


@pytest.mark.parametrize("with_data_filter", [True, False])
@pytest.mark.parametrize("case", sorted(HOSTILE_ARCHIVES))
def test_hostile_archives_write_nothing_outside(case, with_data_filter, tmp_path, monkeypatch):
    if not with_data_filter:      # the path Pythons without tarfile's data filter take
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    box = tmp_path / "box"
    root = box / "data"
    root.mkdir(parents=True)
    tar = archive(tmp_path / "a.tar.gz", [(f"{F}/train_X.bin", "file")] + HOSTILE_ARCHIVES[case])
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(dd.DownloadError, match="refusing to extract"):
        dd.extract(tar, root, F)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before       # nothing written anywhere


def test_a_good_archive_with_inner_links_extracts_and_strips_setuid(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    root = tmp_path / "data"
    root.mkdir()
    tar = archive(tmp_path / "a.tar.gz", [(f"{F}/train_X.bin", "file", "", b"x", 0o4755),
                                          (f"{F}/sub", "dir"), (f"{F}/sub/alias", "sym", "../train_X.bin"),
                                          (f"{F}/hard", "hard", f"{F}/train_X.bin")])
    out = dd.extract(tar, root, F)
    assert (out / "sub" / "alias").read_bytes() == b"x" and (out / "hard").read_bytes() == b"x"
    assert not os.stat(out / "train_X.bin").st_mode & 0o7000


# ------------------------------------------------------------------ corrupt data

def cifar_file(folder: Path, name: str, data, labels):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))


@pytest.mark.parametrize("data,labels,named", [
    (np.random.default_rng(0).random((4, 3072)).astype(np.float32), [0, 1, 2, 3], "pixels are float32"),
    (np.full((4, 3072), 300, dtype=np.int32), [0, 1, 2, 3], "pixels are int32"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2, 10], "labels outside 0..9"),
    (np.zeros((4, 3072), np.uint8), [0.5, 1, 2, 3], "labels are float64"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2], "4 images but 3 labels"),
])
def test_corrupt_cifar_is_refused(data, labels, named, tmp_path):
    from hjepa_mlx.data.cifar import CIFARDataset
    cifar_file(tmp_path / "cifar-10-batches-py", "test_batch", data, labels)
    with pytest.raises(UserError, match=None) as info:
        CIFARDataset(tmp_path, "test")
    assert named in str(info.value) and "test_batch" in str(info.value)


def write_stl10(root: Path, labels: bytes, names: bytes | None = None):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    (folder / "test_X.bin").write_bytes(bytes(3 * 96 * 96 * len(labels)))
    (folder / "test_y.bin").write_bytes(labels)
    if names is not None:
        (folder / "class_names.txt").write_bytes(names)


@pytest.mark.parametrize("labels,names,named", [
    (bytes([1, 2, 11]), None, "1 label(s) outside 1..10 (the first, at position 2, is 11)"),
    (bytes([0, 2, 3]), None, "outside 1..10 (the first, at position 0, is 0)"),
    (bytes([1, 2]) + b"", None, None),
    (bytes([1, 2, 3]), b"\xff\xfe airplane", "not readable UTF-8"),
    (bytes([1, 2, 3]), b"a b c", "names 3 classes"),
])
def test_stl10_label_and_class_name_errors_name_the_problem(labels, names, named, tmp_path):
    from hjepa_mlx.data.stl10 import STL10Dataset
    write_stl10(tmp_path, labels, names)
    if named is None:
        assert len(STL10Dataset(tmp_path, "test")) == 2
        return
    with pytest.raises(UserError, match=None) as info:
        STL10Dataset(tmp_path, "test")
    assert named in str(info.value)


def test_imagefolder_empty_class_and_decompression_bomb(tmp_path, monkeypatch):
    import hjepa_mlx.data.imagefolder as imf
    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "cat" / "a.png")
    with pytest.raises(UserError, match=r"class folder .*dog holds no images"):
        imf.ImageFolderDataset(tmp_path, "train")
    Image.new("L", (2000, 2000)).save(tmp_path / "train" / "dog" / "bomb.png")     # ~4 kB on disk
    monkeypatch.setattr(imf, "MAX_PIXELS", 1_000_000)
    ds = imf.ImageFolderDataset(tmp_path, "train")
    assert ds.load(0)[0].shape == (8, 8, 3)
    with pytest.raises(UserError, match="2000x2000 pixels, more than the limit"):
        ds.load(1)
