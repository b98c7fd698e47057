"""Numerically safe scalar and array helpers used across optcore.

Layer 0: depends on JAX only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def safe_increment(count: jax.Array) -> jax.Array:
    """Returns ``count + 1``, saturating at the dtype's largest value.

    Step counters are int32; a run longer than 2**31 steps keeps the last
    value instead of wrapping around to a negative count.
    """
    count = jnp.asarray(count)
    if jnp.issubdtype(count.dtype, jnp.integer):
        max_value = jnp.iinfo(count.dtype).max
    else:
        max_value = jnp.finfo(count.dtype).max
    one = jnp.array(1, dtype=count.dtype)
    return jnp.where(count < max_value, count + one, max_value)


def safe_int32_increment(count: jax.Array) -> jax.Array:
    """``safe_increment`` for an int32 counter (checked)."""
    count = jnp.asarray(count)
    if count.dtype != jnp.int32:
        raise ValueError(f"safe_int32_increment expects an int32 count, got {count.dtype}.")
    return safe_increment(count)


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2``, real for complex ``x``."""
    if jnp.iscomplexobj(x):
        return jnp.real(jnp.conj(x) * x)
    return jnp.square(x)


def safe_norm(x, min_norm, ord=None, axis=None, keepdims=False):  # pylint: disable=redefined-builtin
    """``max(||x||, min_norm)`` with a gradient that is finite at ``x = 0``.

    The norm is computed only where it exceeds ``min_norm``; elsewhere the
    input is replaced by ones so the derivative of ``sqrt`` is never taken at 0.
    """
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    x = jnp.where(norm <= min_norm, jnp.ones_like(x), x)
    norm = jnp.squeeze(norm, axis=axis) if not keepdims else norm
    masked_norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    return jnp.where(norm <= min_norm, min_norm, masked_norm)


def safe_root_mean_squares(x, min_rms):
    """``max(sqrt(mean(x**2)), min_rms)`` with a finite gradient at ``x = 0``."""
    rms = jnp.sqrt(jnp.mean(jnp.square(x)))
    x = jnp.where(rms <= min_rms, jnp.ones_like(x), x)
    return jnp.where(rms <= min_rms, min_rms, jnp.sqrt(jnp.mean(jnp.square(x))))


def global_norm(updates) -> jax.Array:
    """The l2 norm of all leaves of ``updates`` taken together: ``sqrt(sum_i ||u_i||**2)``."""
    return jnp.sqrt(sum(jnp.sum(abs_sq(leaf)) for leaf in jax.tree.leaves(updates)))


__all__ = [
    "abs_sq",
    "global_norm",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
]
