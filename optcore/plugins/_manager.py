"""The plugin manager: finds plugins through entry points and runs their hooks.

Discovery is lazy: ``import optcore`` does no scanning; the first lookup calls
:func:`ensure_loaded`, which loads every plugin once.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import time
import warnings
from typing import Any, NamedTuple, Optional

import pluggy

from optcore import hookspecs
from optcore._version import __version__
from optcore.plugins import _catalog, _versions
from optcore.plugins._registry import Entry, Provider, Registry, validate_entry

ENTRY_POINT_GROUP = "optcore"
DISABLE_AUTOLOAD_ENV = "OPTCORE_DISABLE_PLUGIN_AUTOLOAD"
RUNTIME_PLUGIN = "<runtime>"  # provider of optcore.register(...) calls


class PluginStatus(NamedTuple):
    """One row of ``optcore list``: a plugin and what became of it."""

    name: str
    distribution: Optional[str]
    version: Optional[str]
    status: str  # "loaded", "broken" or "skipped"
    reason: Optional[str]
    load_seconds: Optional[float] = None  # import plus optcore_register (None: nothing was run)


class PluginWarning(UserWarning):
    """A plugin was skipped or failed to load; the rest of optcore works."""


class _Host:
    """Holds the pluggy manager, the registry and the status of each plugin."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.statuses: dict[str, PluginStatus] = {}
        self.deferred: dict[str, importlib.metadata.EntryPoint] = {}  # first-party, found not imported
        self.loaded = False
        self.loading = False  # set while plugins load: a lookup made by a plugin's import must not recurse
        self._runtime_entries: list[Entry] = getattr(self, "_runtime_entries", [])
        self.registry.add(self._runtime_entries)

    # -- loading -----------------------------------------------------------------

    def ensure_loaded(self) -> None:
        """Loads the core's names and every third-party plugin, once.

        First-party plugins are only found here, not imported: the catalog
        says which names each provides, so a lookup imports one only when it
        is asked for one of its names (see :meth:`resolve`), and
        :meth:`load_everything` imports them all for listings.
        """
        if self.loaded:
            return
        with self.lock:
            # Another thread waits on the lock; this thread re-entering (a plugin
            # that calls optcore.get while it is imported) sees what is loaded so
            # far (the core's names come first) instead of loading everything again.
            if self.loaded or self.loading:
                return
            self.loading = True
            try:
                from optcore.plugins import _default  # the core's own names, via the same hooks

                self.add_plugin(_default, name="optcore", distribution="optcore", version=__version__)
                if not os.environ.get(DISABLE_AUTOLOAD_ENV):
                    for ep in _entry_points():
                        dist = getattr(ep, "dist", None)
                        distribution = dist.metadata["Name"] if dist is not None else None
                        if _catalog.by_distribution(distribution) is not None:
                            self.deferred.setdefault(distribution, ep)
                        else:
                            self._load_entry_point(ep)
                self.loaded = True
            finally:
                self.loading = False

    def load_deferred(self, distribution: str) -> None:
        with self.lock:
            ep = self.deferred.pop(distribution, None)
            if ep is not None:
                self._load_entry_point(ep)

    def load_everything(self) -> None:
        self.ensure_loaded()
        for distribution in list(self.deferred):
            self.load_deferred(distribution)

    def resolve(self, name: str) -> Entry:
        """The registry entry for ``name``, importing the first-party plugin that provides it."""
        self.ensure_loaded()
        provider = _catalog.provider_of(name)
        if provider is not None and provider.distribution in self.deferred:
            self.load_deferred(provider.distribution)
        return self.registry.resolve(name)

    def _load_entry_point(self, ep: importlib.metadata.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        distribution = dist.metadata["Name"] if dist is not None else None
        version = dist.version if dist is not None else None
        name = ep.name
        if name in self.statuses:
            return  # the same distribution found twice on sys.path
        requirement = _versions.core_requirement(dist.requires if dist is not None else None)
        if requirement:
            try:
                compatible = _versions.version_satisfies(__version__, requirement)
            except ValueError as err:
                compatible, requirement = False, f"{requirement} ({err})"
            if not compatible:
                reason = f"requires optcore {requirement}, but optcore {__version__} is installed"
                self._skip(name, distribution, version, reason)
                return
        started = time.perf_counter()
        try:
            plugin = ep.load()
        except Exception as err:  # noqa: BLE001 - any failure of third-party code
            self._broken(name, distribution, version, f"import failed: {type(err).__name__}: {err}", started)
            return
        self.add_plugin(plugin, name=name, distribution=distribution, version=version, started=started)

    def add_plugin(
        self,
        plugin: Any,
        *,
        name: str,
        distribution: Optional[str] = None,
        version: Optional[str] = None,
        started: Optional[float] = None,
    ) -> None:
        """Registers ``plugin`` with pluggy and runs its ``optcore_register`` hook.

        Entries are staged and only committed if the hook returns normally, so
        a plugin that fails halfway leaves nothing behind. The status records
        the seconds since ``started`` (the import), so that a slow plugin can
        be told apart in ``optcore list``.
        """
        started = time.perf_counter() if started is None else started
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # noqa: BLE001 - e.g. a hook that matches no spec
            self._broken(name, distribution, version, f"invalid plugin: {type(err).__name__}: {err}", started)
            return
        provider = Provider(plugin=name, distribution=distribution, version=version)
        staged: list[Entry] = []

        def register(
            entry_name: str, obj: Any, *, kind: str, override: bool = False, deprecated: Optional[str] = None
        ) -> None:
            validate_entry(entry_name, obj, kind)
            if deprecated is not None and not isinstance(deprecated, str):
                raise TypeError(f"deprecated= of {entry_name!r} must be the warning message (a str), got {deprecated!r}.")
            staged.append(Entry(entry_name, kind, obj, provider, bool(override), deprecated))

        for impl in self.pm.hook.optcore_register.get_hookimpls():
            if impl.plugin_name != name:
                continue
            try:
                impl.function(register=register)
            except Exception as err:  # noqa: BLE001
                self.pm.unregister(name=name)
                self._broken(name, distribution, version, f"optcore_register failed: {type(err).__name__}: {err}", started)
                return
        self.registry.add(staged)
        self.statuses[name] = PluginStatus(name, distribution, version, "loaded", None, _since(started))

    def _broken(self, name, distribution, version, reason, started=None) -> None:
        warnings.warn(f"optcore plugin {name!r} ({distribution}) is broken and was skipped: {reason}", PluginWarning, stacklevel=4)
        seconds = None if started is None else _since(started)
        self.statuses[name] = PluginStatus(name, distribution, version, "broken", reason, seconds)

    def _skip(self, name, distribution, version, reason) -> None:
        warnings.warn(f"optcore plugin {name!r} ({distribution} {version}) was skipped: {reason}", PluginWarning, stacklevel=4)
        self.statuses[name] = PluginStatus(name, distribution, version, "skipped", reason)

    # -- explicit registration ---------------------------------------------------

    def register_runtime(self, name: str, obj: Any, kind: str, override: bool) -> None:
        validate_entry(name, obj, kind)
        entry = Entry(name, kind, obj, Provider(RUNTIME_PLUGIN, None, None), bool(override))
        with self.lock:
            self._runtime_entries.append(entry)
            self.registry.add([entry])


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


HOST = _Host()
