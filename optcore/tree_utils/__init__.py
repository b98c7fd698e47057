"""Tree utilities: arithmetic, casting, random trees and named access to states.

Layer 1: depends on :mod:`optcore.base` and :mod:`optcore.numerics`. The same
functions are available under short names in :mod:`optcore.tree`
(``optcore.tree.add is optcore.tree_utils.tree_add``).
"""

import functools
import warnings

from optcore.tree_utils._casting import (
    state_full_like,
    state_zeros_like,
    tree_batch_shape,
    tree_cast,
    tree_cast_like,
    tree_dtype,
    tree_full_like,
    tree_ones_like,
    tree_zeros_like,
)
from optcore.tree_utils._random import (
    tree_random_like,
    tree_split_key_like,
    tree_unwrap_random_key_data,
)
from optcore.tree_utils._state_utils import (
    NamedTupleKey,
    tree_get,
    tree_get_all_with_path,
    tree_map_params,
    tree_set,
)
from optcore.tree_utils._tree_math import (
    tree_add,
    tree_add_scale,
    tree_allclose,
    tree_bias_correction,
    tree_clip,
    tree_conj,
    tree_div,
    tree_max,
    tree_min,
    tree_mul,
    tree_norm,
    tree_real,
    tree_scale,
    tree_size,
    tree_sub,
    tree_sum,
    tree_update_infinity_moment,
    tree_update_moment,
    tree_update_moment_per_elem_norm,
    tree_vdot,
    tree_where,
)

__all__ = [
    "NamedTupleKey",
    "state_full_like",
    "state_zeros_like",
    "tree_add",
    "tree_add_scale",
    "tree_allclose",
    "tree_batch_shape",
    "tree_bias_correction",
    "tree_cast",
    "tree_cast_like",
    "tree_clip",
    "tree_conj",
    "tree_div",
    "tree_dtype",
    "tree_full_like",
    "tree_get",
    "tree_get_all_with_path",
    "tree_map_params",
    "tree_max",
    "tree_min",
    "tree_mul",
    "tree_norm",
    "tree_ones_like",
    "tree_random_like",
    "tree_real",
    "tree_scale",
    "tree_set",
    "tree_size",
    "tree_split_key_like",
    "tree_sub",
    "tree_sum",
    "tree_unwrap_random_key_data",
    "tree_update_infinity_moment",
    "tree_update_moment",
    "tree_update_moment_per_elem_norm",
    "tree_vdot",
    "tree_where",
    "tree_zeros_like",
]


# Names Optax 0.2.8 still serves from ``optax.tree_utils`` with a DeprecationWarning:
# name -> (the warning, Optax's wording with optcore's paths; the replacement).
# They are reached through the module ``__getattr__`` below, so, as in Optax, they
# are absent from ``dir()`` and ``__all__``.
_DEPRECATED = {
    "tree_scalar_mul": (
        "optcore.tree_utils.tree_scalar_mul is deprecated: use optcore.tree_utils.tree_scale "
        "(optax v0.2.5 or newer).",
        tree_scale,
    ),
    "tree_add_scalar_mul": (
        "optcore.tree_utils.tree_add_scalar_mul is deprecated: use optcore.tree_utils.tree_add_scale "
        "(optax v0.2.5 or newer).",
        tree_add_scale,
    ),
    "tree_l1_norm": (
        "optcore.tree_utils.tree_l1_norm is deprecated: use optcore.tree_utils.tree_norm(..., ord=1) "
        "(optax v0.2.5 or newer).",
        functools.partial(tree_norm, ord=1),
    ),
    "tree_l2_norm": (
        "optcore.tree_utils.tree_l2_norm is deprecated: use optcore.tree_utils.tree_norm "
        "(optax v0.2.5 or newer).",
        functools.partial(tree_norm, ord=2),
    ),
    "tree_linf_norm": (
        "optcore.tree_utils.tree_linf_norm is deprecated: use optcore.tree_utils.tree_norm(..., ord=jnp.inf) "
        "(optax v0.2.5 or newer).",
        functools.partial(tree_norm, ord="inf"),
    ),
}


def __getattr__(name: str):
    """Serves the deprecated names of :data:`_DEPRECATED` with a DeprecationWarning."""
    if name in _DEPRECATED:
        message, replacement = _DEPRECATED[name]
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return replacement
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
