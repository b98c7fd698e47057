"""Building trees like other trees, casting, and reading a tree's dtype."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

_MIXED_DTYPE_HANDLERS = (None, "promote", "highest", "lowest")


def tree_zeros_like(tree: Any, dtype: Optional[Any] = None) -> Any:
    r"""A tree of zeros shaped like ``tree``: :math:`z_i = 0`.

    Args:
      tree: a pytree of arrays.
      dtype: dtype of the zeros (default: each leaf's dtype).
    """
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_ones_like(tree: Any, dtype: Optional[Any] = None) -> Any:
    r"""A tree of ones shaped like ``tree``: :math:`z_i = 1`.

    Args:
      tree: a pytree of arrays.
      dtype: dtype of the ones (default: each leaf's dtype).
    """
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def tree_full_like(tree: Any, fill_value: Any, dtype: Optional[Any] = None) -> Any:
    r"""A tree filled with one value, shaped like ``tree``: :math:`z_i = c`.

    Args:
      tree: a pytree of arrays.
      fill_value: the value :math:`c`.
      dtype: dtype of the result (default: each leaf's dtype).
    """
    return jax.tree.map(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def tree_cast(tree: Any, dtype: Optional[Any]) -> Any:
    """Casts every leaf to ``dtype``.

    Args:
      tree: a pytree of arrays.
      dtype: the target dtype; ``None`` returns the tree unchanged.
    """
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def tree_cast_like(tree: Any, other_tree: Any) -> Any:
    """Casts every leaf of ``tree`` to the dtype of the matching leaf of ``other_tree``.

    Args:
      tree: a pytree of arrays.
      other_tree: a pytree with the same structure whose dtypes are copied.
    """
    return jax.tree.map(lambda x, other: jnp.asarray(x).astype(jnp.asarray(other).dtype), tree, other_tree)


def _comparable_order(first, second):
    """``(lower, higher)`` of two dtypes, or a ValueError if neither promotes to the other."""
    promoted = jnp.promote_types(first, second)
    if promoted == second:
        return first, second
    if promoted == first:
        return second, first
    raise ValueError(
        f"Cannot order the dtypes {first} and {second}: neither can represent the other "
        f"(they promote to {promoted}). Use mixed_dtype_handler='promote'."
    )


def tree_dtype(tree: Any, mixed_dtype_handler: Optional[str] = None) -> jnp.dtype:
    """The dtype of the leaves of a tree.

    Args:
      tree: a pytree of arrays or scalars.
      mixed_dtype_handler: what to do when the leaves have different dtypes:
        ``None`` raises a ``ValueError``; ``"promote"`` returns their JAX type
        promotion; ``"highest"`` / ``"lowest"`` return the leaf dtype that all
        others promote to / that promotes to all others (a ``ValueError`` if
        two dtypes cannot be ordered, such as bfloat16 and float16).

    Returns:
      The dtype; for an empty tree, JAX's default float dtype.
    """
    if mixed_dtype_handler not in _MIXED_DTYPE_HANDLERS:
        raise ValueError(
            f"mixed_dtype_handler must be one of {_MIXED_DTYPE_HANDLERS}, got {mixed_dtype_handler!r}."
        )
    leaves_with_path = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves_with_path:
        return jax.dtypes.canonicalize_dtype(float)
    dtypes = [jnp.asarray(leaf).dtype for _, leaf in leaves_with_path]
    if mixed_dtype_handler is None:
        for (path, _), dtype in zip(leaves_with_path, dtypes):
            if dtype != dtypes[0]:
                raise ValueError(
                    f"The leaves of the tree have different dtypes: {dtypes[0]} for the first leaf and "
                    f"{dtype} at {jax.tree_util.keystr(path)}. Pass mixed_dtype_handler to choose one."
                )
        return dtypes[0]
    if mixed_dtype_handler == "promote":
        return jnp.result_type(*dtypes)
    result = dtypes[0]
    for dtype in dtypes[1:]:
        lower, higher = _comparable_order(result, dtype)
        result = higher if mixed_dtype_handler == "highest" else lower
    return result


def tree_batch_shape(tree: Any, shape: tuple = ()) -> Any:
    """Broadcasts every leaf to a batch of copies: leaf shape ``s`` becomes ``shape + s``.

    Args:
      tree: a pytree of arrays.
      shape: the leading batch shape.
    """
    shape = tuple(shape)
    return jax.tree.map(lambda x: jnp.broadcast_to(x, shape + jnp.shape(x)), tree)
