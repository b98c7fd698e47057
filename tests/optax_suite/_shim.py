"""Optax's modules as seen by Optax's own tests, with every public name resolved to optcore's.

``module("optax._src.alias")`` is a module object whose attributes are looked
up in optcore first (the namespace that corresponds to the Optax module: the
core, ``optcore_contrib``, ``optcore_losses``, ...), and in Optax only for
what optcore does not have: Optax's test helpers (``test_utils``) and its
private functions, which the tests then exercise on optcore's objects. The
names that fell back are recorded in :data:`FALLBACKS`.
"""

from __future__ import annotations

import importlib
import types

import optcore

FALLBACKS: set = set()
KEEP_OPTAX = {"optax._src.test_utils"}  # Optax's assertions, not its optimizers


def _plugin(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _namespaces(path: str) -> list:
    """Where optcore keeps the names of the Optax module ``path``, most specific first."""
    contrib, losses = _plugin("optcore_contrib"), _plugin("optcore_losses")
    by_prefix = [
        ("optax.contrib", [contrib, optcore]),
        ("optax.losses", [losses]),
        ("optax.assignment", [losses, optcore]),
        ("optax.tree", [optcore.tree, optcore.tree_utils]),
        ("optax.schedules", [optcore.schedules, optcore]),
        ("optax.projections", [optcore.projections]),
        ("optax.perturbations", [_plugin("optcore_stochastic.perturbations")]),
        ("optax.second_order", [_plugin("optcore_second_order")]),
        ("optax.microbatching", [importlib.import_module("optcore.microbatching")]),
    ]
    for prefix, namespaces in by_prefix:
        if path == prefix or path.startswith(prefix + "."):
            return [ns for ns in namespaces if ns is not None]
    if path == "optax":
        return [optcore]
    if path == "optax._src.linesearch":  # the tests read the verbose messages' FLAG_* constants
        return [optcore, importlib.import_module("optcore.transforms._linesearch")]
    stochastic_utils = _plugin("optcore_stochastic.utils")
    everywhere = (optcore, optcore.numerics, optcore.transforms, optcore.tree_utils, optcore.schedules, contrib, losses,
                  stochastic_utils)
    return [ns for ns in everywhere if ns is not None]


class OptaxAsOptcore(types.ModuleType):
    def __init__(self, path: str):
        super().__init__(path)
        self._path = path
        self._optax = importlib.import_module(path)

    def __getattr__(self, name: str):
        theirs = getattr(self._optax, name)
        if isinstance(theirs, types.ModuleType):
            if theirs.__name__ in KEEP_OPTAX or not theirs.__name__.startswith("optax"):
                return theirs
            return OptaxAsOptcore(theirs.__name__)
        if name.startswith("__"):
            return theirs
        for namespace in _namespaces(self._path):
            ours = getattr(namespace, name, None)
            if ours is not None:
                return ours
        FALLBACKS.add(f"{self._path}.{name}")
        return theirs


def module(path: str):
    return importlib.import_module(path) if path in KEEP_OPTAX else OptaxAsOptcore(path)
