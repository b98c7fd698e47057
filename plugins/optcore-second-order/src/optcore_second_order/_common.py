"""Shared helpers: argument checks, flattening, and loops that keep memory linear."""

from __future__ import annotations

import operator
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

import optcore

Array = jax.Array


def check_callable(name: str, fn: Any) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}.")


def check_count(name: str, value: Any, *, allow_none: bool = False) -> None:
    """``value`` must be a positive Python/NumPy integer (it fixes a loop length or a shape)."""
    if value is None and allow_none:
        return
    try:
        operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a positive integer{' or None' if allow_none else ''}, "
            f"got {value!r} of type {type(value).__name__}."
        ) from None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive integer, got {value!r}.")
    optcore.validate.check_range(name, int(value), low=1)


def flatten_params(params: Any) -> tuple[Array, Callable[[Array], Any]]:
    """``params`` as one vector and the function that undoes it.

    Raises a clear error for parameters with nothing to differentiate.
    """
    flat, unravel = ravel_pytree(params)
    if flat.size == 0:
        raise ValueError("params has no entries: there is no curvature to compute.")
    if not jnp.issubdtype(flat.dtype, jnp.inexact):
        raise TypeError(f"params must hold floating point arrays, got dtype {flat.dtype}.")
    return flat, unravel


def finish(diagonal: Array, unravel: Callable[[Array], Any], as_tree: bool) -> Any:
    """The flat diagonal, or the same numbers shaped (and typed) like params."""
    return unravel(diagonal) if as_tree else diagonal


def accumulator_dtype(dtype) -> jnp.dtype:
    """Sums run in at least float32 so that low-precision params do not lose the small terms."""
    return jnp.promote_types(dtype, jnp.float32)


def one_hot(index: Array, size: int, dtype) -> Array:
    """The ``index``-th basis vector, built inside the loop so that no n-by-n matrix exists."""
    return (jnp.arange(size) == index).astype(dtype)


def diagonal_by_basis(
    quadratic_form: Callable[[Array], Array], size: int, dtype, chunk_size: int | None
) -> Array:
    """``[quadratic_form(e_0), ..., quadratic_form(e_{size-1})]`` with ``e_i`` the basis vectors.

    ``chunk_size`` basis vectors are handled at once (vmapped); the chunks run one
    after the other, so memory grows like ``chunk_size * size``, never ``size**2``.
    """

    def entry(index):
        return quadratic_form(one_hot(index, size, dtype))

    batch = None if chunk_size is None else min(int(chunk_size), size)
    return jax.lax.map(entry, jnp.arange(size), batch_size=batch)


def sum_over_leading_axis(
    term: Callable[[Any], Array], items: Any, count: int, chunk_size: int | None, out_like: Array
) -> Array:
    """``sum_k term(items[k])`` for the ``count`` items stacked along axis 0 of ``items``.

    The sum is accumulated with ``lax.scan`` over chunks of ``chunk_size`` items
    (vmapped inside a chunk), so at most ``chunk_size`` terms are alive at once.
    The accumulator has the shape of ``out_like`` and at least float32 precision.
    """
    chunk = 1 if chunk_size is None else min(int(chunk_size), count)
    acc_dtype = accumulator_dtype(out_like.dtype)
    chunk_sum = lambda xs: jnp.sum(jax.vmap(term)(xs).astype(acc_dtype), axis=0)

    num_chunks, remainder = divmod(count, chunk)
    total = jnp.zeros(out_like.shape, acc_dtype)
    if num_chunks:
        whole = jax.tree.map(
            lambda x: x[: num_chunks * chunk].reshape((num_chunks, chunk) + x.shape[1:]), items
        )

        def body(carry, xs):
            return carry + chunk_sum(xs), None

        total, _ = jax.lax.scan(body, total, whole)
    if remainder:
        rest = jax.tree.map(lambda x: x[num_chunks * chunk :], items)
        total = total + chunk_sum(rest)
    return total


def leading_size(tree: Any, name: str) -> int:
    """The common size of axis 0 of every leaf of ``tree`` (the number of examples)."""
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(tree)}
    if not sizes or None in sizes:
        raise ValueError(f"{name} must have a leading batch axis on every leaf.")
    if len(sizes) != 1:
        raise ValueError(f"{name} leaves disagree on the batch size: {sorted(sizes)}.")
    (size,) = sizes
    if size == 0:
        raise ValueError(f"{name} holds no examples.")
    return size
