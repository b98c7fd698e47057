"""Scaling by constants, schedules and learning rates."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from optcore import validate, base, numerics

ScaleState = base.EmptyState


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: the step count (int32)."""

    count: jax.Array


def scale(step_size: float) -> base.GradientTransformation:
    r"""Scales updates by a fixed factor: :math:`u \leftarrow \alpha u`.

    Args:
      step_size: the factor :math:`\alpha` (not negated: use ``-lr`` for descent).
    """

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: step_size * g, updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def scale_by_schedule(step_size_fn: base.Schedule) -> base.GradientTransformation:
    r"""Scales updates by a schedule of the step count: :math:`u \leftarrow s(t) u`.

    Args:
      step_size_fn: a function from the (int32) step count to a scalar.
    """
    if not callable(step_size_fn):
        raise TypeError(f"step_size_fn must be callable (a schedule), got {type(step_size_fn).__name__}.")

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        step_size = step_size_fn(state.count)
        updates = jax.tree.map(lambda g: jnp.asarray(step_size, dtype=g.dtype) * g, updates)
        return updates, ScaleByScheduleState(count=numerics.safe_increment(state.count))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: base.ScalarOrSchedule = None,
    *,
    flip_sign: bool = True,
) -> base.GradientTransformation:
    r"""Scales by a learning rate, negated for descent: :math:`u \leftarrow -\eta u`.

    Args:
      learning_rate: a scalar or a schedule of the step count.
      flip_sign: multiply by ``-learning_rate`` (the default) rather than ``learning_rate``.
    """
    if learning_rate is None:
        raise ValueError("scale_by_learning_rate needs a learning_rate (a number or a schedule).")
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    validate.check_non_negative("learning_rate", learning_rate)
    return scale(sign * learning_rate)


def scale_by_sign() -> base.GradientTransformation:
    r"""Replaces each update by its sign: :math:`u \leftarrow \mathrm{sign}(u)`."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(jnp.sign, updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def _optional_dtype(dtype) -> Optional[jnp.dtype]:
    return None if dtype is None else jnp.dtype(dtype)
