"""The loss terms added to the JEPA prediction loss, by name, in registration order.

A term is a frozen dataclass of options (with a `weight`) and a function of those options and the
model's features (see losses/total.py for the features dict) that returns (scalar, metrics). The built-in
terms (VICReg, NT-Xent) register themselves in losses/vicreg.py and losses/contrastive.py and are
configured by the seed configs' keys (build.loss_settings); a term registered from outside the package
is configured under `loss.terms.<name>`, checked against its options like any config section:

    @dataclass(frozen=True)
    class Toy:
        weight: float = 1.0
        target: float = 0.0

    register_loss_term(LossTerm("toy", Toy, lambda s, f: ...))

`total_loss` adds `weight * term` for every enabled term in registration order.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable

from hjepa_mlx.errors import UserError
from hjepa_mlx.registry import Registry


def _no_second_view(settings) -> bool:
    return False


def _no_extra_features(settings) -> tuple[str, ...]:
    return ()


def options_line(settings) -> str:
    """'name value, ...' of every option except the weight (the default `describe`)."""
    return ", ".join(f"{f.name} {getattr(settings, f.name)!r}" for f in dataclasses.fields(settings)
                     if f.name != "weight")


@dataclass(frozen=True)
class LossTerm:
    """name: the key under loss.terms (and in error messages); settings_type: a frozen dataclass of the
    options, with a `weight` field; compute(settings, features) -> (scalar mx.array, {metric: scalar});
    needs_two_views(settings): the term reads the second view's features (the loaders then make it);
    describe(settings): one line for --dry-run (None: the name and its options); keys: the config keys
    that configure the term instead of loss.terms (the built-ins' seed spelling); extra_features(settings):
    features the model computes only when asked ('vicreg_1', 'target_pooled_2'; see models/hjepa.py)."""

    name: str
    settings_type: type
    compute: Callable
    needs_two_views: Callable = _no_second_view
    describe: Callable | None = None
    keys: tuple[str, ...] = ()
    extra_features: Callable = _no_extra_features

    def line(self, settings) -> str:
        """'<weight> x <description>', a --dry-run loss line."""
        text = self.describe(settings) if self.describe else f"{self.name} ({options_line(settings)})"
        return f"{settings.weight:g} x {text}"


_TERMS: Registry[LossTerm] = Registry("loss term")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")   # one config key: no dots


def register_loss_term(term: LossTerm) -> LossTerm:
    """Add `term` after the ones registered before it; ValueError for a taken name or a malformed term."""
    if not _NAME.match(term.name):
        raise ValueError(f"loss term name {term.name!r} must be a valid identifier (it is a config key)")
    if not dataclasses.is_dataclass(term.settings_type) or \
            "weight" not in {f.name for f in dataclasses.fields(term.settings_type)}:
        raise ValueError(f"loss term {term.name!r}: settings_type must be a dataclass with a 'weight' field")
    _TERMS.add(term.name, term)
    return term


def unregister_loss_term(name: str) -> None:
    """Remove a term (tests, plug-ins being reloaded); unknown names are ignored."""
    _TERMS.remove(name)


def loss_terms() -> tuple[LossTerm, ...]:
    """Every registered term, in registration order."""
    return _TERMS.items()


def loss_term(name: str, where: str = "loss term") -> LossTerm:
    """The term called `name`; UserError naming `where` and listing the registered names otherwise."""
    if name not in _TERMS:
        raise UserError(f"{where}: {name!r} is not a registered loss term; registered: {', '.join(_TERMS.names())}")
    return _TERMS.get(name)


def term_options(name: str, where: str) -> type:
    """The options dataclass of a term configured under loss.terms (the config loader's lookup)."""
    term = loss_term(name, where)
    if term.keys:
        raise UserError(f"{where}: the built-in term {name!r} is configured by {', '.join(term.keys)} "
                        f"(not under loss.terms)")
    return term.settings_type


def order(terms) -> tuple:
    """(name, settings) pairs sorted by registration order; UserError for an unregistered name."""
    position = {name: i for i, name in enumerate(_TERMS.names())}
    for name, _ in terms:
        loss_term(name)
    return tuple(sorted(terms, key=lambda pair: position[pair[0]]))


def require(features: dict, name: str, why: str):
    """features[name], or ValueError saying which term needed it (the model did not supply that view)."""
    if name not in features:
        raise ValueError(f"total_loss: {why} needs features[{name!r}] (the model must supply the second view)")
    return features[name]
