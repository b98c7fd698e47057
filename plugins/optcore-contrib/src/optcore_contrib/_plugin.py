"""The optcore plugin hook of optcore-contrib (entry point ``optcore: contrib``)."""

import optcore
import optcore_contrib

_KINDS = (
    (optcore_contrib.OPTIMIZERS, "optimizer"),
    (optcore_contrib.TRANSFORMS, "transform"),
    (optcore_contrib.WRAPPERS, "wrapper"),
    (optcore_contrib.UTILITIES, "utility"),
)


# Optax 0.2.8 still serves these at its top level (``optax.dpsgd``), with a
# DeprecationWarning pointing to ``optax.contrib``; ``optcore.<name>`` warns the same way.
# ``optcore.get(name)`` and ``optcore.contrib.<name>`` do not warn.
DEPRECATED_TOP_LEVEL = {
    name: f"optcore.{name} is deprecated: use optcore.contrib.{name} (optax v0.1.8 or newer)."
    for name in ("differentially_private_aggregate", "DifferentiallyPrivateAggregateState", "dpsgd")
}


@optcore.hookimpl
def optcore_register(register):
    """Registers the ``contrib`` namespace and every function.

    State classes are not registered, except ``DifferentiallyPrivateAggregateState``
    (as a utility), which Optax serves as a deprecated top-level alias.
    """
    register("contrib", optcore_contrib, kind="namespace")
    for names, kind in _KINDS:
        for name in names:
            register(name, getattr(optcore_contrib, name), kind=kind, deprecated=DEPRECATED_TOP_LEVEL.get(name))
    state = "DifferentiallyPrivateAggregateState"
    register(state, getattr(optcore_contrib, state), kind="utility", deprecated=DEPRECATED_TOP_LEVEL[state])
