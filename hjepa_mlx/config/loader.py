"""Load a YAML file into the frozen `Config`: aliases, strict keys, types, ranges, `--set` overrides.

Nothing is dropped: an unknown key is an error naming its dotted path, the file and the closest valid
key. Cross-field rules live in `rules.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from hjepa_mlx.config.aliases import ALIASES
from hjepa_mlx.config.named import named_entries, named_fields
from hjepa_mlx.config.schema import Config
from hjepa_mlx.config.yaml_reader import load_yaml
from hjepa_mlx.errors import UserError

_MISSING = object()


@dataclasses.dataclass(frozen=True)
class LoadedConfig:
    config: Config
    provided: frozenset[str]   # canonical dotted paths the user wrote (file or --set)
    source: str                # file name, for messages
    notes: tuple[str, ...]     # one-line remarks to print (e.g. a key of a disabled feature)


# ---------------------------------------------------------------- reading

def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise UserError(f"config file not found: {p} (give the path to a YAML file, e.g. configs/quickstart.yaml)")
    if p.is_dir():
        raise UserError(f"config path is a directory, not a file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {p}: {exc}") from None
    raw = load_yaml(text, str(p))
    if raw is None:
        raise UserError(f"{p}: the config file is empty; start from configs/quickstart.yaml")
    if not isinstance(raw, dict):
        raise UserError(f"{p}: the top level must be a mapping of sections (experiment:, model:, ...), "
                        f"got a {type(raw).__name__}")
    return raw


# ---------------------------------------------------------------- aliases

def _get(tree: dict, path: str, default=_MISSING):
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _pop(tree: dict, path: str):
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        node = node[part]
    return node.pop(leaf)


def _set(tree: dict, path: str, value, source: str) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"{source}: '{'.'.join(parents[:i + 1])}' must be a mapping to hold '{path}'")
        node = child
    node[leaf] = value


def _merge(canonical: Any, legacy: Any, legacy_path: str, canonical_path: str, source: str) -> Any:
    """Combine two spellings of one key; equal leaves are fine, different ones are an error."""
    if isinstance(canonical, dict) and isinstance(legacy, dict):
        merged = dict(canonical)
        for key, value in legacy.items():
            merged[key] = (_merge(canonical[key], value, f"{legacy_path}.{key}", f"{canonical_path}.{key}", source)
                           if key in canonical else value)
        return merged
    if canonical != legacy:
        raise UserError(f"{source}: '{legacy_path}' ({_short(legacy)}) and '{canonical_path}' ({_short(canonical)}) are two "
                        f"spellings of the same key with different values; keep one")
    return canonical


def apply_aliases(raw: dict, source: str) -> dict:
    tree = copy.deepcopy(raw)
    for legacy, canonical in ALIASES.items():
        value = _get(tree, legacy)
        if value is _MISSING:
            continue
        _pop(tree, legacy)
        existing = _get(tree, canonical)
        if existing is not _MISSING:
            value = _merge(existing, value, legacy, canonical, source)
        _set(tree, canonical, value, source)
    return tree


# ---------------------------------------------------------------- typed conversion

def _all_paths(cls, prefix="") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        out.append(path)
        sub = _section_type(typing.get_type_hints(cls)[f.name])
        if sub is not None:
            out.extend(_all_paths(sub, path + "."))
    return out


def _section_type(tp):
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def _suggest(path: str, cls_at_level, level_prefix: str, *, scoped: bool = False) -> str:
    """scoped: the keys of a registered entry (a `named` field), which name only their own options."""
    leaf = path.rsplit(".", 1)[-1]
    here = [f.name for f in dataclasses.fields(cls_at_level)]
    close = difflib.get_close_matches(leaf, here, n=1, cutoff=0.6)
    if scoped:
        mean = f"did you mean '{level_prefix}{close[0]}'? " if close else ""
        return f"{mean}valid keys here: {', '.join(here)}"
    if close:
        return f"did you mean '{level_prefix}{close[0]}'?"
    elsewhere = [p for p in _all_paths(Config) if p.rsplit(".", 1)[-1] == leaf]
    if elsewhere:
        return f"did you mean '{elsewhere[0]}'?"
    anywhere = difflib.get_close_matches(path, _all_paths(Config), n=1, cutoff=0.6)
    if anywhere:
        return f"did you mean '{anywhere[0]}'?"
    return f"valid keys here: {', '.join(here)}"


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} numbers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


MAX_INT = 2 ** 53          # larger integers are never meaningful here (and lose precision as floats)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def _scalar(value, tp, path: str, source: str):
    bad = UserError(f"{source}: '{path}' must be {_type_name(tp)}, got {_short(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int):
            if abs(value) > MAX_INT:     # 10**400 would plan "0 steps" or overflow later
                raise UserError(f"{source}: '{path}' = {_short(value)} is too large (at most {MAX_INT:,})")
            return value
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            # PyYAML reads `1e-5` (no dot) as a string; accept numeric strings.
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, (int, float)):
            try:
                value = float(value)
            except OverflowError:        # an integer with hundreds of digits
                raise UserError(f"{source}: '{path}' = {_short(value)} is too large to be a number") from None
            if not math.isfinite(value):
                raise UserError(f"{source}: '{path}' must be a finite number, got {_short(value)}")
            return value
        raise bad
    if tp is str:
        if isinstance(value, str):
            if "\x00" in value:
                raise UserError(f"{source}: '{path}' contains a NUL character; remove it")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{source}: '{path}' contains a lone surrogate (not valid Unicode text); "
                                f"retype the value") from None
            return value
        raise bad
    raise TypeError(f"schema type not handled: {tp}")


def _check_range(value, meta: dict, path: str, source: str) -> None:
    rng = meta.get("range")
    if rng is None or value is None:
        return
    lo, hi, lo_open, hi_open = rng
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if lo is not None and (v < lo or (lo_open and v == lo)):
            interval = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}{')' if hi_open or hi is None else ']'}"
            raise UserError(f"{source}: '{path}' = {_short(value)} is out of range; it must lie in {interval}")
        if hi is not None and (v > hi or (hi_open and v == hi)):
            interval = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi}{')' if hi_open else ']'}"
            raise UserError(f"{source}: '{path}' = {_short(value)} is out of range; it must lie in {interval}")
    if meta.get("ordered") and values[0] > values[1]:
        raise UserError(f"{source}: '{path}' = {list(value)} must be [low, high] with low <= high")
    if "min_len" in meta and len(values) < meta["min_len"]:
        raise UserError(f"{source}: '{path}' needs at least {meta['min_len']} value(s)")


def _convert(value, tp, path: str, source: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path, source)
    if value is None:
        raise UserError(f"{source}: '{path}' must be {_type_name(tp)}, got null")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{source}: '{path}' = {_short(value)} is not allowed; choose {_type_name(tp)}{hint}")
        return value
    section = _section_type(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path + ".", source)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{source}: '{path}' must be {_type_name(tp)}, got {_short(value)}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            if section is not None:
                return tuple(_build(section, v, f"{path}[{i}].", source) for i, v in enumerate(value))
            return tuple(_scalar(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{source}: '{path}' must be a list of {len(args)} numbers, got {_short(value)}")
        return tuple(_scalar(v, a, f"{path}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    return _scalar(value, tp, path, source)


def _build(cls, raw, prefix: str, source: str, *, scoped: bool = False):
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise UserError(f"{source}: '{where}' must be a mapping of keys, got {_short(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            path = f"{prefix}{key}"
            hint = _suggest(path, cls, prefix, scoped=scoped)
            raise UserError(f"{source}: unknown key {_short(path)}; {hint}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if "options_of" in f.metadata and f.name in raw:
            kwargs[f.name] = named_entries(raw[f.name], f.metadata["options_of"], prefix + f.name, source, _build)
        elif f.name in raw:
            value = _convert(raw[f.name], hints[f.name], prefix + f.name, source)
            _check_range(value, f.metadata, prefix + f.name, source)
            kwargs[f.name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{source}: '{prefix}{f.name}' is required; add it ({_type_name(hints[f.name])})")
    return cls(**kwargs)


def _leaf_paths(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict):
            out |= _leaf_paths(value, path + ".")
    return out


# ---------------------------------------------------------------- overrides

def parse_override(text: str) -> tuple[str, Any]:
    """`a.b.c=value` -> ("a.b.c", value); the value is read as YAML (numbers, lists, true/false)."""
    if "=" not in text:
        raise UserError(f"--set {_short(text)}: expected KEY=VALUE, e.g. --set training.epochs=2")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {_short(text)}: the key must be a dotted path like training.lr")
    try:
        parsed = load_yaml(value, f"--set {key}") if value.strip() else ""
    except UserError as exc:
        if "invalid YAML" not in str(exc):
            raise                       # cyclic / too deep / duplicate keys
        parsed = value                  # plain text that is not YAML: a string
    return key, parsed


def load_config(path: str | Path | None, overrides: list[str] = (), *, raw: dict | None = None,
                resolved: bool = False) -> LoadedConfig:
    """Read, alias, override, validate. `raw` passes a dict instead of a file (tests, checkpoint metadata);
    `resolved=True` marks it as a complete resolved config (see RESOLVED_HEADER)."""
    from hjepa_mlx.config.aliases import REMOVED, canonical_path
    from hjepa_mlx.config.rules import check_rules

    source = str(path) if path is not None else "<config>"
    if raw is None:
        raw = read_yaml(path)
        with open(path, encoding="utf-8") as fh:
            resolved = fh.readline().rstrip("\n") == RESOLVED_HEADER
    tree = apply_aliases(raw, source)
    removed_notes = []
    for removed, why in REMOVED.items():
        if _get(tree, removed, _MISSING) is not _MISSING:
            if not resolved:
                raise UserError(f"{source}: '{removed}' was removed: {why}")
            _pop(tree, removed)
            removed_notes.append(f"note: {source}: '{removed}' (removed key) ignored in this saved config: {why}")
    for text in overrides:
        key, value = parse_override(text)
        path = canonical_path(key)
        if path in REMOVED:
            raise UserError(f"--set {key}: '{path}' was removed: {REMOVED[path]}")
        valid = _all_paths(Config)
        if path not in valid and not any(path.startswith(f + ".") for f in named_fields(Config)):
            close = difflib.get_close_matches(path, valid, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"--set {key}: unknown key{hint}")
        _set(tree, path, value, f"--set {key}")
    # A resolved file spells out every key, so "was this key written?" checks do not apply to it.
    provided = frozenset() if resolved else frozenset(_leaf_paths(tree))
    config = _build(Config, tree, "", source)
    notes = removed_notes + check_rules(config, provided, source)
    return LoadedConfig(config=config, provided=provided, source=source, notes=tuple(notes))


def to_dict(config: Config) -> dict:
    """Plain nested dict (tuples as lists) for YAML/JSON output."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x
    return plain(dataclasses.asdict(config))


RESOLVED_HEADER = "# hjepa-mlx resolved config: every key with the value the run used"


def dump_yaml(config: Config) -> str:
    """The resolved config as YAML; `load_config` recognises the header and reloads it as complete."""
    return RESOLVED_HEADER + "\n" + yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)
