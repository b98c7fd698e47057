"""Sphinx extension: every public name of the listed packages has a rendered entry.

For each package in the ``api_coverage_packages`` config value, every name of
its ``__all__`` (or, for a module without one, every public function it defines)
must be documented: either under that exact dotted name, or because the same
object is documented under another public path (``optcore.chain`` documents
``optcore.transforms.chain`` and ``optcore.wrappers.chain``; ``optcore.tree.add``
is ``optcore.tree_utils.tree_add``). Aliases that are not functions or classes
(type aliases, constants) must keep their name to count. A missing name is a
warning naming it (an error under ``-W``), and the build then exits with
status 1 even without ``-W``, so a new public name without docs cannot slip
through.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

_UNRESOLVED = object()


def resolve(dotted: str) -> Any:
    """The object at a dotted path: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return _UNRESOLVED
        return obj
    return _UNRESOLVED


def public_names(module: Any) -> list[str]:
    """``__all__``, or the public functions and classes the module itself defines."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    ]


def _is_definition(obj: Any) -> bool:
    """Functions and classes have one identity; aliases of them are the same object."""
    return inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)


def missing_entries(packages: list[str], documented: list[str]) -> list[str]:
    """The ``package.name`` paths of public names that no documented entry covers."""
    by_path = set(documented)
    by_identity: set[int] = set()
    by_name_and_identity: set[tuple[str, int]] = set()
    for path in documented:
        obj = resolve(path)
        if obj is _UNRESOLVED:
            continue
        by_name_and_identity.add((path.rsplit(".", 1)[-1], id(obj)))
        if _is_definition(obj):
            by_identity.add(id(obj))
    missing = []
    for package in packages:
        module = importlib.import_module(package)
        for name in public_names(module):
            path = f"{package}.{name}"
            if path in by_path:
                continue
            obj = getattr(module, name, _UNRESOLVED)
            if obj is _UNRESOLVED:
                missing.append(f"{path} (in __all__ but not an attribute)")
                continue
            if (name, id(obj)) in by_name_and_identity:
                continue
            if _is_definition(obj) and id(obj) in by_identity:
                continue
            missing.append(path)
    return missing


def check_coverage(app: Sphinx, env: Any) -> None:
    if app.builder.name not in ("html", "dirhtml", "singlehtml", "dummy"):
        return
    documented = list(env.get_domain("py").objects)
    missing = missing_entries(app.config.api_coverage_packages, documented)
    for path in missing:
        logger.warning("public name without a documentation entry: %s", path, type="api_coverage")
    if missing:
        # Fails the build even without -W (sphinx-build exits 1), after every other page is built.
        logger.error(
            "%d public name(s) have no entry in the API reference; add an autodoc entry for each to the "
            "matching page under docs/api/.",
            len(missing),
        )
        app.statuscode = 1
        return
    logger.info("api_coverage: every public name of %d packages is documented", len(app.config.api_coverage_packages))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("api_coverage_packages", [], "env")
    app.connect("env-check-consistency", check_coverage)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
