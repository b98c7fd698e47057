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
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

import pluggy

hookspec = pluggy.HookspecMarker("optcore")
hookimpl = pluggy.HookimplMarker("optcore")


class RegisterFn(Protocol):
    """The callable handed to :func:`optcore_register`.

    ``register(name, obj, *, kind, override=False, deprecated=None)`` adds
    ``obj`` to the registry under ``name``.

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
        it up raises an error naming both providers.
      deprecated: a message; reading the attribute ``optcore.<name>`` then
        raises a ``DeprecationWarning`` with it (``optcore.get(name)`` and the
        plugin's namespace do not warn). For names that Optax serves at its top
        level only as deprecated aliases, e.g. ``optax.dpsgd``.
    """

    def __call__(
        self, name: str, obj: Any, *, kind: str, override: bool = False, deprecated: Optional[str] = None
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


__all__: list[str] = ["RegisterFn", "hookimpl", "hookspec", "optcore_register"]
