"""How a built object remembers the registered call that built it (read by ``optcore.to_config``).

Every registered factory of a building kind (optimizer, transform, wrapper,
schedule) is wrapped once, when it is registered (the core's own names when
``optcore`` is imported, so that ``optcore.adamw`` itself records). The
wrapper calls the factory and attaches a :class:`Record` (the factory and the
arguments it was called with) to the result, without changing the result's
type:

* a transformation (a NamedTuple with ``init``/``update``) gets a copy of its
  ``update`` function carrying the record (same code, closure and defaults,
  so updates, jit, donation and the state are untouched);
* a function (a schedule, or the factory ``inject_hyperparams(adamw)``
  returns) is returned behind a thin wrapper carrying the record; calling
  that wrapper records the call too (``inject_hyperparams(adamw)(1e-3)``);
* an instance of a registered class (``MultiSteps``) gets an attribute.

The wrapper also replaces the factory in the module that defines it (so
pickle finds it by name) and in the plugin's namespace modules. The original
is ``inspect.unwrap(factory)``.

Only the outermost registered call records: ``adamw`` calling ``chain``
inside is not recorded, so the config says ``adamw``. Arguments are kept as
given; they are encoded only when ``to_config`` is asked.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import types
import weakref
from typing import Any, NamedTuple

from optcore import base

RECORD_ATTRIBUTE = "__optcore_config__"
_MARKER = "__optcore_records__"
BUILDING_KINDS = frozenset({"optimizer", "transform", "wrapper", "schedule"})

_local = threading.local()
_side_table: "weakref.WeakKeyDictionary[Any, Record]" = weakref.WeakKeyDictionary()
# One wrapper per factory, however often it is registered (an alias, another plugin, a scoped host).
_wrappers: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


class Record(NamedTuple):
    """A call that built an object: ``target(*args, **kwargs)``.

    ``target`` is a registered factory (found in the registry by identity when
    encoded), or the :class:`Record` of the callable that was called (encoded
    as ``{"@call": ...}``: ``inject_hyperparams(adamw)(learning_rate=0.1)``).
    """

    target: Any
    args: tuple
    kwargs: dict
    called: Any = None  # for a call of what a registered call built: the function called (for its signature)


def record_of(obj: Any) -> "Record | None":
    """The record attached to ``obj``, or None."""
    if isinstance(obj, tuple):
        update = getattr(obj, "update", None)
        if not callable(update):
            return None
        owner = getattr(update, "__self__", None)  # MultiSteps(...).gradient_transformation(): the MultiSteps
        return getattr(update, RECORD_ATTRIBUTE, None) or (record_of(owner) if owner is not None else None)
    try:
        found = getattr(obj, RECORD_ATTRIBUTE, None)
    except Exception:  # noqa: BLE001 - an object with a strange __getattr__
        return None
    if isinstance(found, Record):
        return found
    try:
        return _side_table.get(obj)
    except TypeError:  # not weak-referenceable
        return None


_recording_classes: "weakref.WeakSet[type]" = weakref.WeakSet()  # no attribute on the class: see _record_instances


def is_recording(obj: Any) -> bool:
    if inspect.isclass(obj):
        return obj in _recording_classes
    return bool(getattr(obj, _MARKER, False))


def _outermost(call, *args, **kwargs):
    """Runs ``call``; returns (result, whether this was the outermost recorded call)."""
    if getattr(_local, "depth", 0):
        return call(*args, **kwargs), False
    _local.depth = 1
    try:
        return call(*args, **kwargs), True
    finally:
        _local.depth = 0


def recording(obj: Any, kind: str) -> Any:
    """``obj`` made to record its calls (the same object when it cannot or already does)."""
    if kind not in BUILDING_KINDS or is_recording(obj):
        return obj
    if inspect.isclass(obj):
        if issubclass(obj, tuple) or getattr(obj, "_is_protocol", False):  # states and protocols build nothing
            return obj
        _record_instances(obj)
        return obj
    if not (inspect.isfunction(obj) or isinstance(obj, functools.partial)):
        return obj
    try:
        return _wrappers[obj]
    except (KeyError, TypeError):
        pass
    wrapper = _recording_function(obj)
    try:
        _wrappers[obj] = wrapper
    except TypeError:  # not weak-referenceable
        pass
    _rebind_definition(obj, wrapper)
    return wrapper


def _rebind_definition(func: Any, wrapper: Any) -> None:
    """Puts ``wrapper`` where ``func`` is defined (so that pickle finds it by name) and in the packages above
    that re-export it (``optcore_plugin_example.qhadam``)."""
    name = getattr(func, "__qualname__", "")
    if not name.isidentifier():  # a nested function or a method: not reachable by name
        return
    parts = (getattr(func, "__module__", None) or "").split(".")
    for cut in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        if module is not None and getattr(module, name, None) is func:
            setattr(module, name, wrapper)


def _recording_function(func: Any) -> Any:
    # The record names ``func`` (found in the registry through the wrapper's ``__wrapped__``), not the
    # wrapper: a closure that refers to itself sends tools that walk closures (Equinox's
    # closure_to_pytree, used by Optimistix) into endless recursion.
    @functools.wraps(func)
    def factory(*args, **kwargs):
        out, outermost = _outermost(func, *args, **kwargs)
        return attach(out, Record(func, args, kwargs)) if outermost else out

    setattr(factory, _MARKER, True)
    base._WRAPPER_CODES.update((factory.__code__, _outermost.__code__))  # a factory's warnings skip them
    return factory


def _record_instances(cls: type) -> None:
    """Patches ``cls.__init__`` so that its instances record how they were made."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        _, outermost = _outermost(init, self, *args, **kwargs)
        if outermost and type(self) is cls:
            _set(self, Record(cls, args, kwargs))

    cls.__init__ = __init__
    base._WRAPPER_CODES.update((__init__.__code__, _outermost.__code__))
    # Marked in a set, not with a class attribute: a runtime-checkable Protocol that the class
    # satisfies must not see an extra attribute.
    _recording_classes.add(cls)


