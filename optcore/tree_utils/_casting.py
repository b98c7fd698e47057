"""Building trees like other trees, casting, and reading a tree's dtype."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from optcore import validate

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


def state_zeros_like(params: Any, dtype: Optional[Any] = None) -> Any:
    r"""Optimizer-state zeros shaped, typed and placed like ``params``: :math:`z_i = +0`.

    The same values as :func:`tree_zeros_like`, built so that each leaf takes
    its param's sharding under ``jax.jit`` too. ``jnp.zeros_like`` of a traced
    param is a constant that ignores the param's value, so with auto mesh axes
    XLA's sharding propagation has nothing to follow and ``jax.jit(opt.init)``
    returns replicated (or single-device) moments for sharded params. Here a
    traced leaf becomes :math:`z = \mathrm{where}(\mathrm{isfinite}(p), |p|
    \cdot 0, 0)`: +0.0 for every entry (``|p| * 0`` is never -0.0, and the
    ``where`` turns the NaN of ``inf * 0`` and ``nan * 0`` into 0), one fused
    elementwise pass at init that propagation follows. Concrete arrays (eager
    init) take ``jnp.zeros_like``, which already keeps their sharding. Every
    ``init`` in optcore and its plugins makes its params-shaped state with this
    function or :func:`state_full_like`; use them in your own transformations'
    ``init`` (not in ``update``, where the extra read of the params is wasted).

    Args:
      params: a pytree of arrays (the params, or anything shaped like them).
      dtype: dtype of the zeros (default: each leaf's dtype).
    """
    return state_full_like(params, 0, dtype)


def state_full_like(params: Any, fill_value: Any, dtype: Optional[Any] = None) -> Any:
    r"""Optimizer state filled with ``fill_value``, shaped and placed like ``params``: :math:`z_i = c`.

    :func:`tree_full_like`'s values with :func:`state_zeros_like`'s placement:
    a traced leaf is :math:`\mathrm{copysign}(z, c) + c` with :math:`z` the
    value-derived +0.0 above, which is exactly :math:`c` for every :math:`c`
    (-0.0, infinities and NaN included).

    Args:
      params: a pytree of arrays.
      fill_value: the value :math:`c` (a scalar).
      dtype: dtype of the result (default: each leaf's dtype).
    """
    return jax.tree.map(lambda p: _state_full_like_leaf(p, fill_value, dtype), params)


def _state_full_like_leaf(p: Any, fill_value: Any, dtype: Optional[Any]) -> jax.Array:
    if isinstance(p, jax.ShapeDtypeStruct):
        # Abstract params (as Optax takes them in init): the state's shape, dtype and sharding are
        # all there is to know, and its values do not depend on the params'.
        return jnp.full_like(p, fill_value, dtype=p.dtype if dtype is None else jnp.dtype(dtype))
    p = jnp.asarray(p)
    dtype = p.dtype if dtype is None else jnp.dtype(dtype)
    # Eager arrays keep their sharding through full_like; integer params are never sharded state sources
    # worth a pass (and XLA may fold ``int * 0`` to a constant anyway).
    if not isinstance(p, jax.core.Tracer) or not jnp.issubdtype(p.dtype, jnp.inexact):
        return jnp.full_like(p, fill_value, dtype=dtype)
    zero = jnp.where(jnp.isfinite(p), jnp.abs(p) * 0, 0).astype(dtype)
    fill = jnp.asarray(fill_value, dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        zero = jnp.copysign(zero, fill)  # so that a -0.0 fill stays -0.0
    return zero + fill


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

    A leaf whose counterpart has no dtype (a Python number) is left as it is, as in Optax.

    Args:
      tree: a pytree of arrays.
      other_tree: a pytree with the same structure whose dtypes are copied.
    """
    return jax.tree.map(
        lambda x, other: jnp.asarray(x).astype(other.dtype) if hasattr(other, "dtype") else x, tree, other_tree
    )


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
    validate.check_one_of("mixed_dtype_handler", mixed_dtype_handler, _MIXED_DTYPE_HANDLERS)
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
