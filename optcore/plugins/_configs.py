"""Configs both ways: ``optcore.to_config`` and ``optcore.from_config`` (the format: docs/guides/configs.md).

A config is plain JSON data. A dict with an ``"@name"`` key is a call of a
registered name; every other key starting with ``@`` is reserved; everything
else is data, kept as it is (a mask tree with a key ``"name"`` included):

* ``{"@name": "adamw", "learning_rate": 0.001}``: ``adamw(learning_rate=0.001)``;
  ``"@args": [...]`` holds positional-only and ``*args`` values (``chain``);
  ``"@provider": {"distribution": ..., "version": ...}`` says which plugin
  distribution (and version) provided the name.
* ``{"@name": "adamw", "@partial": true, ...}``: the factory itself, not
  called (with arguments: a ``functools.partial`` of it).
* ``{"@call": NODE, ...}``: calls what ``NODE`` builds
  (``inject_hyperparams(adamw)(learning_rate=0.1)``).
* ``{"@array": [...], "@dtype": "float32"}`` (a ``jax.Array``),
  ``{"@ndarray": ...}`` (numpy), ``{"@scalar": 0.5, "@dtype": "float32"}``
  (a numpy scalar), ``{"@dtype": "bfloat16"}``, ``{"@tuple": [...]}``,
  ``{"@dict": [[key, value], ...]}`` (keys that are not strings or start with ``@``).

A config without any ``@`` key at its top (``{"name": "adamw", ...}``) is
read in the older format, where every dict with a ``"name"`` is a call.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import warnings
from typing import Any, Mapping, Optional, Union

import jax
import numpy as np
from packaging.utils import canonicalize_name

from optcore.plugins._errors import ConfigError, PluginNotInstalledError, UnknownNameError
from optcore.plugins._manager import CORE_PLUGIN, HOST, RUNTIME_PLUGIN, PluginWarning
from optcore.plugins._recording import Record, record_of

NODE_KEYS = frozenset({"@name", "@args", "@partial", "@provider"})
CALL_KEYS = frozenset({"@call", "@args"})
DATA_KEYS = ("@array", "@ndarray", "@scalar", "@dtype", "@tuple", "@dict")
FUNCTION_HINT = "a Python function cannot be written to a config; register it with optcore.register or pass a tree"


class ConfigVersionWarning(PluginWarning):
    """A config was written with another version of the plugin that provides one of its names."""


# -- writing ---------------------------------------------------------------------------------------


def to_config(obj: Any, path: Union[str, os.PathLike, None] = None) -> dict:
    """The config that rebuilds ``obj``: ``optcore.from_config(optcore.to_config(obj))``.

    ``obj`` is anything a registered factory built (an optimizer,
    transformation, wrapper or schedule, however it was built: called
    directly, through :func:`optcore.get` or :func:`optcore.from_config`,
    nested in others), or a registered factory itself. With ``path``, the
    config is also written there as JSON (``.json``).

    The format is described in the guide "Configs and reproducibility".

    Raises:
      ConfigError: something in ``obj`` cannot be written, e.g. a lambda
        passed as a mask; the message gives its path in the config
        (``chain.args[1].mask: a Python function cannot be written ...``).
    """
    index = _registered_index()
    record = record_of(obj)
    target = record.target if record is not None else getattr(obj, "func", obj)
    root = index[id(target)].name if id(target) in index else "config"
    if record is None and id(target) not in index:
        raise ConfigError(
            f"this {type(obj).__name__} was not built by a registered factory, so it has no config; "
            "build it with an optcore factory (optcore.adamw(...), optcore.get(...), optcore.from_config(...))."
        )
    config = _encode(obj, root, index)
    if path is not None:
        write_config(config, path)
    return config


def write_config(config: Mapping[str, Any], path: Union[str, os.PathLike]) -> None:
    """Writes a config as JSON (the only format written; TOML is read only)."""
    if os.fspath(path).endswith(".toml"):
        raise ValueError(f"{os.fspath(path)!r}: configs are written as JSON only (TOML is read); use a .json path.")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def _registered_index() -> dict[int, Any]:
    """``{id(object): entry}`` for every registered object, also by the function a wrapper wraps."""
    HOST.ensure_loaded()
    index: dict[int, Any] = {}
    for entry in HOST.registry.all_entries():
        if entry.alias_of is not None or entry.kind == "namespace":
            continue
        index.setdefault(id(entry.obj), entry)
        index.setdefault(id(inspect.unwrap(entry.obj)), entry)  # a default that is the raw function
    return index


def _name_node(entry) -> dict:
    node = {"@name": entry.name}
    provider = entry.provider
    if provider.plugin not in (CORE_PLUGIN, RUNTIME_PLUGIN) and provider.distribution:
        node["@provider"] = {"distribution": provider.distribution, "version": provider.version}
    return node


def _encode_call(record: Record, path: str, index, partial: bool = False) -> dict:
    target, args, kwargs = record.target, record.args, record.kwargs
    if isinstance(target, Record):  # a call of what a registered call built
        node = {"@call": _encode_call(target, path + ".@call", index)}
        signature_of = record.called
    else:
        entry = index.get(id(target))
        if entry is None:
            raise ConfigError(f"{path}: was built by {getattr(target, '__name__', target)!r}, which is no longer "
                              "registered (registered in a scoped host that has ended?).")
        node = _name_node(entry)
        signature_of = target
    if partial:
        node["@partial"] = True
    positional, keywords = _normalize(signature_of, args, kwargs)
    if positional:
        node["@args"] = [_encode(v, f"{path}.args[{i}]", index) for i, v in enumerate(positional)]
    for key, value in keywords.items():
        node[key] = _encode(value, f"{path}.{key}", index)
    return node


def _normalize(target: Any, args: tuple, kwargs: dict) -> tuple[list, dict]:
    """Positional-only and ``*args`` values as a list; every other argument by keyword."""
    try:
        signature = inspect.signature(target)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return list(args), dict(kwargs)
    positional, keywords = [], {}
    params = list(signature.parameters.values())
    has_varargs = any(p.kind is p.VAR_POSITIONAL and bound.arguments.get(p.name) for p in params)
    for p in params:
        if p.name not in bound.arguments:
            continue
        value = bound.arguments[p.name]
        if p.kind is p.VAR_POSITIONAL:
            positional.extend(value)
        elif p.kind is p.VAR_KEYWORD:
            keywords.update(value)
        elif p.kind is p.POSITIONAL_ONLY or (has_varargs and p.kind is p.POSITIONAL_OR_KEYWORD):
            positional.append(value)
        else:
            keywords[p.name] = value
    return positional, keywords


def _is_dtype(value: Any) -> bool:
    if isinstance(value, np.dtype):
        return True
    return isinstance(value, type) and (issubclass(value, np.generic) or isinstance(getattr(value, "dtype", None), np.dtype))


def _encode(value: Any, path: str, index) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and type(value) in (int, float):
        return value
    record = record_of(value)
    if record is not None:
        return _encode_call(record, path, index)
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return _encode_array(value, path)
    if _is_dtype(value):
        return {"@dtype": jax.numpy.dtype(value).name}
    if hasattr(value, "init") and hasattr(value, "update") and id(value) not in index:
        raise ConfigError(f"{path}: this {type(value).__name__} was not built by a registered factory, so it "
                          "cannot be written to a config; build it with an optcore factory.")
    if isinstance(value, list):
        return [_encode(v, f"{path}[{i}]", index) for i, v in enumerate(value)]
    if type(value) is tuple:
        return {"@tuple": [_encode(v, f"{path}[{i}]", index) for i, v in enumerate(value)]}
    if type(value) is dict:
        if all(isinstance(k, str) and not k.startswith("@") for k in value):
            return {k: _encode(v, f"{path}[{k!r}]", index) for k, v in value.items()}
        return {"@dict": [[_encode(k, f"{path} key", index), _encode(v, f"{path}[{k!r}]", index)]
                          for k, v in value.items()]}
    if callable(value):
        entry = index.get(id(value))
        if entry is not None:
            return {**_name_node(entry), "@partial": True}
        if isinstance(value, functools.partial) and id(value.func) in index:
            return _encode_call(Record(value.func, value.args, value.keywords), path, index, partial=True)
        raise ConfigError(f"{path}: {FUNCTION_HINT}.")
    raise ConfigError(f"{path}: a {type(value).__name__} cannot be written to a config (it holds None, bools, "
                      "numbers, strings, arrays, dtypes, lists, tuples, dicts and registered objects).")


def _encode_array(value: Any, path: str) -> dict:
    try:
        array = np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        raise ConfigError(f"{path}: a traced value (inside jit) cannot be written to a config.") from None
    if array.dtype.kind == "c":
        raise ConfigError(f"{path}: complex arrays cannot be written to a config.")
    key = "@array" if isinstance(value, jax.Array) else ("@scalar" if isinstance(value, np.generic) else "@ndarray")
    data = array.item() if key == "@scalar" else array.tolist()
    if array.dtype.itemsize < 4 and array.dtype.kind not in "biu":
        data = array.astype(np.float32).tolist()  # exact: every bfloat16/float16 value is a float32
    return {key: data, "@dtype": array.dtype.name}


# -- reading ---------------------------------------------------------------------------------------


def read_config(path: Union[str, os.PathLike]) -> Any:
    """The config in a ``.json`` or ``.toml`` file (chosen by suffix; anything else is read as JSON)."""
    name = os.fspath(path)
    if name.endswith(".toml"):
        try:
            import tomllib  # Python 3.11+
        except ImportError:
            try:
                import tomli as tomllib  # the same parser, for Python 3.10
            except ImportError:
                raise ImportError(f"reading {name!r} needs a TOML parser: Python 3.11+ has one built in; "
                                  "on Python 3.10 install it with: pip install tomli") from None
        with open(path, "rb") as f:
            try:
                return tomllib.load(f)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{name!r} is not valid TOML: {err}") from None
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name!r} is not valid JSON: {err}") from None


def from_config(config: Union[Mapping[str, Any], str, os.PathLike]) -> Any:
    """Builds the object a config describes (a dict, or a path to a ``.json`` or ``.toml`` file).

    ``{"@name": "adamw", "learning_rate": 1e-3}`` is ``optcore.adamw(learning_rate=1e-3)``;
    the format, written by :func:`optcore.to_config`, is described in the
    guide "Configs and reproducibility". The older format,
    ``{"name": "adamw", "learning_rate": 1e-3}`` (every dict with a ``"name"``
    is a call; ``{"name": "chain", "args": [...]}``), is still read.

    Raises:
      ConfigError: a malformed config (the message gives the path of the bad part).
      TypeError: an argument the factory does not take (named).
      PluginNotInstalledError: a name needs a plugin that is not installed
        (the message gives the install command).

    Warns:
      ConfigVersionWarning: a name's plugin is installed in another version
        than the one that wrote the config.
    """
    if isinstance(config, (str, os.PathLike)):
        config = read_config(config)
    if isinstance(config, Mapping) and not any(isinstance(k, str) and k.startswith("@") for k in config):
        return _build_legacy(config, where="config")
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a dict with an '@name' key, got {type(config).__name__}.")
    return _decode(config, _path_of(config, "config"))


def _path_of(node: Mapping, default: str) -> str:
    name = node.get("@name")
    return name if isinstance(name, str) else default


def _decode(value: Any, path: str) -> Any:
    if isinstance(value, list):
        return [_decode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        return value
    reserved = [k for k in value if isinstance(k, str) and k.startswith("@")]
    if not reserved:
        return {k: _decode(v, f"{path}[{k!r}]") for k, v in value.items()}
    if "@name" in value or "@call" in value:
        return _decode_call(value, path)
    for key in DATA_KEYS:
        if key in value:
            return _decode_data(key, value, path)
    raise ConfigError(f"{path}: unknown reserved key(s) {', '.join(map(repr, reserved))}; a dict of data whose "
                      "keys start with '@' is written as {'@dict': [[key, value], ...]}.")


def _node_arguments(node: Mapping, allowed: frozenset, path: str) -> tuple[list, dict]:
    unknown = [k for k in node if isinstance(k, str) and k.startswith("@") and k not in allowed]
    if unknown:
        raise ConfigError(f"{path}: unknown reserved key(s) {', '.join(map(repr, unknown))} in a call; "
                          f"allowed: {', '.join(sorted(allowed))}.")
    args = node.get("@args", [])
    if not isinstance(args, list):
        raise ConfigError(f"{path}.@args must be a list, got {type(args).__name__}.")
    args = [_decode(a, f"{path}.args[{i}]") for i, a in enumerate(args)]
    kwargs = {k: _decode(v, f"{path}.{k}") for k, v in node.items() if not (isinstance(k, str) and k.startswith("@"))}
    return args, kwargs


def _decode_call(node: Mapping, path: str) -> Any:
    from optcore.plugins import _call, _check_arguments

    if "@call" in node:
        args, kwargs = _node_arguments(node, CALL_KEYS, path)
        target = _decode(node["@call"], path + ".@call")
        if not callable(target):
            raise ConfigError(f"{path}.@call builds a {type(target).__name__}, which cannot be called.")
        _check_arguments(path, target, tuple(args), kwargs)
        return target(*args, **kwargs)
    args, kwargs = _node_arguments(node, NODE_KEYS, path)
    entry = resolve_node(node, path)
    partial = node.get("@partial", False)
    if not isinstance(partial, bool):
        raise ConfigError(f"{path}.@partial must be true or false, got {partial!r}.")
    if partial:
        return functools.partial(entry.obj, *args, **kwargs) if args or kwargs else entry.obj
    _check_arguments(path if path == entry.name else f"{path} ({entry.name!r})", entry.obj, tuple(args), kwargs)
    return _call(entry, tuple(args), kwargs)


def resolve_node(node: Mapping, path: str):
    """The registry entry a ``{"@name": ...}`` node names; checks its ``@provider``."""
    name = node["@name"]
    if not isinstance(name, str):
        raise ConfigError(f"{path}.@name must be a string, got {type(name).__name__}.")
    provider = node.get("@provider")
    if provider is None:
        return HOST.resolve(name)
    if not isinstance(provider, Mapping) or not isinstance(provider.get("distribution"), str):
        raise ConfigError(f"{path}.@provider must be {{'distribution': str, 'version': str}}, got {provider!r}.")
    distribution, version = provider["distribution"], provider.get("version")
    try:
        entry = HOST.resolve(f"{distribution}:{name}")
    except (PluginNotInstalledError, ConfigError):
        raise
    except UnknownNameError as err:
        if type(err) is not UnknownNameError:  # disabled: its own message says how to enable it
            raise
        pin = f"{distribution}=={version}" if version else distribution
        raise PluginNotInstalledError(
            f"{path}: {name!r} is provided by the plugin distribution {distribution!r} (version {version} wrote "
            f"this config), which is not installed. Install it with: pip install '{pin}'",
            distribution=distribution, install_command=f"pip install '{pin}'",
        ) from None
    installed = entry.provider.version
    if version is not None and installed is not None and installed != version \
            and canonicalize_name(entry.provider.distribution or "") == canonicalize_name(distribution):
        warnings.warn(
            f"{path}: {name!r} comes from {distribution} {installed}, but the config was written with "
            f"{distribution} {version}; it may build a different optimizer.",
            ConfigVersionWarning, stacklevel=5,
        )
    return entry


def _decode_data(key: str, node: Mapping, path: str) -> Any:
    extra = set(node) - {key, "@dtype"}
    if extra:
        raise ConfigError(f"{path}: {key!r} does not go with {', '.join(map(repr, sorted(extra)))}.")
    if key == "@tuple":
        items = node["@tuple"]
        if not isinstance(items, list):
            raise ConfigError(f"{path}.@tuple must be a list, got {type(items).__name__}.")
        return tuple(_decode(v, f"{path}[{i}]") for i, v in enumerate(items))
    if key == "@dict":
        pairs = node["@dict"]
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ConfigError(f"{path}.@dict must be a list of [key, value] pairs.")
        out = {}
        for k, v in pairs:
            k = _decode(k, f"{path} key")
            try:
                out[k] = _decode(v, f"{path}[{k!r}]")
            except TypeError as err:
                raise ConfigError(f"{path}: the key {k!r} cannot be a dict key ({err}).") from None
        return out
    dtype = _decode_dtype(node.get("@dtype"), path)
    if key == "@dtype":
        return dtype
    if dtype is None:
        raise ConfigError(f"{path}: {key!r} needs an '@dtype'.")
    try:
        array = np.asarray(node[key], dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}.{key}: cannot be read as {dtype.name} ({err}).") from None
    if key == "@scalar":
        if array.ndim:
            raise ConfigError(f"{path}.@scalar must be a single number, got shape {array.shape}.")
        return array[()]
    return jax.numpy.asarray(array) if key == "@array" else array


def _decode_dtype(name: Any, path: str) -> Optional[np.dtype]:
    if name is None:
        return None
    try:
        return jax.numpy.dtype(name)
    except TypeError:
        raise ConfigError(f"{path}.@dtype: {name!r} is not a dtype.") from None


# -- the older format ({"name": ...}) ----------------------------------------------------------------


def _build_legacy(config: Any, where: str) -> Any:
    from optcore.plugins import _call, _check_arguments

    if not isinstance(config, Mapping):
        raise TypeError(f"{where} must be a dict with a 'name' key, got {type(config).__name__}.")
    if "name" not in config:
        raise ValueError(f"{where} has no 'name' key (keys: {', '.join(map(str, config)) or 'none'}).")
    name = config["name"]
    if not isinstance(name, str):
        raise TypeError(f"{where}['name'] must be a string, got {type(name).__name__}.")
    args = config.get("args", ())
    if not isinstance(args, (list, tuple)):
        raise TypeError(f"{where}['args'] must be a list, got {type(args).__name__}.")
    args = [_legacy_value(a, f"{where}['args'][{i}]") for i, a in enumerate(args)]
    kwargs = {k: _legacy_value(v, f"{where}[{k!r}]") for k, v in config.items() if k not in ("name", "args")}
    entry = HOST.resolve(name)
    _check_arguments(f"{where} ({name!r})", entry.obj, tuple(args), kwargs)
    return _call(entry, tuple(args), kwargs)


def _legacy_value(value: Any, where: str) -> Any:
    if isinstance(value, Mapping) and "name" in value:
        return _build_legacy(value, where)
    if isinstance(value, list):
        return [_legacy_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


# -- optcore config show / check -----------------------------------------------------------------------


def with_defaults(config: Any) -> tuple[Any, list[str]]:
    """The config with every default argument written out, and the paths of defaults left out.

    Only the config is read (no factory is called). A default that cannot be
    written (a function that is not registered) is left out, as from_config
    fills it in anyway. The arguments of a ``@call`` node (the call of what
    ``inject_hyperparams(...)`` returns) are shown as given, and a
    ``@partial`` reference stays without arguments.
    """
    if isinstance(config, Mapping) and not any(isinstance(k, str) and k.startswith("@") for k in config):
        config = to_config(_build_legacy(config, where="config"))  # the older format, shown in the current one
    left_out: list[str] = []
    index = _registered_index()
    path = _path_of(config, "config") if isinstance(config, Mapping) else "config"
    return _fill(config, path, index, left_out), left_out


def _fill(value: Any, path: str, index, left_out: list[str]) -> Any:
    if isinstance(value, list):
        return [_fill(v, f"{path}[{i}]", index, left_out) for i, v in enumerate(value)]
    if not isinstance(value, Mapping):
        return value
    if "@name" not in value and "@call" not in value:
        if "@tuple" in value:
            return {**value, "@tuple": _fill(value["@tuple"], path, index, left_out)}
        if "@dict" in value or any(isinstance(k, str) and k.startswith("@") for k in value):
            return value
        return {k: _fill(v, f"{path}[{k!r}]", index, left_out) for k, v in value.items()}
    out = {}
    for key, v in value.items():
        if key == "@args":
            out[key] = [_fill(a, f"{path}.args[{i}]", index, left_out) for i, a in enumerate(v)]
        elif key == "@call":
            out[key] = _fill(v, path + ".@call", index, left_out)
        elif isinstance(key, str) and key.startswith("@"):
            out[key] = v
        else:
            out[key] = _fill(v, f"{path}.{key}", index, left_out)
    if "@name" not in value or value.get("@partial"):
        return out
    entry = resolve_node(value, path)
    try:
        parameters = inspect.signature(entry.obj).parameters.values()
    except (TypeError, ValueError):
        return out
    parameters = list(parameters)
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    given_positionally = set(positional[: len(out.get("@args", ()))])
    for p in parameters:
        if p.name in out or p.name in given_positionally or p.default is p.empty \
                or p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        try:
            out[p.name] = _encode(p.default, f"{path}.{p.name}", index)
        except ConfigError:
            left_out.append(f"{path}.{p.name}")
    return out
