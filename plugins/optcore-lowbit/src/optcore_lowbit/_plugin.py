"""The optcore plugin hook of optcore-lowbit (entry point ``optcore: lowbit``)."""

import optcore
import optcore_lowbit

_KINDS = (
    (optcore_lowbit.OPTIMIZERS, "optimizer"),
    (optcore_lowbit.TRANSFORMS, "transform"),
    (optcore_lowbit.WRAPPERS, "wrapper"),
)


@optcore.hookimpl
def optcore_register(register):
    """Registers the ``lowbit`` namespace and every optimizer, transform and wrapper."""
    register("lowbit", optcore_lowbit, kind="namespace")
    for names, kind in _KINDS:
        for name in names:
            register(name, getattr(optcore_lowbit, name), kind=kind)
