"""The default plugin: registers the core's own names through the public hook.

Each family package lists its public names in ``__all__``; every factory among
them is registered with the kind of its package. A name exported by several
packages (``chain`` is both a wrapper and a transform) keeps the first kind.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from optcore import optimizers, projections, schedules, transforms, wrappers
from optcore.hookspecs import hookimpl

FAMILIES = (
    ("optimizer", optimizers),
    ("wrapper", wrappers),
    ("schedule", schedules),
    ("transform", transforms),
    ("projection", projections),
)


def _is_factory(obj: Any) -> bool:
    """Functions, partials and non-tuple classes (``MultiSteps``); not states or types."""
    if isinstance(obj, functools.partial):
        return True
    if inspect.isclass(obj):
        return not issubclass(obj, tuple) and not getattr(obj, "_is_protocol", False)
    return inspect.isfunction(obj)


def core_entries() -> list[tuple[str, Any, str]]:
    """``(name, obj, kind)`` for every factory the core exports."""
    seen: set[str] = set()
    out = []
    for kind, package in FAMILIES:
        for name in package.__all__:
            obj = getattr(package, name)
            if name in seen or not _is_factory(obj):
                continue
            seen.add(name)
            out.append((name, obj, kind))
    return out


@hookimpl
def optcore_register(register):
    for name, obj, kind in core_entries():
        register(name, obj, kind=kind)
