"""Constraining the updates: keeping params non-negative, replacing NaNs."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optcore import base

NonNegativeParamsState = base.EmptyState


class ZeroNansState(NamedTuple):
    """State of :func:`zero_nans`: per leaf, whether the last updates held a NaN."""

    found_nan: base.Params


def keep_params_nonnegative() -> base.GradientTransformation:
    r"""Changes the updates so that no param becomes negative.

    .. math::
        u \leftarrow \begin{cases} -\theta & \theta + u < 0 \\ u & \text{otherwise}\end{cases}

    so :math:`\theta + u \ge 0` after :func:`optcore.apply_updates` (a
    projection onto the non-negative orthant, for params that start non-negative).
    Takes no arguments; requires ``params`` in ``update``.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        updates = jax.tree.map(lambda p, u: jnp.where(p + u < 0.0, -p, u), params, updates)
        return updates, state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def zero_nans() -> base.GradientTransformation:
    r"""Replaces NaN update coordinates by zero and records which leaves had any.

    .. math::
        u_i \leftarrow \begin{cases} 0 & u_i = \mathrm{NaN} \\ u_i & \text{otherwise}\end{cases}

    The state's ``found_nan`` holds one boolean per leaf for the last step, so
    a training loop can log where NaNs appeared. Takes no arguments.
    """

    def init_fn(params):
        return ZeroNansState(found_nan=jax.tree.map(lambda _: jnp.array(False, dtype=jnp.bool_), params))

    def update_fn(updates, state, params=None):
        del state, params
        found_nan = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
        updates = jax.tree.map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates)
        return updates, ZeroNansState(found_nan=found_nan)

    return base.GradientTransformation(init_fn, update_fn)
