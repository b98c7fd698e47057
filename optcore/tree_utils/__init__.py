"""Tree utilities: arithmetic and moments over pytrees of arrays.

Layer 1: depends on :mod:`optcore.base` and :mod:`optcore.numerics`.
"""

from optcore.tree_utils._tree_math import (
    tree_bias_correction,
    tree_cast,
    tree_norm,
    tree_ones_like,
    tree_update_moment,
    tree_update_moment_per_elem_norm,
    tree_zeros_like,
)

__all__ = [
    "tree_bias_correction",
    "tree_cast",
    "tree_norm",
    "tree_ones_like",
    "tree_update_moment",
    "tree_update_moment_per_elem_norm",
    "tree_zeros_like",
]
