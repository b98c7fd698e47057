"""Helpers shared by the scaling transforms: hyperparameters as float32 arrays.

Every hyperparameter enters the arithmetic as a float32 array, whether it was
given as a Python float or injected as a (traced) array. Both paths then run
the same float32 operations, so an optimizer built with floats and the same one
whose hyperparameters are injected give bit-identical results (Optax issue
583), and array hyperparameters are traced rather than baked into the
compiled program (Optax issue 577).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optcore import validate


def f32(value: Any) -> jax.Array:
    """``value`` as a float32 array (a traced value stays traced).

    No optimization barrier: XLA compiles the same arithmetic for a constant
    and an injected value (``tests/test_inject.py`` checks the bits), and a
    barrier on every hyperparameter cost ~15% of the compile time of a
    1000-leaf Adam step (issue 8).
    """
    return jnp.asarray(value, dtype=jnp.float32)


def is_none(x: Any) -> bool:
    return x is None


def cast_like(tree: Any, reference: Any) -> Any:
    """Casts each leaf of ``tree`` to the dtype of the matching ``reference`` leaf."""
    return jax.tree.map(
        lambda x, r: None if x is None else jnp.asarray(x).astype(jnp.asarray(r).dtype),
        tree,
        reference,
        is_leaf=is_none,
    )


def cast_promoted(tree: Any, *references: Any) -> Any:
    """Casts each leaf of ``tree`` to the promoted dtype of the matching leaves of ``references``.

    The dtype Optax's arithmetic gives: its hyperparameters are Python floats,
    which never promote, so a result has the dtype JAX's promotion of the
    arrays involved gives (gradient, stored moments). optcore computes in
    float32 (its hyperparameters are float32 arrays) and casts back to that
    dtype: bf16 gradients with a float32 ``mu`` give a float32 update, rounded
    once by ``apply_updates`` rather than twice.
    """
    return jax.tree.map(
        lambda x, *refs: None if x is None else jnp.asarray(x).astype(jnp.result_type(*refs)),
        tree,
        *references,
        is_leaf=is_none,
    )


def dtype_or_none(dtype: Any):
    """``jnp.dtype(dtype)``, or ``None`` for ``None``."""
    return None if dtype is None else jnp.dtype(dtype)


def check_beta(name: str, value: Any) -> None:
    """A bias-corrected decay rate must lie in ``[0, 1)`` (``1`` divides by zero)."""
    validate.check_range(name, value, low=0.0, high=1.0, high_inclusive=False)


def check_positive(name: str, value: Any) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is not strictly positive."""
    validate.check_range(name, value, low=0.0, low_inclusive=False)
