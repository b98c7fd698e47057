"""Name lookup and plugins: ``optcore.get``, ``optcore.available``, ``optcore.register``.

The top layer of the core. Every name in the registry, the core's included,
comes from a plugin's ``optcore_register`` hook (see :mod:`optcore.hookspecs`).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Union

from optcore.hookspecs import hookimpl
from optcore.plugins._catalog import FIRST_PARTY
from optcore.plugins._errors import (
    ConfigError,
    NameCollisionError,
    PluginDisabledError,
    PluginError,
    PluginNotInstalledError,
    PluginTypeError,
    PluginValueError,
    UnknownNameError,
)
from optcore.plugins._manager import (
    DISABLE_AUTOLOAD_ENV,
    DISABLE_PLUGINS_ENV,
    ENTRY_POINT_GROUP,
    HOST,
    LOAD_PLUGINS_ENV,
    TRACE_ENV,
    RUNTIME_PLUGIN,
    PluginStatus,
    PluginWarning,
)
from optcore.plugins._registry import KINDS, Entry, Registered


def _loaded_registry():
    HOST.load_everything()
    return HOST.registry


def get(name: str, /, **hyperparams: Any) -> Any:
    """Looks up a registered name; with keyword arguments, calls it with them.

    ``optcore.get("adamw")`` is the ``adamw`` factory and
    ``optcore.get("adamw", learning_rate=1e-3)`` is the optimizer it builds.
    A qualified name, ``"<distribution>:<name>"`` (``"optcore-contrib:muon"``;
    the plugin name ``"contrib:muon"`` works too), always picks that
    distribution's entry, even when several plugins register ``name``.

    Raises:
      UnknownNameError: no plugin registers ``name`` (the message suggests the
        nearest registered names).
      PluginNotInstalledError: a first-party plugin provides ``name`` but is
        not installed (the message gives the install command).
      PluginDisabledError: the plugin providing ``name`` is turned off by
        ``OPTCORE_DISABLE_PLUGINS`` or ``OPTCORE_LOAD_PLUGINS``.
      NameCollisionError: several plugins register ``name`` (the message gives
        each one's qualified name).
      TypeError: a keyword argument that the factory does not take.
      PluginError: a plugin's factory raised while building ``name`` (the
        message names the plugin and its distribution; the original error is
        chained as ``__cause__``). ``PluginValueError``/``PluginTypeError``
        when it was a ``ValueError``/``TypeError``.
    """
    entry = HOST.resolve(name)
    if not hyperparams:
        return entry.obj
    _check_arguments(f"optcore.get({name!r}, ...)", entry.obj, (), hyperparams)
    return _call(entry, (), hyperparams)


def _call(entry: Entry, args: tuple, kwargs: Mapping[str, Any]) -> Any:
    """Calls a registered factory; a plugin's failure is reported with its provider."""
    provider = entry.provider
    if provider.plugin in ("optcore", RUNTIME_PLUGIN):
        return entry.obj(*args, **kwargs)  # the core's (and the caller's own) errors are reported as they are
    try:
        return entry.obj(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure of plugin code
        where = f"{provider.distribution} {provider.version}" if provider.distribution else "no distribution"
        message = (
            f"building {entry.name!r} ({entry.kind}) from plugin {provider.plugin!r} ({where}) failed: "
            f"{type(err).__name__}: {err}"
        )
        error_type = PluginValueError if isinstance(err, ValueError) else (
            PluginTypeError if isinstance(err, TypeError) else PluginError
        )
        raise error_type(message, name=entry.name, plugin=provider.plugin, distribution=provider.distribution) from err


def _check_arguments(where: str, factory: Callable, args: tuple, kwargs: Mapping[str, Any]) -> None:
    """Raises a TypeError that names the bad keyword before ``factory`` is called."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # no signature to check against: the call itself will report
    parameters = signature.parameters
    takes_any_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    if not takes_any_keyword:
        for key in kwargs:
            if key not in parameters or parameters[key].kind is inspect.Parameter.POSITIONAL_ONLY:
                close = difflib.get_close_matches(key, list(parameters), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(
                    f"{where}: unknown argument {key!r}{hint}; accepted: {', '.join(parameters)}."
                )
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        raise TypeError(f"{where}: {err}.") from None


def available(kind: Optional[str] = None, pattern: Optional[str] = None) -> list[Registered]:
    """Every registered name (of ``kind``, matching the glob ``pattern``), with the distribution providing it.

    A name matches ``pattern`` (``"adam*"``) when it or one of its aliases does.

    Returns:
      A list of ``Registered(name, kind, distribution, version, plugin, aliases)``
      sorted by kind and name; aliases are listed with their name, not as rows.
    """
    return _loaded_registry().rows(kind, pattern)


class EntryInfo(NamedTuple):
    """What ``optcore info NAME`` prints: a registered name and where it comes from."""

    name: str
    qualified_name: str  # "<distribution>:<name>", which always resolves
    kind: str
    description: Optional[str]  # the first line of the docstring
    signature: Optional[str]  # "adam(learning_rate, b1=0.9, ...)", None for a namespace
    plugin: str
    distribution: Optional[str]
    version: Optional[str]
    source_file: Optional[str]
    aliases: tuple[str, ...]
    alias_of: Optional[str]  # the name this one stands for, when it is an alias


def describe(name: str) -> EntryInfo:
    """The metadata of a registered name (or qualified name, or alias); raises like :func:`get`."""
    entry = HOST.resolve(name)
    obj = entry.obj
    doc = inspect.getdoc(obj)
    description = doc.strip().splitlines()[0] if doc and doc.strip() else None
    signature = None
    if entry.kind != "namespace":
        try:
            signature = f"{entry.alias_of or entry.name}{inspect.signature(obj)}"
        except (TypeError, ValueError):
            signature = None
    try:
        source_file = inspect.getsourcefile(inspect.unwrap(obj))  # the factory's file, not the recording wrapper's
    except TypeError:  # a builtin, or an object without a source file
        source_file = None
    return EntryInfo(
        entry.name, entry.qualified_name, entry.kind, description, signature, entry.provider.plugin,
        entry.provider.distribution, entry.provider.version, source_file, entry.aliases, entry.alias_of,
    )


def register(
    name: Union[str, Callable, None] = None,
    obj: Any = None,
    *,
    kind: str = "optimizer",
    override: bool = False,
    aliases: tuple[str, ...] = (),
) -> Any:
    """Registers ``obj`` under ``name`` in this process; usable as a decorator.

    ``optcore.register("my_sgd", my_sgd, kind="optimizer")``, or::

        @optcore.register(kind="optimizer")
        def my_sgd(learning_rate): ...

    The name defaults to the object's ``__name__``; ``aliases`` are further
    names for the same object. Registration works even with
    ``OPTCORE_DISABLE_PLUGIN_AUTOLOAD=1``.

    Returns what was registered: for an optimizer, transform, wrapper or
    schedule, ``obj`` wrapped (same signature and docstring) so that what it
    builds remembers the call, for :func:`optcore.to_config`; ``obj`` itself
    for other kinds.
    """
    if callable(name) and obj is None:  # bare @optcore.register
        func = name
        return HOST.register_runtime(func.__name__, func, kind, override, aliases)
    if obj is not None:
        return HOST.register_runtime(name if name is not None else obj.__name__, obj, kind, override, aliases)

    def decorator(func):
        return HOST.register_runtime(name if name is not None else func.__name__, func, kind, override, aliases)

    return decorator


def add_plugin(plugin: Any, name: Optional[str] = None) -> None:
    """Loads an in-process plugin (a module or object with ``@optcore.hookimpl`` hooks).

    Safe to call from several threads, also while others look names up.
    """
    HOST.ensure_loaded()
    plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
    HOST.add_plugin(plugin, name=plugin_name)


def list_plugins() -> list[PluginStatus]:
    """Every plugin found, with its distribution, version and status."""
    HOST.load_everything()
    return list(HOST.statuses.values())


def provided_names(plugin: str) -> dict[str, list[str]]:
    """The names a loaded plugin registered, grouped by kind (aliases not included)."""
    return _loaded_registry().names_of(plugin)


def provided_aliases(plugin: str) -> dict[str, str]:
    """``{alias: name}`` for the aliases a loaded plugin registered."""
    return _loaded_registry().aliases_of(plugin)


@contextlib.contextmanager
def scoped_host(*, trace: Optional[Callable[[str], Any]] = None) -> Iterator[None]:
    """Runs the ``with`` block against a fresh plugin host, and restores the previous one after it.

    Inside the block nothing registered before is visible; plugins are found
    again on the first lookup (their modules stay imported, so this is
    cheap), reading ``OPTCORE_DISABLE_PLUGINS``/``OPTCORE_LOAD_PLUGINS``
    then; ``optcore.register`` and ``add_plugin`` calls end with the block.
    Tests use it instead of patching module state::

        with optcore.plugins.scoped_host():
            optcore.plugins.add_plugin(MyPlugin, name="mine")
            ...
        # "mine" and its names are gone here

    ``trace`` (e.g. ``sys.stderr.write``) receives pluggy's trace of every hook call.
    """
    with HOST.scope(trace=trace):
        yield


# Configs both ways (after get/_call, which the config code calls).
from optcore.plugins._configs import ConfigVersionWarning, from_config, read_config, to_config  # noqa: E402

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "DISABLE_PLUGINS_ENV",
    "ENTRY_POINT_GROUP",
    "FIRST_PARTY",
    "KINDS",
    "LOAD_PLUGINS_ENV",
    "TRACE_ENV",
    "ConfigError",
    "ConfigVersionWarning",
    "EntryInfo",
    "NameCollisionError",
    "PluginDisabledError",
    "PluginError",
    "PluginNotInstalledError",
    "PluginStatus",
    "PluginTypeError",
    "PluginValueError",
    "PluginWarning",
    "Registered",
    "UnknownNameError",
    "add_plugin",
    "available",
    "describe",
    "from_config",
    "get",
    "hookimpl",
    "list_plugins",
    "provided_aliases",
    "provided_names",
    "read_config",
    "register",
    "scoped_host",
    "to_config",
]
