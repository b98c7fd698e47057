"""Argument checks and dtype helpers shared by the loss modules (private)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Half-precision inputs are computed in float32 and cast back: squares and
# exponentials of moderately large logits overflow float16 otherwise.
_HALF_DTYPES = (jnp.float16, jnp.bfloat16)


def as_float(x, name: str) -> jax.Array:
    """``x`` as a floating array; raises TypeError naming ``name`` otherwise."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {x.dtype}.")
    return x


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype in which to compute a loss whose inputs have ``dtype``."""
    return jnp.float32 if dtype in _HALF_DTYPES else jnp.dtype(dtype)


def upcast(x: jax.Array) -> jax.Array:
    """``x`` in its computation dtype (float32 for half precision)."""
    return x.astype(compute_dtype(x.dtype))


def check_broadcastable(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    """Raises ValueError naming both shapes if ``a`` and ``b`` do not broadcast."""
    try:
        jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
    except ValueError:
        raise ValueError(
            f"{name_a} and {name_b} have incompatible shapes: "
            f"{name_a}.shape={jnp.shape(a)} and {name_b}.shape={jnp.shape(b)}."
        ) from None


def check_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    """Raises ValueError naming both shapes unless they are equal."""
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got "
            f"{name_a}.shape={jnp.shape(a)} and {name_b}.shape={jnp.shape(b)}."
        )


def class_axes(axis, ndim: int) -> tuple[int, ...]:
    """``axis`` (an int or a tuple of ints) as a tuple of non-negative axes of an ``ndim``-d array.

    Raises TypeError for another type and ValueError for an axis out of range
    or given twice, naming the axis.
    """
    if isinstance(axis, (bool, jnp.bool_)) or not isinstance(axis, (int, tuple)):
        raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r} of type {type(axis).__name__}.")
    axes = (axis,) if isinstance(axis, int) else axis
    normalized = []
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}.")
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for logits with {ndim} dimensions (axis={axis!r}).")
        normalized.append(a % ndim)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"axis {axis!r} names the same dimension twice.")
    return tuple(normalized)


def check_integer_labels(logits: jax.Array, labels: jax.Array, axis: int) -> jax.Array:
    """Checks that integer ``labels`` index ``logits`` along ``axis``."""
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}.")
    expected = tuple(s for i, s in enumerate(logits.shape) if i != axis % logits.ndim)
    if labels.shape != expected:
        raise ValueError(
            f"labels must have the shape of logits without axis {axis}: expected "
            f"labels.shape={expected} for logits.shape={logits.shape}, got labels.shape={labels.shape}."
        )
    return labels


def is_concrete(x) -> bool:
    """Whether ``x`` holds concrete values (not traced under jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)
