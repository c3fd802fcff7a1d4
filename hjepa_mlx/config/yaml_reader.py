"""YAML text -> plain Python values, refusing what PyYAML accepts silently but a config must not hold:
a key written twice in one mapping (PyYAML keeps the last one; the error names both lines), anchors
that refer to themselves (a cyclic value) and nesting deeper than any config needs.

Only safe YAML (no Python tags) is read, as with `yaml.safe_load`.
"""

from __future__ import annotations

import yaml

from hjepa_mlx.errors import UserError

MAX_DEPTH = 32          # the schema nests 4 levels; anything deeper is a mistake or an attack
MAX_VALUES = 100_000    # anchors can expand a short file exponentially ("billion laughs")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:          # an unhashable key: PyYAML's own error says so below
                    break
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first.line + 1}, again at line "
                                    f"{key_node.start_mark.line + 1}); keep one", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _check_shape(value, where: str) -> None:
    """Refuse cyclic values (recursive anchors), nesting deeper than MAX_DEPTH and anchor bombs, without
    recursion."""
    stack = [(value, 0, ())]
    visited = 0
    while stack:
        node, depth, path = stack.pop()
        visited += 1
        if visited > MAX_VALUES:
            raise UserError(f"{where}: the YAML expands to more than {MAX_VALUES:,} values (anchors referring to "
                            f"anchors); write the config out plainly")
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in path:
            raise UserError(f"{where}: a YAML anchor refers to itself (a value that contains itself); "
                            f"write the value out")
        if depth > MAX_DEPTH:
            raise UserError(f"{where}: values nested more than {MAX_DEPTH} levels deep; a config nests at most "
                            f"4 (section, sub-section, key, list)")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1, path + (id(node),)) for child in children)


def load_yaml(text: str, where: str):
    """The value of YAML `text`; UserError (naming `where`, the line and the column) when it is invalid."""
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: invalid YAML{at}: {problem}") from None
    except RecursionError:
        raise UserError(f"{where}: values nested too deeply to read; a config nests at most 4 levels") from None
    _check_shape(value, where)
    return value
