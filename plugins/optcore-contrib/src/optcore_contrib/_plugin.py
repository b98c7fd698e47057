"""The optcore plugin hook of optcore-contrib (entry point ``optcore: contrib``)."""

import optcore
import optcore_contrib

_KINDS = (
    (optcore_contrib.OPTIMIZERS, "optimizer"),
    (optcore_contrib.TRANSFORMS, "transform"),
    (optcore_contrib.WRAPPERS, "wrapper"),
    (optcore_contrib.UTILITIES, "utility"),
)


@optcore.hookimpl
def optcore_register(register):
    """Registers the ``contrib`` namespace and every function (not the state classes)."""
    register("contrib", optcore_contrib, kind="namespace")
    for names, kind in _KINDS:
        for name in names:
            register(name, getattr(optcore_contrib, name), kind=kind)
