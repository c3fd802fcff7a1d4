"""`named` fields (schema.named): a mapping {name: options} whose names belong to a registry, not the schema.

The registry gives each name's options dataclass; the entry is then built as strictly as a section (unknown
option, type, range, a missing required option: one-line UserError naming `<field>.<name>.<option>`).
"""

from __future__ import annotations

import dataclasses
import importlib

from hjepa_mlx.errors import UserError


def named_entries(raw, options_of: str, path: str, source: str, build) -> dict:
    """raw: the mapping as written; options_of: 'module:function', function(name, where) -> options dataclass
    (UserError for an unknown name); build: the loader's section builder. Returns {name: options}."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: '{path}' must be a mapping of names to their options, got {type(raw).__name__}")
    module, _, function = options_of.partition(":")
    options_type = getattr(importlib.import_module(module), function)
    entries = {}
    for name, options in raw.items():
        cls = options_type(str(name), f"{source}: '{path}.{name}'")
        entries[str(name)] = build(cls, {} if options is None else options, f"{path}.{name}.", source, scoped=True)
    return entries


def named_fields(cls, prefix: str = "") -> list[str]:
    """Dotted paths of the `named` fields of a schema class: the keys below them are their registries'."""
    out = []
    for f in dataclasses.fields(cls):
        if "options_of" in f.metadata:
            out.append(prefix + f.name)
        elif dataclasses.is_dataclass(f.default):
            out.extend(named_fields(type(f.default), f"{prefix}{f.name}."))
    return out
