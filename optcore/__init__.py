"""optcore: gradient processing and optimisation for JAX, built as a plugin ecosystem.

The public names of the core are re-exported here from their family packages.
Names provided by plugins (``optcore.l2_loss``, ``optcore.losses``, ...) are
found through the registry on first access; a name whose plugin is missing
raises an error with the command that installs it.
"""

from optcore import base, numerics, tree, tree_utils, validate
from optcore.plugins import _recording

# Before the names are re-exported below: `optcore.adamw(1e-3)` remembers how it was built.
_recording.record_core_factories()
from optcore._version import __version__
from optcore.base import *  # noqa: F401,F403
from optcore.hookspecs import hookimpl
from optcore.numerics import (
    global_norm,
    safe_increment,
    safe_int32_increment,
    safe_norm,
    safe_root_mean_squares,
    scale_gradient,
)
from optcore.linalg import matrix_inverse_pth_root, nnls, power_iteration
from optcore.optimizers import *  # noqa: F401,F403
from optcore.plugins import (
    ConfigError,
    NameCollisionError,
    PluginNotInstalledError,
    UnknownNameError,
    available,
    from_config,
    get,
    register,
    to_config,
)
from optcore.schedules import *  # noqa: F401,F403
from optcore.transforms import *  # noqa: F401,F403
from optcore.tree_utils import (
    tree_bias_correction as bias_correction,
    tree_map_params,
    tree_update_infinity_moment as update_infinity_moment,
    tree_update_moment as update_moment,
    tree_update_moment_per_elem_norm as update_moment_per_elem_norm,
)
from optcore.updates import apply_updates, incremental_update, periodic_update
from optcore.wrappers import *  # noqa: F401,F403
from optcore import kit, microbatching, optimizers, plugins, projections, schedules, sharding, transforms, wrappers
from optcore.plugins import _namespaces

_namespaces.install()  # `import optcore.losses` for plugin namespaces (no scan until asked)
from optcore.microbatching import microbatch

_FAMILIES = (base, optimizers, schedules, transforms, wrappers)

__all__ = sorted(
    {name for family in _FAMILIES for name in family.__all__}
    | {
        "__version__",
        "apply_updates",
        "available",
        "bias_correction",
        "tree_map_params",
        "from_config",
        "to_config",
        "ConfigError",
        "get",
        "global_norm",
        "matrix_inverse_pth_root",
        "microbatch",
        "nnls",
        "power_iteration",
        "hookimpl",
        "incremental_update",
        "NameCollisionError",
        "periodic_update",
        "PluginNotInstalledError",
        "register",
        "safe_increment",
        "safe_int32_increment",
        "safe_norm",
        "safe_root_mean_squares",
        "scale_gradient",
        "UnknownNameError",
        "update_infinity_moment",
        "update_moment",
        "update_moment_per_elem_norm",
    }
)


def __getattr__(name: str):
    """Falls through to the registry for names that plugins provide.

    A name its plugin registered with ``deprecated=`` (Optax's deprecated
    top-level aliases, e.g. ``optcore.dpsgd``) warns with that message.
    """
    if name.startswith("__"):
        raise AttributeError(f"module 'optcore' has no attribute {name!r}")
    from optcore.plugins._manager import HOST

    try:
        entry = HOST.resolve(name)
    except UnknownNameError as err:
        raise AttributeError(str(err)) from None
    if entry.deprecated is not None:
        import warnings

        warnings.warn(entry.deprecated, DeprecationWarning, stacklevel=2)
    return entry.obj


def __dir__():
    return sorted(set(globals()) | set(__all__))
