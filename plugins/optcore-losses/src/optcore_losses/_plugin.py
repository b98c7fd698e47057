"""The optcore plugin hook of optcore-losses (entry point ``optcore: losses``)."""

import optcore
import optcore_losses
from optcore_losses import assignment

# Helpers that are not losses themselves.
_UTILITIES = ("smooth_labels",)


@optcore.hookimpl
def optcore_register(register):
    """Registers the ``losses`` and ``assignment`` namespaces and every function."""
    register("losses", optcore_losses, kind="namespace")
    register("assignment", assignment, kind="namespace")
    for name in optcore_losses.__all__:
        kind = "utility" if name in _UTILITIES else "loss"
        register(name, getattr(optcore_losses, name), kind=kind)
    for name in assignment.__all__:
        register(name, getattr(assignment, name), kind="utility")
