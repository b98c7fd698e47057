"""Numerically safe scalar and array helpers used across optcore.

Layer 0: depends on JAX only.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp


def safe_increment(count: jax.Array) -> jax.Array:
    r"""Returns ``count + 1``, saturating at the dtype's largest value.

    .. math::
        c \leftarrow \min(c + 1, c_{\max})

    Step counters are int32; a run longer than 2**31 steps keeps the last
    value instead of wrapping around to a negative count.

    Args:
      count: an integer or floating counter.
    """
    count = jnp.asarray(count)
    if jnp.issubdtype(count.dtype, jnp.integer):
        max_value = jnp.iinfo(count.dtype).max
    elif jnp.issubdtype(count.dtype, jnp.floating):
        max_value = jnp.finfo(count.dtype).max
    else:  # bool and complex counters have no order to saturate in (Optax raises ValueError too)
        raise ValueError(
            f"Cannot safely increment count with dtype {count.dtype}, valid dtypes are subdtypes of "
            '"jnp.integer" or "jnp.floating".'
        )
    # In the counter's dtype: a Python int above int32 (uint32's maximum) cannot be compared as is.
    max_value = jnp.array(max_value, dtype=count.dtype)
    one = jnp.array(1, dtype=count.dtype)
    return jnp.where(count < max_value, count + one, max_value)


# Optax 0.2.8 accepts any counter dtype here; the name stays for compatibility.
safe_int32_increment = safe_increment


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2``, real for complex ``x``."""
    if jnp.iscomplexobj(x):
        return jnp.real(jnp.conj(x) * x)
    return jnp.square(x)


def safe_norm(x, min_norm, ord=None, axis=None, keepdims=False):  # pylint: disable=redefined-builtin
    r"""``max(||x||, min_norm)`` with a gradient that is finite at ``x = 0``.

    .. math::
        \operatorname{safe\_norm}(x) = \max(\|x\|, m)

    The norm is computed only where it exceeds ``min_norm``; elsewhere the
    input is replaced by ones so the derivative of ``sqrt`` is never taken at 0.

    Args:
      x: an array.
      min_norm: :math:`m`, the smallest value returned.
      ord: the norm order, as in :func:`jax.numpy.linalg.norm`.
      axis: the axes of the norm, as in :func:`jax.numpy.linalg.norm`.
      keepdims: keep the reduced axes with size one.
    """
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    x = jnp.where(norm <= min_norm, jnp.ones_like(x), x)
    norm = jnp.squeeze(norm, axis=axis) if not keepdims else norm
    masked_norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    return jnp.where(norm <= min_norm, min_norm, masked_norm)


def safe_root_mean_squares(x, min_rms):
    r"""``max(sqrt(mean(|x|**2)), min_rms)`` with a finite gradient at ``x = 0``.

    .. math::
        \max\left(\sqrt{\tfrac{1}{n}\textstyle\sum_i |x_i|^2}, r\right)

    Args:
      x: an array (complex entries count by their modulus).
      min_rms: :math:`r`, the smallest value returned.
    """
    rms = jnp.sqrt(jnp.mean(abs_sq(x)))
    x = jnp.where(rms <= min_rms, jnp.ones_like(x), x)
    return jnp.where(rms <= min_rms, min_rms, jnp.sqrt(jnp.mean(abs_sq(x))))


def global_norm(updates) -> jax.Array:
    r"""The l2 norm of all leaves of ``updates`` taken together (deprecated).

    .. math::
        \|u\|_2 = \sqrt{\textstyle\sum_i \|u_i\|_2^2}

    Deprecated like in Optax: use :func:`optcore.tree_utils.tree_norm`.

    Args:
      updates: a pytree of arrays.
    """
    warnings.warn(
        "optcore.global_norm is deprecated in favor of optcore.tree.norm",  # Optax's wording
        DeprecationWarning,
        stacklevel=2,
    )
    leaves = jax.tree.leaves(updates)
    return jnp.sqrt(sum(jnp.sum(abs_sq(leaf)) for leaf in leaves)) if leaves else jnp.zeros([])


def typed_sharding(x):
    """The sharding of ``x`` where it is part of its type (mesh axes of ``AxisType.Explicit``), else ``None``.

    JAX's default mesh (``jax.make_mesh`` since JAX 0.7) has explicit axes:
    there an array's split is known while tracing (``jax.typeof(x).sharding``)
    and operations whose result split would be ambiguous (a contraction over
    a split axis) are type errors instead of being resolved by the compiler.
    ``None`` for arrays on auto axes, unsplit arrays and JAX versions before
    sharding in types.
    """
    typeof = getattr(jax, "typeof", None)
    sharding = getattr(typeof(x), "sharding", None) if typeof is not None else None
    spec = getattr(sharding, "spec", None)
    if spec is None or all(entry is None for entry in spec):
        return None
    return sharding


def vdot(x, y, precision=None) -> jax.Array:
    r"""The inner product :math:`\sum_i \bar x_i y_i` over all entries, as :func:`jax.numpy.vdot`.

    For arrays split over explicit mesh axes (:func:`typed_sharding`) the
    contraction of ``jnp.vdot`` is a type error (JAX asks for the split of a
    scalar result); there the products are summed instead, an all-reduce that
    gives the same value up to the order of the additions.
    """
    if typed_sharding(x) is not None or typed_sharding(y) is not None:
        return jnp.sum(jnp.conj(x) * y)
    return jnp.vdot(x, y, precision=precision)


__all__ = [
    "abs_sq",
    "global_norm",
    "safe_increment",
    "safe_int32_increment",
    "safe_norm",
    "safe_root_mean_squares",
    "scale_gradient",
    "typed_sharding",
    "vdot",
]


@jax.custom_vjp
def scale_gradient(inputs, scale):
    """Identity on the forward pass; multiplies the gradient by ``scale`` on the backward pass.

    ``jax.grad(lambda x: f(scale_gradient(x, s)))(x) == s * jax.grad(f)(x)``.
    ``scale`` is a scalar (it gets no gradient of its own).

    Args:
      inputs: a pytree of arrays, returned unchanged.
      scale: the factor applied to the incoming gradient.
    """
    return inputs


def _scale_gradient_fwd(inputs, scale):
    return inputs, scale


def _scale_gradient_bwd(scale, g):
    scaled = jax.tree.map(lambda t: (scale * t).astype(jnp.asarray(t).dtype), g)
    return (scaled, None)


scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)
