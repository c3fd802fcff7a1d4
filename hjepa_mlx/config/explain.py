"""`scripts/train.py CONFIG --explain`: every key with its effective value, where the value came from, and
the modules that read it.

Sources: `file`, `file (legacy 'old.key')` (an alias in aliases.py), `--set`, or `default` (the schema).
Consumers are found by reading the package's code, not from a hand-kept list: an AST pass follows
`config.section.key` chains, names bound to a section (`t = config.training`, then `t.lr`) and loops over
entry lists (`for e in data.datasets: e.name`). Keys whose only use is a refusal in rules.REFUSED say so.
A key nothing reads shows `-` (a test keeps that list empty for the shipped configs).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
from pathlib import Path

from hjepa_mlx.config.aliases import ALIASES, canonical_path
from hjepa_mlx.config.loader import _all_paths, load_config, parse_override, read_yaml, to_dict
from hjepa_mlx.config.named import named_fields
from hjepa_mlx.config.schema import Config

PACKAGE = Path(__file__).resolve().parents[1]
ROOT_NAMES = {"config", "cfg"}          # names that hold a whole Config in this code base

# Keys the original PyTorch H-JEPA accepted in its YAML files and never read (found by reading its
# source); marked on the seed configs, where a user believed they did something.
ORIGINAL_IGNORED = ("experiment.seed", "data.transforms", "training.min_lr_ratio", "training.warmup_lr_ratio",
                    "masking.context_scale", "checkpoint.keep_last_k", "checkpoint.save_best", "logging.log_",
                    "evaluation.knn", "model.rope", "model.ema")


def _leaf_paths() -> set[str]:
    paths = set(_all_paths(Config))
    return {p for p in paths if not any(q.startswith(p + ".") for q in paths)}


def _section_paths(cls=Config, prefix="") -> dict[str, type]:
    """Dotted path -> dataclass type of every section, and 'data.datasets[]' for the entries' type."""
    from hjepa_mlx.config.schema import DatasetEntry

    out = {prefix.rstrip("."): cls}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default):
            out.update(_section_paths(type(f.default), f"{prefix}{f.name}."))
        elif f"{prefix}{f.name}" == "data.datasets":
            out.update(_section_paths(DatasetEntry, "data.datasets[]."))
    return out


class _Reads(ast.NodeVisitor):
    """Collects the schema paths a module reads (see the module docstring)."""

    def __init__(self, sections: set[str], leaves: set[str], calls: dict | None = None):
        self.sections, self.leaves, self.found = sections, leaves, set()
        self.scopes: list[dict[str, str]] = [{}]
        # function name -> {parameter position: section path} seen at its call sites (in any module), so
        # `log_diagnostics(config.logging, ...)` makes `lg.log_images` inside it a read of logging.log_images
        self.calls: dict[str, dict[int, str]] = {} if calls is None else calls

    def _path(self, node) -> str | None:
        if isinstance(node, ast.Name):
            if node.id in self.scopes[-1]:
                return self.scopes[-1][node.id]
            return "" if node.id in ROOT_NAMES else None
        if isinstance(node, ast.Attribute):
            base = self._path(node.value)
            if base is None:
                return "" if node.attr == "config" and isinstance(node.value, ast.Name) else None
            path = f"{base}.{node.attr}" if base else node.attr
            known = path in self.sections or path in self.leaves or f"{path}[]" in self.sections
            return path if known else None
        return None

    def visit_FunctionDef(self, node):
        scope = dict(self.scopes[-1])
        params = [a.arg for a in node.args.posonlyargs + node.args.args]
        for position, path in self.calls.get(node.name, {}).items():
            if position < len(params):
                scope[params[position]] = path
        self.scopes.append(scope)
        self.generic_visit(node)
        self.scopes.pop()

    def visit_Call(self, node):
        name = node.func.id if isinstance(node.func, ast.Name) else \
            node.func.attr if isinstance(node.func, ast.Attribute) else None
        for position, arg in enumerate(node.args if name else ()):
            path = self._path(arg)
            if path and path in self.sections:
                self.calls.setdefault(name, {})[position] = path
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Assign(self, node):
        self.generic_visit(node)
        path = self._path(node.value)
        for target in node.targets:
            if isinstance(target, ast.Name):
                if path is not None and path in self.sections:
                    self.scopes[-1][target.id] = path
                else:
                    self.scopes[-1].pop(target.id, None)

    def _bind_entries(self, target, iterable):
        path = self._path(iterable)
        if path is not None and isinstance(target, ast.Name) and f"{path}[]" in self.sections:
            self.scopes[-1][target.id] = f"{path}[]"

    def visit_For(self, node):
        self._bind_entries(node.target, node.iter)
        self.generic_visit(node)

    def visit_comprehension(self, node):
        self._bind_entries(node.target, node.iter)
        self.generic_visit(node)

    def _visit_comprehension_expr(self, node):
        for generator in node.generators:           # bind the loop names before reading the element
            self.visit(generator)
        for field in ("elt", "key", "value"):
            if hasattr(node, field):
                self.visit(getattr(node, field))

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _visit_comprehension_expr

    def visit_Attribute(self, node):
        path = self._path(node)
        if path is not None and path in self.leaves:
            self.found.add(path)
        self.generic_visit(node)


