"""The registry: names -> objects, each with the plugin that provided it."""

from __future__ import annotations

import difflib
import fnmatch
import threading
from typing import Any, NamedTuple, Optional

from packaging.utils import canonicalize_name

from optcore.plugins import _catalog
from optcore.plugins._errors import NameCollisionError, PluginNotInstalledError, UnknownNameError

KINDS: tuple[str, ...] = (
    "optimizer",
    "transform",
    "wrapper",
    "schedule",
    "projection",
    "loss",
    "curvature",
    "estimator",
    "control_variate",
    "utility",
    "namespace",
)


class Provider(NamedTuple):
    """Who registered an entry: the plugin name, its distribution and version."""

    plugin: str
    distribution: Optional[str]
    version: Optional[str]


class Entry(NamedTuple):
    """One registered name. An alias is an entry of its own whose ``alias_of``
    is the name it stands for (same object, kind and provider)."""

    name: str
    kind: str
    obj: Any
    provider: Provider
    override: bool
    aliases: tuple[str, ...] = ()
    alias_of: Optional[str] = None
    # The DeprecationWarning of the attribute ``optcore.<name>`` (None: not deprecated).
    # Only that attribute warns: ``optcore.get(name)`` and the plugin's namespace stay silent,
    # as Optax deprecates ``optax.dpsgd`` but not ``optax.contrib.dpsgd``.
    deprecated: Optional[str] = None

    @property
    def qualified_name(self) -> str:
        """``"<distribution>:<name>"`` (``"<plugin>:<name>"`` without a distribution): always unambiguous."""
        return f"{self.provider.distribution or self.provider.plugin}:{self.name}"


class Registered(NamedTuple):
    """One row of :func:`optcore.available`."""

    name: str
    kind: str
    distribution: Optional[str]
    version: Optional[str]
    plugin: str
    aliases: tuple[str, ...] = ()


