"""The plugin host: finds plugins through entry points and calls their hooks through pluggy.

Discovery is lazy: ``import optcore`` does no scanning; the first lookup calls
:meth:`_Host.ensure_loaded`, which loads every plugin once.

Hooks are called through pluggy, one plugin at a time
-----------------------------------------------------
A plugin whose ``optcore_register`` raises must leave nothing behind while
every other plugin still loads, and each entry must know which plugin gave it.
One ``pm.hook.optcore_register(...)`` call for all plugins could do neither
(pluggy stops at the first exception, and an implementation does not say who
it is). So the host calls the hook once per plugin, through
``pm.subset_hook_caller`` with every *other* plugin's implementation removed,
and hands each call a ``register`` bound to that plugin. Everything pluggy
offers still applies:

* the plugins are called in pluggy's own order (last registered first,
  ``tryfirst``/``trylast`` honoured);
* hook wrappers (``@hookimpl(wrapper=True)`` or ``hookwrapper=True``) are
  never removed, so a wrapper runs around every plugin's call;
* pluggy's tracing (``OPTCORE_TRACE_PLUGINS=1``, ``optcore list --trace``)
  writes each hook call, preceded by the plugin it is made for.

Turning plugins on and off
--------------------------
``OPTCORE_DISABLE_PLUGINS=a,b`` turns the named plugins off and
``OPTCORE_LOAD_PLUGINS=a,b`` turns off all but the named ones (the core's own
plugin, ``optcore``, is always on). A name is what ``optcore list`` prints in
its first column, or the distribution name. A plugin turned off is never
imported; it is listed as ``disabled``, and looking up one of its names raises
:class:`~optcore.plugins.PluginDisabledError` saying how to turn it on.
``OPTCORE_DISABLE_PLUGIN_AUTOLOAD=1`` loads no installed plugin at all.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import threading
import time
import warnings
from typing import Any, Callable, Iterator, NamedTuple, Optional

import pluggy

from optcore import hookspecs
from optcore._version import __version__
from optcore.plugins import _catalog, _recording, _versions
from optcore.plugins._errors import PluginDisabledError, PluginNotInstalledError, UnknownNameError
from optcore.plugins._registry import Entry, Provider, Registry, make_entries, normalize_prefix, validate_entry

ENTRY_POINT_GROUP = "optcore"
DISABLE_AUTOLOAD_ENV = "OPTCORE_DISABLE_PLUGIN_AUTOLOAD"
DISABLE_PLUGINS_ENV = "OPTCORE_DISABLE_PLUGINS"
LOAD_PLUGINS_ENV = "OPTCORE_LOAD_PLUGINS"
TRACE_ENV = "OPTCORE_TRACE_PLUGINS"
CORE_PLUGIN = "optcore"  # the default plugin, registering the core's own names
RUNTIME_PLUGIN = "<runtime>"  # provider of optcore.register(...) calls


class PluginStatus(NamedTuple):
    """One row of ``optcore list``: a plugin and what became of it."""

    name: str
    distribution: Optional[str]
    version: Optional[str]
    status: str  # "loaded", "broken", "skipped" (wrong core version) or "disabled" (turned off by name)
    reason: Optional[str]
    load_seconds: Optional[float] = None  # import plus optcore_register (None: nothing was run)


class PluginWarning(UserWarning):
    """A plugin was skipped or failed to load; the rest of optcore works."""


class _Disabled(NamedTuple):
    plugin: str
    distribution: Optional[str]
    variable: str  # the environment variable that turned it off
    enable_hint: str


def _names_in(variable: str) -> Optional[dict[str, str]]:
    """``{normalized: as written}`` for the plugin names listed (comma-separated) in ``variable``; None when unset."""
    value = os.environ.get(variable)
    if value is None:
        return None
    return {normalize_prefix(part.strip()): part.strip() for part in value.split(",") if part.strip()}


class _State:
    """Everything one host holds; :meth:`_Host.scope` swaps it for a fresh one."""

    def __init__(self, trace: Optional[Callable[[str], Any]]) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        if trace is None and os.environ.get(TRACE_ENV, "") not in ("", "0"):
            trace = sys.stderr.write
        self.tracing = trace is not None
        if trace is not None:
            self.pm.trace.root.setwriter(trace)
            self.pm.enable_tracing()
        self.registry = Registry()
        self.statuses: dict[str, PluginStatus] = {}
        self.deferred: dict[str, importlib.metadata.EntryPoint] = {}  # first-party, found, not imported
        self.disabled: dict[str, _Disabled] = {}  # by distribution (or plugin name without one)
        self.runtime_entries: list[Entry] = []
        self.loaded = False
        self.loading = False  # set while plugins load: a lookup made by a plugin's import must not recurse
        self.commands_added = False


def _hashable_plugin(plugin: Any) -> Any:
    """``plugin`` itself, or a hashable stand-in carrying its hook functions.

    pluggy keeps plugins in sets (``subset_hook_caller``), so an unhashable
    object such as a ``types.SimpleNamespace`` (which defines ``__eq__``) is
    given a plain object holding the same ``optcore_*`` attributes.
    """
    try:
        hash(plugin)
        return plugin
    except TypeError:
        stand_in = type(type(plugin).__name__, (), {})()
        for attribute in dir(plugin):
            if attribute.startswith("optcore_"):
                setattr(stand_in, attribute, getattr(plugin, attribute))
        return stand_in


class _Host:
    """Holds the pluggy manager, the registry and the status of each plugin.

    One instance, ``HOST``, serves the process. Tests scope it with
    :meth:`scope` rather than patching it.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._state = _State(trace=None)

    # The current state's parts, read through the host so a scope swaps them all at once.
    pm = property(lambda self: self._state.pm)
    registry = property(lambda self: self._state.registry)
    deferred = property(lambda self: self._state.deferred)

    @property
    def statuses(self) -> dict[str, PluginStatus]:
        with self.lock:
            return dict(self._state.statuses)

    @contextlib.contextmanager
    def scope(self, *, trace: Optional[Callable[[str], Any]] = None) -> Iterator["_Host"]:
        """A fresh host inside the ``with`` block; the previous one, untouched, after it.

        Inside, nothing registered outside is visible and plugins are found
        again on the first lookup (their modules stay imported, so this is
        cheap); environment variables (``OPTCORE_DISABLE_PLUGINS``, ...) are
        read again then. ``trace`` is a writer (``sys.stderr.write``) for
        pluggy's tracing of every hook call. Meant for tests and tools: other
        threads see the scoped host while the block runs.
        """
        with self.lock:
            saved, self._state = self._state, _State(trace)
        try:
            yield self
        finally:
            with self.lock:
                self._state = saved

    def _trace(self, message: str) -> None:
        if self._state.tracing:
            self.pm.trace.root.get("optcore")(message)

    # -- loading -----------------------------------------------------------------

    def ensure_loaded(self) -> None:
        """Loads the core's names and every third-party plugin, once.

        First-party plugins are only found here, not imported: the catalog
        says which names each provides, so a lookup imports one only when it
        is asked for one of its names (see :meth:`resolve`), and
        :meth:`load_everything` imports them all for listings.
        """
        state = self._state
        if state.loaded:
            return
        with self.lock:
            # Another thread waits on the lock; this thread re-entering (a plugin
            # that calls optcore.get while it is imported) sees what is loaded so
            # far (the core's names come first) instead of loading everything again.
            if state.loaded or state.loading:
                return
            state.loading = True
            try:
                from optcore.plugins import _default  # the core's own names, via the same hooks

                self.add_plugin(_default, name=CORE_PLUGIN, distribution="optcore", version=__version__)
                if not os.environ.get(DISABLE_AUTOLOAD_ENV):
                    self._discover()
                state.loaded = True
            finally:
                state.loading = False

    def _discover(self) -> None:
        """Imports every third-party plugin, then calls their ``optcore_register`` in pluggy's order."""
        disable, only = _names_in(DISABLE_PLUGINS_ENV) or {}, _names_in(LOAD_PLUGINS_ENV)
        seen: set[str] = set()
        imported: dict[str, tuple[Optional[str], Optional[str], float]] = {}
        for ep in _entry_points():
            dist = getattr(ep, "dist", None)
            distribution = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            if ep.name in self._state.statuses or ep.name in imported:
                continue  # the same distribution found twice on sys.path
            keys = {normalize_prefix(ep.name)} | ({normalize_prefix(distribution)} if distribution else set())
            seen |= keys
            if only is not None and not keys & only.keys():
                self._disable(ep.name, distribution, version, LOAD_PLUGINS_ENV,
                              f"add {ep.name!r} to {LOAD_PLUGINS_ENV} (or unset it) to enable it")
            elif keys & disable.keys():
                self._disable(ep.name, distribution, version, DISABLE_PLUGINS_ENV,
                              f"remove {ep.name!r} from {DISABLE_PLUGINS_ENV} to enable it")
            elif _catalog.by_distribution(distribution) is not None:
                self._state.deferred.setdefault(distribution, ep)
            else:
                started = self._import(ep, distribution, version)
                if started is not None:
                    imported[ep.name] = (distribution, version, started)
        for variable, names in ((DISABLE_PLUGINS_ENV, disable), (LOAD_PLUGINS_ENV, only or {})):
            unknown = sorted(names[n] for n in names.keys() - seen - {CORE_PLUGIN})
            if unknown:
                warnings.warn(f"{variable} names {', '.join(map(repr, unknown))}, which no installed plugin is "
                              "(`optcore list` shows the names)", PluginWarning, stacklevel=5)
        for name in self._call_order("optcore_register", imported):
            self._run_register(name, *imported.pop(name))
        for name, (distribution, version, started) in imported.items():  # plugins without optcore_register
            self._loaded(name, distribution, version, started)

    def load_deferred(self, distribution: str) -> None:
        with self.lock:
            ep = self._state.deferred.pop(distribution, None)
            if ep is None:
                return
            dist = getattr(ep, "dist", None)
            version = dist.version if dist is not None else None
            started = self._import(ep, distribution, version)
            if started is not None:
                self._run_register(ep.name, distribution, version, started)

    def load_everything(self) -> None:
        self.ensure_loaded()
        for distribution in list(self._state.deferred):
            self.load_deferred(distribution)

    def resolve(self, name: str) -> Entry:
        """The registry entry for ``name`` or ``"<distribution>:<name>"``, importing a first-party plugin if needed."""
        self.ensure_loaded()
        if ":" in name:
            return self._resolve_qualified(*name.split(":", 1))
        if name not in self.registry:
            provider = _catalog.provider_of(name)
            if provider is not None:
                if provider.distribution in self._state.deferred:
                    self.load_deferred(provider.distribution)
                elif provider.distribution in self._state.disabled:
                    raise self._disabled_error(name, self._state.disabled[provider.distribution])
            else:
                self._raise_if_maybe_disabled(name)
        return self.registry.resolve(name)

    def _raise_if_maybe_disabled(self, name: str) -> None:
        """An unknown name while third-party plugins are turned off: say which, and how to turn them on.

        A disabled plugin is never imported, so its names are unknown; only the
        first-party ones are listed in the catalog (and get a
        :class:`PluginDisabledError` naming the plugin). The error says the
        name may come from one of the others, rather than that it does not exist.
        """
        third_party = [off for off in self._state.disabled.values()
                       if off.distribution is None or _catalog.by_distribution(off.distribution) is None]
        if not third_party:
            return
        error = self.registry.unknown_name_error(name)
        listed = "; ".join(f"{off.plugin!r} ({off.distribution or 'no distribution'}): {off.enable_hint}"
                           for off in third_party)
        raise UnknownNameError(
            f"{error} It may be provided by a disabled plugin, whose names are not known while it is off "
            f"(turned off by {third_party[0].variable}): {listed}.",
            disabled_plugins=tuple(off.plugin for off in third_party),
        )

    def _resolve_qualified(self, prefix: str, name: str) -> Entry:
        wanted = normalize_prefix(prefix)
        for distribution, ep in list(self._state.deferred.items()):
            if wanted in (normalize_prefix(distribution), normalize_prefix(ep.name)):
                self.load_deferred(distribution)
        for off in self._state.disabled.values():
            if wanted in {normalize_prefix(off.plugin), normalize_prefix(off.distribution or off.plugin)}:
                raise self._disabled_error(f"{prefix}:{name}", off)
        entry = self.registry.resolve_qualified(prefix, name)
        if entry is not None:
            return entry
        if wanted in self.registry.providers():
            raise UnknownNameError(f"The plugin {prefix!r} registers no name {name!r}; "
                                   "`optcore list` shows what each plugin provides.")
        first_party = _catalog.by_distribution(prefix) or _catalog.provider_of(name)
        if first_party is not None and wanted == normalize_prefix(first_party.distribution):
            command = _catalog.install_command(first_party)
            raise PluginNotInstalledError(
                f"{prefix}:{name!r} is provided by the plugin distribution {first_party.distribution!r}, "
                f"which is not installed (or not loaded). Install it with: {command}",
                distribution=first_party.distribution,
                install_command=command,
            )
        raise UnknownNameError(f"No installed plugin or distribution is called {prefix!r} (in {prefix}:{name}). "
                               "`optcore list` shows every plugin and distribution.")

    def _disabled_error(self, name: str, off: _Disabled) -> PluginDisabledError:
        return PluginDisabledError(
            f"{name!r} is provided by the plugin {off.plugin!r} ({off.distribution}), which is disabled by "
            f"{off.variable}; {off.enable_hint}.",
            plugin=off.plugin, distribution=off.distribution, variable=off.variable, enable_hint=off.enable_hint,
        )

    def _import(self, ep, distribution, version) -> Optional[float]:
        """Checks the core version range, imports the plugin and registers it with pluggy.

        Returns the time the import started, or None when the plugin was skipped or is broken.
        """
        dist = getattr(ep, "dist", None)
        requirement = _versions.core_requirement(dist.requires if dist is not None else None)
        if requirement:
            try:
                compatible = _versions.version_satisfies(__version__, requirement)
            except ValueError as err:
                compatible, requirement = False, f"{requirement} ({err})"
            if not compatible:
                reason = f"requires optcore {requirement}, but optcore {__version__} is installed"
                self._skip(ep.name, distribution, version, reason)
                return None
        started = time.perf_counter()
        try:
            plugin = ep.load()
        except Exception as err:  # noqa: BLE001 - any failure of third-party code
            self._broken(ep.name, distribution, version, f"import failed: {type(err).__name__}: {err}", started)
            return None
        return started if self._pluggy_register(plugin, ep.name, distribution, version, started) else None

    def _pluggy_register(self, plugin, name, distribution, version, started) -> bool:
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # noqa: BLE001 - e.g. a hook that matches no spec
            self._broken(name, distribution, version, f"invalid plugin: {type(err).__name__}: {err}", started)
            return False
        return True

    def add_plugin(
        self,
        plugin: Any,
        *,
        name: str,
        distribution: Optional[str] = None,
        version: Optional[str] = None,
        started: Optional[float] = None,
    ) -> None:
        """Registers ``plugin`` with pluggy and runs its ``optcore_register`` hook (safe from any thread)."""
        started = time.perf_counter() if started is None else started
        plugin = _hashable_plugin(plugin)
        with self.lock:
            if self._pluggy_register(plugin, name, distribution, version, started):
                self._run_register(name, distribution, version, started)

    def _call_order(self, hook_name: str, names) -> list[str]:
        """The plugins among ``names`` implementing ``hook_name``, in the order pluggy calls them."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        return [i.plugin_name for i in reversed(impls) if not (i.wrapper or i.hookwrapper) and i.plugin_name in names]

    def call_for(self, hook_name: str, plugin_name: str, **kwargs: Any) -> Any:
        """Calls ``hook_name`` for one plugin through pluggy, with every hook wrapper in place."""
        caller = getattr(self.pm.hook, hook_name)
        others = [i.plugin for i in caller.get_hookimpls()
                  if i.plugin_name != plugin_name and not (i.wrapper or i.hookwrapper)]
        self._trace(f"{hook_name} for plugin {plugin_name!r}")
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)

    def _run_register(self, name, distribution, version, started) -> None:
        """Calls the plugin's ``optcore_register``; its entries are committed only if the hook returns."""
        provider = Provider(plugin=name, distribution=distribution, version=version)
        staged: list[Entry] = []
        wrapped: dict[int, Any] = {}

        def register(
            entry_name: str, obj: Any, *, kind: str, override: bool = False, aliases=(),
            deprecated: Optional[str] = None,
        ) -> None:
            aliases = validate_entry(entry_name, obj, kind, aliases)
            if deprecated is not None and not isinstance(deprecated, str):
                raise TypeError(f"deprecated= of {entry_name!r} must be the warning message (a str), got {deprecated!r}.")
            recording = _recording.recording(obj, kind)  # the built objects remember this call (to_config)
            wrapped[id(obj)] = recording
            staged.extend(make_entries(entry_name, recording, kind, provider, override, aliases, deprecated))

        if self._call_order("optcore_register", {name}):
            try:
                self.call_for("optcore_register", name, register=register)
            except Exception as err:  # noqa: BLE001 - any failure of plugin code
                self.pm.unregister(name=name)
                self._broken(name, distribution, version, f"optcore_register failed: {type(err).__name__}: {err}",
                             started)
                return
        self.registry.add(staged)
        # `optcore.contrib.muon` is the recording `optcore.muon` too.
        _recording.rebind_in_namespaces([e.obj for e in staged if e.kind == "namespace"], wrapped)
        self._loaded(name, distribution, version, started)

    def add_commands(self, subparsers: Any) -> None:
        """Loads every plugin and calls each one's ``optcore_add_commands(subparsers)``.

        A plugin whose hook raises is reported with a warning; its names stay
        registered and the other plugins' commands are still added.
        """
        self.load_everything()
        loaded = {name for name, s in self.statuses.items() if s.status == "loaded"}
        for name in self._call_order("optcore_add_commands", loaded):
            try:
                self.call_for("optcore_add_commands", name, subparsers=subparsers)
            except Exception as err:  # noqa: BLE001 - any failure of plugin code
                warnings.warn(f"optcore plugin {name!r} could not add its commands: {type(err).__name__}: {err}",
                              PluginWarning, stacklevel=3)

    def _set_status(self, status: PluginStatus) -> None:
        with self.lock:
            self._state.statuses[status.name] = status

    def _loaded(self, name, distribution, version, started) -> None:
        self._set_status(PluginStatus(name, distribution, version, "loaded", None, _since(started)))

    def _broken(self, name, distribution, version, reason, started=None) -> None:
        warnings.warn(f"optcore plugin {name!r} ({distribution}) is broken and was skipped: {reason}", PluginWarning, stacklevel=4)
        seconds = None if started is None else _since(started)
        self._set_status(PluginStatus(name, distribution, version, "broken", reason, seconds))

    def _skip(self, name, distribution, version, reason) -> None:
        warnings.warn(f"optcore plugin {name!r} ({distribution} {version}) was skipped: {reason}", PluginWarning, stacklevel=4)
        self._set_status(PluginStatus(name, distribution, version, "skipped", reason))

    def _disable(self, name, distribution, version, variable, enable_hint) -> None:
        with self.lock:
            self._state.disabled[distribution or name] = _Disabled(name, distribution, variable, enable_hint)
        self._set_status(PluginStatus(name, distribution, version, "disabled", f"turned off by {variable}; {enable_hint}"))

    # -- explicit registration ---------------------------------------------------

    def register_runtime(self, name: str, obj: Any, kind: str, override: bool, aliases=()) -> Any:
        """Registers ``obj``; returns what is registered (``obj`` made to record its calls)."""
        aliases = validate_entry(name, obj, kind, aliases)
        obj = _recording.recording(obj, kind)
        entries = make_entries(name, obj, kind, Provider(RUNTIME_PLUGIN, None, None), override, aliases)
        with self.lock:
            self._state.runtime_entries.extend(entries)
            self.registry.add(entries)
        return obj


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 4)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


HOST = _Host()