@functools.lru_cache(maxsize=1)
def consumers() -> dict[str, tuple[str, ...]]:
    """Schema leaf path -> the package modules (relative paths) that read it (in config/, only rules.py,
    plan.py and plan_checks.py: schema and loader handle every key alike)."""
    leaves = _leaf_paths() | {p.replace("datasets.", "datasets[].") for p in _leaf_paths() if ".datasets." in p}
    sections = set(_section_paths())
    found: dict[str, set[str]] = {}
    trees = {}
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE.parent).as_posix()
        if "/config/" not in rel or rel.endswith(("config/rules.py", "config/plan.py", "config/plan_checks.py",
                                                    "config/run_settings.py")):
            trees[rel] = ast.parse(file.read_text(encoding="utf-8"))
    calls: dict = {}
    for tree in trees.values():                    # first pass: which functions (by name) receive a section
        _Reads(sections, leaves, calls).visit(tree)
    for rel, tree in trees.items():
        reads = _Reads(sections, leaves, calls)
        reads.visit(tree)
        for path in reads.found:
            found.setdefault(path.replace("[]", ""), set()).add(rel)
    return {path: tuple(sorted(mods)) for path, mods in found.items()}


def _refused_only() -> dict[str, str]:
    from hjepa_mlx.config.rules import REFUSED
    return {path: "refused when set (config/rules.py): " + why.split(";")[0] for path, _, why in REFUSED}


def _flat(tree: dict, prefix="", whole=()) -> dict[str, object]:
    """Dotted leaf path -> value; the paths in `whole` (the `named` fields) are one leaf holding their mapping."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in whole:
            out.update(_flat(value, path + ".", whole))
        else:
            out[path] = value
    return out


def _sources(path: str | None, overrides) -> dict[str, str]:
    """Canonical leaf path -> where its value came from (entries of data.datasets count as one key)."""
    out = {}
    if path is not None:
        for written in _flat(read_yaml(path)):
            canonical = canonical_path(written)
            legacy = next((old for old in ALIASES if written == old or written.startswith(old + ".")), None)
            out[canonical] = f"file (legacy '{written}')" if legacy else "file"
    for text in overrides:
        key, _ = parse_override(text)
        out[canonical_path(key)] = "--set"
    return out


def explain_rows(path: str | None, overrides=(), *, raw: dict | None = None) -> list[dict]:
    """One row per schema key: key, value, source, consumer, original_ignored (bool)."""
    loaded = load_config(path, list(overrides), raw=raw)
    values = _flat(to_dict(loaded.config), whole=named_fields(Config))
    sources = _sources(path, overrides) if raw is None else {p: "file" for p in _flat(raw)}
    reads, refused = consumers(), _refused_only()
    rows = []
    for key, value in values.items():
        source = sources.get(key) or next((s for p, s in sources.items() if p.startswith(key + ".")), "default")
        if key == "data.datasets":
            used = sorted({m for p, mods in reads.items() if p.startswith("data.datasets.") for m in mods})
            consumer = ", ".join(used) if used else refused.get(key, "-")
        else:
            consumer = ", ".join(reads.get(key, ())) or refused.get(key, "-")
        ignored = source != "default" and any(key == p or key.startswith(p) for p in ORIGINAL_IGNORED)
        rows.append({"key": key, "value": value, "source": source, "consumer": consumer,
                     "original_ignored": ignored})
    return rows


def describe(rows: list[dict]) -> str:
    def shown(value):
        text = repr(value) if isinstance(value, str) else str(value)
        return text if len(text) <= 40 else text[:37] + "..."

    kw = max(len(r["key"]) for r in rows)
    vw = max(len(shown(r["value"])) for r in rows)
    sw = max(len(r["source"]) for r in rows)
    lines = [f"{'key':{kw}}  {'value':{vw}}  {'source':{sw}}  read by",
             f"{'-' * kw}  {'-' * vw}  {'-' * sw}  {'-' * 7}"]
    for r in rows:
        mark = "  [ignored by the original H-JEPA]" if r["original_ignored"] else ""
        lines.append(f"{r['key']:{kw}}  {shown(r['value']):{vw}}  {r['source']:{sw}}  {r['consumer']}{mark}")
    if any(r["original_ignored"] for r in rows):
        lines.append("[ignored by the original H-JEPA]: the PyTorch original accepted the key and never read it; "
                     "here it is read where the last column says")
    return "\n".join(lines)