def validate_entry(name: Any, obj: Any, kind: Any, aliases: Any = ()) -> tuple[str, ...]:
    """Raises a clear error for a malformed registration; returns the aliases as a tuple."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"A registered name must be a Python identifier, got {name!r}.")
    if isinstance(aliases, str):
        raise TypeError(f"aliases of {name!r} must be a tuple of names, got the string {aliases!r}.")
    aliases = tuple(aliases)
    for alias in aliases:
        if not isinstance(alias, str) or not alias.isidentifier() or alias == name:
            raise ValueError(f"An alias of {name!r} must be a Python identifier other than the name, got {alias!r}.")
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r} for {name!r}; expected one of {', '.join(KINDS)}.")
    if kind != "namespace" and not callable(obj):
        raise TypeError(f"{name!r} ({kind}) must be callable, got {type(obj).__name__}.")
    return aliases


def make_entries(
    name: str,
    obj: Any,
    kind: str,
    provider: Provider,
    override: bool,
    aliases: tuple[str, ...],
    deprecated: Optional[str] = None,
):
    """The entry for ``name`` followed by one entry per alias."""
    main = Entry(name, kind, obj, provider, bool(override), aliases, deprecated=deprecated)
    return [main] + [Entry(a, kind, obj, provider, bool(override), (), name, deprecated) for a in aliases]


def normalize_prefix(prefix: str) -> str:
    """A distribution or plugin name compared the PEP 503 way (``optcore_contrib`` == ``optcore-contrib``)."""
    return canonicalize_name(prefix)


class Registry:
    """Entries by name. Several entries for one name are kept, so that a
    collision can be reported with every provider rather than silently picked.

    Every read and write holds a lock, so plugins can be added from one thread
    while others look names up or list them.
    """

    def __init__(self) -> None:
        self._entries: dict[str, list[Entry]] = {}
        self._lock = threading.RLock()

    def add(self, entries: list[Entry]) -> None:
        with self._lock:
            for entry in entries:
                self._entries.setdefault(entry.name, []).append(entry)

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._entries

    def all_entries(self) -> list[Entry]:
        with self._lock:
            return [e for entries in self._entries.values() for e in entries]

    def resolve(self, name: str) -> Entry:
        """The entry for ``name``, or a clear error (unknown, not installed, ambiguous)."""
        with self._lock:
            candidates = list(self._entries.get(name, ()))
        if not candidates:
            raise self.unknown_name_error(name)
        if len(candidates) == 1:
            return candidates[0]
        overriding = [e for e in candidates if e.override]
        if len(overriding) == 1:
            return overriding[0]
        clashing = overriding or candidates
        providers = ", ".join(_describe(e.provider) for e in clashing)
        qualified = " or ".join(repr(e.qualified_name) for e in clashing)
        raise NameCollisionError(
            f"{name!r} is registered by several plugins: {providers}. Ask for one by its qualified name "
            f"({qualified}), or have one register it with override=True."
        )

    def resolve_qualified(self, prefix: str, name: str) -> Optional[Entry]:
        """The entry for ``name`` from the distribution (or plugin) ``prefix``; None if it has none."""
        wanted = normalize_prefix(prefix)
        with self._lock:
            candidates = list(self._entries.get(name, ()))
        for entry in candidates:
            sources = (entry.provider.distribution, entry.provider.plugin)
            if any(s is not None and normalize_prefix(s) == wanted for s in sources):
                return entry
        return None

    def providers(self) -> set[str]:
        """Every normalized distribution and plugin name that has an entry."""
        out = set()
        for e in self.all_entries():
            out.add(normalize_prefix(e.provider.plugin))
            if e.provider.distribution:
                out.add(normalize_prefix(e.provider.distribution))
        return out

    def unknown_name_error(self, name: str) -> UnknownNameError:
        plugin = _catalog.provider_of(name)
        if plugin is not None:
            command = _catalog.install_command(plugin)
            return PluginNotInstalledError(
                f"{name!r} is provided by the plugin distribution {plugin.distribution!r}, "
                f"which is not installed (or not loaded). Install it with: {command}",
                distribution=plugin.distribution,
                install_command=command,
            )
        with self._lock:
            known = set(self._entries)
        known |= {n for plugin in _catalog.FIRST_PARTY for n in plugin.names}
        suggestions = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        return UnknownNameError(
            f"No optimizer, transform or other entry named {name!r} is registered.{hint} "
            "`optcore list` shows every registered name."
        )

    def entries(self, kind: Optional[str] = None, pattern: Optional[str] = None) -> list[Entry]:
        """Registered names (aliases excluded) of ``kind`` whose name or an alias matches the glob ``pattern``."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"Unknown kind {kind!r}; expected one of {', '.join(KINDS)}.")
        out = []
        for e in self.all_entries():
            if e.alias_of is not None or (kind is not None and e.kind != kind):
                continue
            if pattern is not None and not any(fnmatch.fnmatchcase(n, pattern) for n in (e.name, *e.aliases)):
                continue
            out.append(e)
        return sorted(out, key=lambda e: (e.kind, e.name, e.provider.plugin))

    def rows(self, kind: Optional[str] = None, pattern: Optional[str] = None) -> list[Registered]:
        return [
            Registered(e.name, e.kind, e.provider.distribution, e.provider.version, e.provider.plugin, e.aliases)
            for e in self.entries(kind, pattern)
        ]

    def names_of(self, plugin: str) -> dict[str, list[str]]:
        by_kind: dict[str, list[str]] = {}
        for e in self.all_entries():
            if e.provider.plugin == plugin and e.alias_of is None:
                by_kind.setdefault(e.kind, []).append(e.name)
        return {k: sorted(v) for k, v in sorted(by_kind.items())}

    def aliases_of(self, plugin: str) -> dict[str, str]:
        """``{alias: name}`` for the aliases a plugin registered."""
        return dict(sorted(
            (e.name, e.alias_of) for e in self.all_entries() if e.provider.plugin == plugin and e.alias_of is not None
        ))

    def collisions(self) -> dict[str, list[Provider]]:
        with self._lock:
            items = [(name, list(entries)) for name, entries in self._entries.items()]
        out = {}
        for name, entries in items:
            if len(entries) > 1 and sum(e.override for e in entries) != 1:
                out[name] = [e.provider for e in entries]
        return out


def _describe(provider: Provider) -> str:
    if provider.distribution:
        return f"plugin {provider.plugin!r} ({provider.distribution} {provider.version})"
    return f"plugin {provider.plugin!r}"
