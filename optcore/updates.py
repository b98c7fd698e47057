"""Applying updates to parameters.

Layer 0: depends on JAX only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from optcore import validate


def _is_none(x: Any) -> bool:
    return x is None


def apply_updates(params: Any, updates: Any) -> Any:
    """Returns ``params + updates`` leaf by leaf, each in its param's dtype.

    Leaves that are ``None`` in ``params`` stay ``None``. Updates whose tree
    or leaf shapes differ from the params raise a ``ValueError`` naming the
    first mismatching path (instead of broadcasting).
    """
    # Integer params with (zero) updates are legitimate here, e.g. behind set_to_zero.
    validate.check_tree_match(updates, params, what="updates", against="params", floating=False)
    return jax.tree.map(
        lambda p, u: None if p is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
        params,
        updates,
        is_leaf=_is_none,
    )


def incremental_update(new_tensors: Any, old_tensors: Any, step_size: Any) -> Any:
    r"""Polyak averaging: :math:`\tau \cdot \mathrm{new} + (1-\tau) \cdot \mathrm{old}`.

    Args:
      new_tensors: the latest values.
      old_tensors: the running average.
      step_size: :math:`\tau` in [0, 1].
    """
    return jax.tree.map(
        lambda new, old: None if new is None else step_size * new + (1.0 - step_size) * old,
        new_tensors,
        old_tensors,
        is_leaf=_is_none,
    )


def periodic_update(new_tensors: Any, old_tensors: Any, steps: jax.Array, update_period: int) -> Any:
    """Returns ``new_tensors`` every ``update_period`` steps, else ``old_tensors``."""
    return jax.lax.cond(
        jnp.mod(steps, update_period) == 0,
        lambda _: new_tensors,
        lambda _: old_tensors,
        None,
    )


__all__ = ["apply_updates", "incremental_update", "periodic_update"]
