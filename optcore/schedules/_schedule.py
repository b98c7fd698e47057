"""Step -> value schedules."""

from __future__ import annotations

import logging

import jax.numpy as jnp

from optcore import base


def constant_schedule(value: float) -> base.Schedule:
    """The schedule that returns ``value`` at every step."""
    return lambda count: value


def polynomial_schedule(
    init_value: float,
    end_value: float,
    power: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> base.Schedule:
    r"""Polynomial interpolation from ``init_value`` to ``end_value``.

    .. math::
        t = \mathrm{clip}(\mathrm{count} - \mathrm{transition\_begin}, 0, T) / T, \qquad
        v = (v_0 - v_1)(1 - t)^{p} + v_1

    Args:
      init_value: value before ``transition_begin``.
      end_value: value after ``transition_begin + transition_steps``.
      power: the exponent ``p`` (1 is linear).
      transition_steps: ``T``, the number of steps of the transition; if not
        positive the schedule is constant at ``init_value``.
      transition_begin: steps to hold ``init_value`` before the transition.
    """
    if transition_steps <= 0:
        logging.info("A polynomial schedule with non-positive transition_steps is constant at %s.", init_value)
        return lambda count: init_value
    if transition_begin < 0:
        logging.info("transition_begin < 0 in a polynomial schedule; using 0.")
        transition_begin = 0

    def schedule(count):
        count = jnp.clip(count - transition_begin, 0, transition_steps)
        fraction = 1 - count / transition_steps
        return (init_value - end_value) * (fraction**power) + end_value

    return schedule
