"""The registry: names -> objects, each with the plugin that provided it."""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple, Optional

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
    name: str
    kind: str
    obj: Any
    provider: Provider
    override: bool
    # The DeprecationWarning of the attribute ``optcore.<name>`` (None: not deprecated).
    # Only that attribute warns: ``optcore.get(name)`` and the plugin's namespace stay silent,
    # as Optax deprecates ``optax.dpsgd`` but not ``optax.contrib.dpsgd``.
    deprecated: Optional[str] = None


class Registered(NamedTuple):
    """One row of :func:`optcore.available`."""

    name: str
    kind: str
    distribution: Optional[str]
    version: Optional[str]
    plugin: str


def validate_entry(name: Any, obj: Any, kind: Any) -> None:
    """Raises a clear error for a malformed registration."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"A registered name must be a Python identifier, got {name!r}.")
    if kind not in KINDS:
        raise ValueError(f"Unknown kind {kind!r} for {name!r}; expected one of {', '.join(KINDS)}.")
    if kind != "namespace" and not callable(obj):
        raise TypeError(f"{name!r} ({kind}) must be callable, got {type(obj).__name__}.")


class Registry:
    """Entries by name. Several entries for one name are kept, so that a
    collision can be reported with every provider rather than silently picked."""

    def __init__(self) -> None:
        self._entries: dict[str, list[Entry]] = {}

    def add(self, entries: list[Entry]) -> None:
        for entry in entries:
            self._entries.setdefault(entry.name, []).append(entry)

    def remove_provider(self, plugin: str) -> None:
        for name in list(self._entries):
            kept = [e for e in self._entries[name] if e.provider.plugin != plugin]
            if kept:
                self._entries[name] = kept
            else:
                del self._entries[name]

    def resolve(self, name: str) -> Entry:
        """The entry for ``name``, or a clear error (unknown, not installed, ambiguous)."""
        candidates = self._entries.get(name)
        if not candidates:
            raise self.unknown_name_error(name)
        if len(candidates) == 1:
            return candidates[0]
        overriding = [e for e in candidates if e.override]
        if len(overriding) == 1:
            return overriding[0]
        clashing = overriding or candidates
        providers = ", ".join(_describe(e.provider) for e in clashing)
        raise NameCollisionError(
            f"{name!r} is registered by several plugins: {providers}. Uninstall one of them, "
            "or have one register it with override=True."
        )

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
        known = set(self._entries) | {n for plugin in _catalog.FIRST_PARTY for n in plugin.names}
        suggestions = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        return UnknownNameError(
            f"No optimizer, transform or other entry named {name!r} is registered.{hint} "
            "`optcore list` shows every registered name."
        )

    def rows(self, kind: Optional[str] = None) -> list[Registered]:
        if kind is not None and kind not in KINDS:
            raise ValueError(f"Unknown kind {kind!r}; expected one of {', '.join(KINDS)}.")
        out = []
        for entries in self._entries.values():
            for e in entries:
                if kind is None or e.kind == kind:
                    out.append(
                        Registered(e.name, e.kind, e.provider.distribution, e.provider.version, e.provider.plugin)
                    )
        return sorted(out, key=lambda r: (r.kind, r.name, r.plugin))

    def names_of(self, plugin: str) -> dict[str, list[str]]:
        by_kind: dict[str, list[str]] = {}
        for entries in self._entries.values():
            for e in entries:
                if e.provider.plugin == plugin:
                    by_kind.setdefault(e.kind, []).append(e.name)
        return {k: sorted(v) for k, v in sorted(by_kind.items())}

    def collisions(self) -> dict[str, list[Provider]]:
        out = {}
        for name, entries in self._entries.items():
            if len(entries) > 1 and sum(e.override for e in entries) != 1:
                out[name] = [e.provider for e in entries]
        return out


def _describe(provider: Provider) -> str:
    if provider.distribution:
        return f"plugin {provider.plugin!r} ({provider.distribution} {provider.version})"
    return f"plugin {provider.plugin!r}"
