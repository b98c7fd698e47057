"""Arithmetic, norms and moment updates over pytrees."""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from optcore import numerics


def tree_zeros_like(tree: Any, dtype: Optional[Any] = None) -> Any:
    """A tree of zeros shaped like ``tree`` (leaf dtypes kept unless ``dtype``)."""
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def tree_ones_like(tree: Any, dtype: Optional[Any] = None) -> Any:
    """A tree of ones shaped like ``tree`` (leaf dtypes kept unless ``dtype``)."""
    return jax.tree.map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def tree_cast(tree: Any, dtype: Optional[Any]) -> Any:
    """Casts every leaf to ``dtype``; ``dtype=None`` returns the tree unchanged."""
    if dtype is None:
        return tree
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def tree_norm(tree: Any, ord: Any = None, squared: bool = False) -> jax.Array:  # pylint: disable=redefined-builtin
    """The norm of all leaves taken as one vector.

    Args:
      tree: a pytree of arrays.
      ord: ``None`` or ``2`` (l2), ``1`` (l1), ``"inf"``/``jnp.inf`` (max abs).
      squared: return the squared norm (only for the l2 norm).
    """
    leaves = jax.tree.leaves(tree)
    if ord in (None, 2, "fro"):
        squared_norm = sum(jnp.sum(numerics.abs_sq(x)) for x in leaves) if leaves else jnp.array(0.0)
        return squared_norm if squared else jnp.sqrt(squared_norm)
    if squared:
        raise ValueError("squared=True is only defined for the l2 norm (ord=None or 2).")
    if ord == 1:
        return sum(jnp.sum(jnp.abs(x)) for x in leaves) if leaves else jnp.array(0.0)
    if ord in ("inf", jnp.inf, float("inf")):
        return jnp.max(jnp.stack([jnp.max(jnp.abs(x), initial=0) for x in leaves])) if leaves else jnp.array(0.0)
    raise ValueError(f"Unsupported norm order {ord!r}: use None, 2, 1 or 'inf'.")


def tree_update_moment(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of the ``order``-th power of the updates.

    ``m <- (1 - decay) * g**order + decay * m`` (``|g|**2`` for complex ``g``
    and order 2). ``None`` updates keep ``None``.
    """

    def update(g, t):
        if g is None:
            return None
        if order == 2:
            power = numerics.abs_sq(g)
        else:
            power = g**order
        return (1 - decay) * power + decay * t

    return jax.tree.map(update, updates, moments, is_leaf=lambda x: x is None)


def tree_update_moment_per_elem_norm(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Moving average of ``|g|**order`` taken elementwise (``|g|`` for complex ``g``)."""

    def order_th_norm(g):
        if jnp.isrealobj(g) and order % 2 == 0:
            return g**order
        half_order = order / 2
        if half_order.is_integer():
            half_order = int(half_order)
        return numerics.abs_sq(g) ** half_order

    def update(g, t):
        if g is None:
            return None
        return (1 - decay) * order_th_norm(g) + decay * t

    return jax.tree.map(update, updates, moments, is_leaf=lambda x: x is None)


def tree_bias_correction(moment: Any, decay: Any, count: jax.Array) -> Any:
    """Corrects a zero-initialised moving average: ``m / (1 - decay**count)``."""
    correction = 1 - decay ** count
    # Dividing in the moment's own dtype keeps bf16/f16 moments in their dtype.
    return jax.tree.map(lambda t: t / correction.astype(t.dtype), moment)