def _set(obj: Any, record: Record) -> bool:
    try:
        object.__setattr__(obj, RECORD_ATTRIBUTE, record)
        return True
    except (AttributeError, TypeError):
        pass
    try:
        _side_table[obj] = record
        return True
    except TypeError:
        return False


def _tagged_copy(func: Any, record: Record) -> Any:
    """A new function object running exactly ``func`` and carrying ``record``."""
    if inspect.isfunction(func):
        copy = types.FunctionType(func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__)
        copy.__kwdefaults__ = func.__kwdefaults__
        copy.__dict__.update(func.__dict__)
        copy.__qualname__, copy.__module__, copy.__doc__ = func.__qualname__, func.__module__, func.__doc__
        copy.__annotations__ = dict(getattr(func, "__annotations__", {}) or {})
    else:  # a jitted function, a bound method, a partial...: a forwarding function
        @functools.wraps(func)
        def copy(*args, **kwargs):
            return func(*args, **kwargs)

    setattr(copy, RECORD_ATTRIBUTE, record)
    return copy


def attach(out: Any, record: Record) -> Any:
    """``out`` carrying ``record`` (possibly a new object of the same type); other results unchanged."""
    if isinstance(out, tuple) and hasattr(out, "_replace") and callable(getattr(out, "update", None)) \
            and callable(getattr(out, "init", None)):
        return out._replace(update=_tagged_copy(out.update, record))
    if inspect.isfunction(out) or isinstance(out, functools.partial):
        return _recording_result(out, record)
    if callable(getattr(out, "init", None)) and callable(getattr(out, "update", None)) and not inspect.isclass(out):
        _set(out, record)
    return out


def _recording_result(func: Any, record: Record) -> Any:
    """A function built by a factory: carries its record; calling it records what it builds."""

    @functools.wraps(func)
    def built(*args, **kwargs):
        out, outermost = _outermost(func, *args, **kwargs)
        if outermost and isinstance(out, tuple) and callable(getattr(out, "update", None)):
            return attach(out, Record(record, args, kwargs, func))  # a call of what ``record`` built
        return out

    setattr(built, RECORD_ATTRIBUTE, record)
    base._WRAPPER_CODES.update((built.__code__, _outermost.__code__))
    return built


def record_core_factories() -> None:
    """Makes the core's factories record, rebinding them in their family packages (once)."""
    from optcore import optimizers, schedules, transforms, wrappers

    done: dict[int, Any] = {}
    for kind, package in (("optimizer", optimizers), ("wrapper", wrappers), ("schedule", schedules),
                          ("transform", transforms)):
        for name in package.__all__:
            obj = getattr(package, name)  # a name re-exported by several families gets one wrapper
            if id(obj) not in done:
                done[id(obj)] = recording(obj, kind)
            if done[id(obj)] is not obj:
                setattr(package, name, done[id(obj)])


def rebind_in_namespaces(namespaces: list, wrapped: dict[int, Any]) -> None:
    """Points a plugin's namespace modules' attributes at the recording wrappers of its factories."""
    for module in namespaces:
        for attribute, value in list(vars(module).items()):
            replacement = wrapped.get(id(value))
            if replacement is not None and replacement is not value:
                setattr(module, attribute, replacement)
