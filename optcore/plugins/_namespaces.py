"""``import optcore.losses`` and ``from optcore.contrib import muon`` for plugin namespaces.

A plugin registers a module as a ``namespace`` (``optcore.losses`` is the
module ``optcore_losses``). Attribute access works through ``optcore.__getattr__``;
this finder makes the import statement work too. It sits at the END of
``sys.meta_path``, so the core's real subpackages are always found first, and it
only touches the registry when Python is asked for an ``optcore.<name>`` module
that does not exist as a file.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class _AliasLoader(importlib.abc.Loader):
    """Returns the plugin's already-imported module instead of creating one."""

    def __init__(self, module: types.ModuleType):
        self.module = module
        self.original_spec = getattr(module, "__spec__", None)

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        # importlib stamps the alias spec on the module; keep the plugin's own.
        module.__spec__ = self.original_spec


class PluginNamespaceFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != "optcore" or not name or "." in name:
            return None
        from optcore.plugins._errors import PluginDisabledError, PluginNotInstalledError, UnknownNameError
        from optcore.plugins._manager import HOST

        try:
            entry = HOST.resolve(name)
        except (PluginNotInstalledError, PluginDisabledError) as err:  # a known plugin's namespace: say how to get it
            raise ModuleNotFoundError(str(err), name=fullname) from None
        except UnknownNameError:
            return None  # an ordinary missing module: let Python say so
        if entry.kind != "namespace":
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(entry.obj))


def install() -> None:
    if not any(isinstance(f, PluginNamespaceFinder) for f in sys.meta_path):
        sys.meta_path.append(PluginNamespaceFinder())
