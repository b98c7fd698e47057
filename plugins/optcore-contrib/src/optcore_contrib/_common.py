"""Small helpers shared by the contrib modules (private to the plugin)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

import optcore
from optcore import base, validate


def dtype_or_none(dtype: Optional[Any]):
    """``jnp.dtype(dtype)``, or None when no dtype is asked for."""
    return None if dtype is None else jnp.dtype(dtype)


def f32(value: Any) -> jax.Array:
    """``value`` as a float32 array (a traced value stays traced).

    Every float hyperparameter enters the arithmetic of an ``update`` through
    this, so a Python float and the float32 array that
    ``optcore.inject_hyperparams`` passes in go through the same float32
    operations (``1 - b1`` included) and give bit-identical results.
    """
    return jnp.asarray(value, dtype=jnp.float32)


def value_at(hyperparam: Any, count: jax.Array) -> Any:
    """The value of a hyperparameter that may be a schedule of the step count."""
    return hyperparam(count) if callable(hyperparam) else hyperparam


def learning_rate_at(learning_rate: Any, count: jax.Array) -> Any:
    """The learning rate at ``count``; a size-1 array (``jnp.array([1e-3])``) acts as a scalar.

    Optax broadcasts such a learning rate into the updates (a scalar param
    becomes shape ``(1,)``); here the params keep their shapes.
    """
    return validate.as_scalar("learning_rate", value_at(learning_rate, count))


def own_copy(tree: Any) -> Any:
    """A copy of ``tree`` in new buffers, for a state field that starts at the params.

    A state leaf that *is* a params buffer breaks a step jitted with
    ``donate_argnums`` over params and state: XLA refuses to donate one buffer
    twice, and after donating the params the state would read freed memory.
    The state needs its own copy of these values anyway once the params move.
    """
    return jax.tree.map(jnp.copy, tree)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """The real inner product of two trees taken as one vector."""
    parts = [jnp.sum(jnp.real(jnp.conj(x) * y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return sum(parts) if parts else jnp.array(0.0)


def tree_sum(tree: Any) -> jax.Array:
    parts = [jnp.sum(x) for x in jax.tree.leaves(tree)]
    return sum(parts) if parts else jnp.array(0.0)


def widen(tree: Any) -> Any:
    """Floating leaves in at least float32 (other leaves unchanged).

    For updates whose constants (an ``eps`` of 1e-8, a step size of 1e-6)
    underflow in float16/bfloat16: the arithmetic runs in float32 and the
    results are cast back with :func:`cast_like`.
    """

    def leaf(x):
        x = jnp.asarray(x)
        return x.astype(jnp.promote_types(x.dtype, jnp.float32)) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(leaf, tree)


def cast_like(tree: Any, like: Any) -> Any:
    """Each leaf of ``tree`` in the dtype of the matching leaf of ``like``."""
    return jax.tree.map(lambda x, ref: jnp.asarray(x).astype(jnp.asarray(ref).dtype), tree, like)


def cast_promoted(tree: Any, *references: Any) -> Any:
    """Each leaf of ``tree`` in the promoted dtype of the matching leaves of ``references``.

    The dtype Optax's arithmetic with Python-float hyperparameters gives (they
    never promote): float32 updates for bf16 gradients and a float32 moment,
    whatever dtype the float32 hyperparameters computed them in.
    """
    return jax.tree.map(lambda x, *refs: jnp.asarray(x).astype(jnp.result_type(*refs)), tree, *references)


def safe_ratio(numerator: jax.Array, denominator: jax.Array, fallback: Any) -> jax.Array:
    """``numerator / denominator``, or ``fallback`` where the denominator is 0 (no 0/0 NaN)."""
    positive = denominator != 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), fallback)


def require_params(params: Any, name: str, updates: Any = None) -> None:
    """``params`` must be given and, when ``updates`` are, match them leaf for leaf.

    The check (structure, shapes and floating dtypes, naming the first
    mismatching path) runs at trace time, before any tree map over both.
    """
    if params is None:
        raise ValueError(f"{name}: {base.NO_PARAMS_MSG}")
    if updates is not None:
        validate.check_tree_match(updates, params, against="params")


def with_decay_and_lr(
    scaler: base.GradientTransformation,
    learning_rate: base.ScalarOrSchedule,
    weight_decay: Any,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    """``chain(scaler, add_decayed_weights(weight_decay, mask), scale_by_learning_rate(lr))``.

    The usual composition of a ``scale_by_*`` preconditioner into a full
    optimizer with decoupled weight decay.
    """
    return optcore.chain(
        scaler,
        optcore.add_decayed_weights(weight_decay, mask),
        optcore.scale_by_learning_rate(learning_rate),
    )


def check_callable_or(name: str, value: Any, check: Callable[[str, Any], None]) -> None:
    """Runs ``check`` on ``value`` unless it is a schedule."""
    if not callable(value):
        check(name, value)


def ignore_extra_args(update_fn):
    """An ``update`` that accepts and drops ``**extra_args``."""

    def update_with_extra_args(updates, state, params=None, **extra_args):
        del extra_args
        return update_fn(updates, state, params)

    return update_with_extra_args
