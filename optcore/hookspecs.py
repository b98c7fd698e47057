"""The hooks through which plugins extend optcore.

optcore uses `pluggy <https://pluggy.readthedocs.io>`_ with the project name
``"optcore"``. A plugin is any module or object with functions marked
``@optcore.hookimpl`` whose names match the specifications below. Installed
packages announce their plugin with an entry point in the group ``optcore``::

    [project.entry-points.optcore]
    my_plugin = "my_package.optcore_plugin"

The core's own optimizers, transforms, wrappers and schedules are registered
by its default plugin (:mod:`optcore.plugins._default`) through these same
hooks: nothing in the registry is special-cased.

The host calls every hook through pluggy, one plugin at a time (so that a
plugin whose hook raises is reported alone), in pluggy's order: plugins
registered later first, ``@optcore.hookimpl(tryfirst=True)`` /
``(trylast=True)`` move a plugin to the front or the back, and hook wrappers
(``@optcore.hookimpl(wrapper=True)``) run around each plugin's call.
``OPTCORE_TRACE_PLUGINS=1`` (or ``optcore list --trace``) writes every hook
call to stderr with pluggy's tracing.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional, Protocol

import pluggy

hookspec = pluggy.HookspecMarker("optcore")
hookimpl = pluggy.HookimplMarker("optcore")


class RegisterFn(Protocol):
    """The callable handed to :func:`optcore_register`.

    ``register(name, obj, *, kind, override=False, aliases=(), deprecated=None)``
    adds ``obj`` to the registry under ``name``. Each plugin's call gets its own
    ``register``, which records that plugin as the provider.

    Args:
      name: the lookup name, e.g. ``"adamw"``. Names are unique across kinds.
      obj: the object returned by ``optcore.get(name)``; for factories,
        ``optcore.get(name, **kwargs)`` returns ``obj(**kwargs)``.
      kind: one of :data:`optcore.plugins.KINDS`: ``"optimizer"``,
        ``"transform"``, ``"wrapper"``, ``"schedule"``, ``"projection"``,
        ``"loss"``, ``"curvature"``, ``"estimator"``, ``"control_variate"``,
        ``"utility"``, or ``"namespace"`` (a module reachable as
        ``optcore.<name>``, e.g. ``optcore.losses``).
      override: replace an entry of the same name from another plugin. Without
        it, two plugins registering one name make that name ambiguous: looking
        it up raises an error naming both providers. The qualified name
        ``"<distribution>:<name>"`` resolves either way.
      aliases: further names for the same entry (``aliases=("lion_v1",)``),
        listed with it by ``optcore list`` and ``optcore info``.
      deprecated: a message; reading the attribute ``optcore.<name>`` then
        raises a ``DeprecationWarning`` with it (``optcore.get(name)`` and the
        plugin's namespace do not warn). For names that Optax serves at its top
        level only as deprecated aliases, e.g. ``optax.dpsgd``.
    """

    def __call__(
        self,
        name: str,
        obj: Any,
        *,
        kind: str,
        override: bool = False,
        aliases: tuple[str, ...] = (),
        deprecated: Optional[str] = None,
    ) -> None: ...


@hookspec
def optcore_register(register: RegisterFn) -> None:
    """Add entries to the optcore registry by calling ``register``.

    Called once per plugin, on the first lookup (``optcore.get``,
    ``optcore.available``, ``optcore list`` or a plugin-provided attribute of
    the ``optcore`` module), never at ``import optcore``. If the hook raises,
    the plugin is reported as broken, none of its entries are kept, and the
    other plugins still load.

    Example::

        import optcore

        @optcore.hookimpl
        def optcore_register(register):
            register("my_sgd", my_sgd, kind="optimizer")
    """


@hookspec
def optcore_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``optcore`` command line.

    ``subparsers`` is the :mod:`argparse` object of ``optcore``'s commands (what
    ``ArgumentParser.add_subparsers()`` returns). Add a parser to it and give it
    a ``func`` default: ``optcore <command> ...`` calls ``func(args)`` with the
    parsed :class:`argparse.Namespace` and exits with its return value (an
    int, 0 for success). Command names are shared with the core's (``list``,
    ``info``, ``install``, ``demo``) and other plugins': pick a distinctive one.
    Called when the command line is built, for every loaded plugin. If the
    hook raises, a warning names the plugin and the other commands still work.

    Example::

        import optcore

        def _hello(args):
            print(f"hello, {args.who}")
            return 0

        @optcore.hookimpl
        def optcore_add_commands(subparsers):
            parser = subparsers.add_parser("hello", help="say hello")
            parser.add_argument("--who", default="world")
            parser.set_defaults(func=_hello)

    Then ``optcore hello --who you`` prints ``hello, you``.
    """


__all__: list[str] = ["RegisterFn", "hookimpl", "hookspec", "optcore_add_commands", "optcore_register"]
