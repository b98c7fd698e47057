"""Step -> value schedules: constant, polynomial, exponential, cosine, piecewise.

A schedule is a pure function of the (int32, possibly traced) step count; it
is evaluated inside ``update`` under ``jax.jit``, so it uses ``jax.numpy`` only
and never branches in Python on the count. Its hyperparameters are checked
when it is built.
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

import jax.numpy as jnp
import numpy as np

from optcore import base, validate

_LOG = logging.getLogger(__name__)


def constant_schedule(value: float) -> base.Schedule:
    r"""The schedule that returns ``value`` at every step: :math:`v_t = v`.

    Args:
      value: the constant value.
    """
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
        \tau = \mathrm{clip}(t - t_0, 0, T) / T, \qquad
        v_t = (v_0 - v_1)(1 - \tau)^{p} + v_1

    Args:
      init_value: :math:`v_0`, the value before ``transition_begin``.
      end_value: :math:`v_1`, the value after ``transition_begin + transition_steps``.
      power: the exponent :math:`p` (1 is linear).
      transition_steps: :math:`T`, the length of the transition; if not
        positive the schedule is constant at ``init_value`` (so a warmup of 0
        steps is allowed).
      transition_begin: :math:`t_0`, steps to hold ``init_value`` first
        (negative values are treated as 0).
    """
    if transition_steps <= 0:
        _LOG.info("A polynomial schedule with non-positive transition_steps is constant at %s.", init_value)
        return lambda count: init_value
    if transition_begin < 0:
        _LOG.info("transition_begin < 0 in a polynomial schedule; using 0.")
        transition_begin = 0

    def schedule(count):
        count = jnp.clip(count - transition_begin, 0, transition_steps)
        fraction = 1 - count / transition_steps
        return (init_value - end_value) * (fraction**power) + end_value

    return schedule


def linear_schedule(
    init_value: float,
    end_value: float,
    transition_steps: int,
    transition_begin: int = 0,
) -> base.Schedule:
    r"""Linear interpolation from ``init_value`` to ``end_value``.

    .. math::
        v_t = v_0 + (v_1 - v_0)\, \mathrm{clip}(t - t_0, 0, T) / T

    (the :func:`polynomial_schedule` of power 1).

    Args:
      init_value: :math:`v_0`.
      end_value: :math:`v_1`.
      transition_steps: :math:`T` (not positive: constant at ``init_value``).
      transition_begin: :math:`t_0`, steps to hold ``init_value`` first.
    """
    return polynomial_schedule(
        init_value=init_value,
        end_value=end_value,
        power=1,
        transition_steps=transition_steps,
        transition_begin=transition_begin,
    )


def piecewise_constant_schedule(
    init_value: float,
    boundaries_and_scales: Optional[Mapping[int, float]] = None,
) -> base.Schedule:
    r"""A value multiplied by a factor each time the step passes a boundary.

    .. math::
        v_t = v_0 \prod_{b:\ t \ge b} s_b

    Args:
      init_value: :math:`v_0`.
      boundaries_and_scales: ``{boundary b: scale s_b}``; the scale applies
        from step ``b`` on (as in Optax 0.2.8). Scales must be non-negative.
    """
    boundaries_and_scales = dict(boundaries_and_scales or {})
    for boundary, scale in boundaries_and_scales.items():
        validate.check_non_negative(f"boundaries_and_scales[{boundary!r}] (a scale)", scale)
    ordered = sorted(boundaries_and_scales.items())

    def schedule(count):
        value = init_value
        for boundary, scale in ordered:
            value = jnp.where(count >= boundary, value * scale, value)
        return value

    return schedule


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[float] = None,
) -> base.Schedule:
    r"""Exponential decay by ``decay_rate`` every ``transition_steps`` steps.

    .. math::
        v_t = v_0\, r^{(t - t_0)/T} \ \text{for } t > t_0, \qquad v_t = v_0 \text{ before}

    With ``staircase`` the exponent is floored; with ``end_value`` the value is
    bounded by it (from below if :math:`r < 1`, from above if :math:`r > 1`).

    Args:
      init_value: :math:`v_0`.
      transition_steps: :math:`T`; not positive makes the schedule constant.
      decay_rate: :math:`r`; 0 makes the schedule constant (as in Optax).
      transition_begin: :math:`t_0`, steps to hold ``init_value`` first
        (negative values are treated as 0).
      staircase: decay in discrete jumps every ``T`` steps.
      end_value: the bound the value never passes.
    """
    if transition_steps <= 0:
        _LOG.info("An exponential schedule with non-positive transition_steps is constant at %s.", init_value)
        return constant_schedule(init_value)
    if decay_rate == 0:
        _LOG.info("An exponential schedule with decay_rate 0 is constant at %s.", init_value)
        return constant_schedule(init_value)
    if transition_begin < 0:
        _LOG.info("transition_begin < 0 in an exponential schedule; using 0.")
        transition_begin = 0
    bound = None
    if end_value is not None:
        bound = jnp.maximum if decay_rate < 1.0 else jnp.minimum

    def schedule(count):
        steps_since_begin = count - transition_begin
        exponent = steps_since_begin / transition_steps
        if staircase:
            exponent = jnp.floor(exponent)
        value = jnp.where(steps_since_begin <= 0, init_value, init_value * jnp.power(decay_rate, exponent))
        if bound is not None:
            value = bound(value, end_value)
        return value

    return schedule


def cosine_decay_schedule(
    init_value: float,
    decay_steps: int,
    alpha: float = 0.0,
    exponent: float = 1.0,
) -> base.Schedule:
    r"""Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps``.

    .. math::
        v_t = v_0 \left[(1 - \alpha) \left(\tfrac12 \big(1 + \cos(\pi \min(t, T)/T)\big)\right)^{p}
        + \alpha\right]

    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, 2016.

    Args:
      init_value: :math:`v_0`.
      decay_steps: :math:`T`, positive.
      alpha: :math:`\alpha`, the final value as a fraction of ``init_value``.
      exponent: :math:`p`, sharpens (``> 1``) or flattens the curve.
    """
    if not decay_steps > 0:
        raise ValueError(f"cosine_decay_schedule needs a positive decay_steps, got {decay_steps!r}.")

    # Python ints as floats: a decay_steps (or count) past int32, 1e10 steps, would overflow
    # when it becomes an int32 array (as in Optax, which takes such schedules).
    steps = _int_as_float(decay_steps)

    def schedule(count):
        count = jnp.minimum(_int_as_float(count), steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / steps))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


def _int_as_float(x):
    return float(x) if isinstance(x, int) and not isinstance(x, bool) else x


def _linear_interpolate(start, end, fraction):
    return start + fraction * (end - start)


def _cosine_interpolate(start, end, fraction):
    return end + (start - end) * (0.5 * (1 + jnp.cos(jnp.pi * fraction)))


_INTERPOLATORS = {"linear": _linear_interpolate, "cosine": _cosine_interpolate}


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: float,
    boundaries_and_scales: Optional[Mapping[int, float]] = None,
) -> base.Schedule:
    r"""Interpolates between the values of a piecewise-constant schedule.

    With boundaries :math:`b_1 < \dots < b_n` (and :math:`b_0 = 0`), the value
    at :math:`b_k` is :math:`v_k = v_0 \prod_{j \le k} s_j`; between two
    boundaries it moves from :math:`v_{k}` to :math:`v_{k+1}` linearly or
    along a half cosine, and after :math:`b_n` it stays at :math:`v_n`.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: :math:`v_0`.
      boundaries_and_scales: ``{boundary b_k: scale s_k}`` with non-negative
        integer boundaries and non-negative scales; empty: constant.
    """
    if interpolate_type not in _INTERPOLATORS:
        raise ValueError(f"interpolate_type must be 'linear' or 'cosine', got {interpolate_type!r}.")
    interpolate = _INTERPOLATORS[interpolate_type]
    if not boundaries_and_scales:
        return constant_schedule(init_value)
    ordered = sorted(boundaries_and_scales.items())
    for boundary, scale in ordered:
        validate.check_non_negative("boundaries_and_scales (a boundary)", boundary)
        validate.check_non_negative(f"boundaries_and_scales[{boundary!r}] (a scale)", scale)
    # A boundary at 0 makes a zero-length first segment; the value jumps there.
    bounds = jnp.asarray([0] + [boundary for boundary, _ in ordered])
    # In JAX's default float: float32, float64 under x64 (the products are taken in float64 either way).
    values = jnp.asarray(np.cumprod([init_value] + [scale for _, scale in ordered]), dtype=jnp.result_type(float))
    last = len(ordered)

    def schedule(count):
        count = jnp.asarray(count)
        # segment k runs from bounds[k] to bounds[k+1]; k = last means "past the end".
        segment = jnp.clip(jnp.searchsorted(bounds, count, side="right") - 1, 0, last)
        inner = jnp.minimum(segment, last - 1)
        length = bounds[inner + 1] - bounds[inner]
        fraction = (count - bounds[inner]) / jnp.maximum(length, 1)
        value = interpolate(values[inner], values[inner + 1], fraction)
        return jnp.where(segment == last, values[last], value)

    return schedule


def _check_onecycle(transition_steps: int, peak_value: float) -> None:
    if transition_steps <= 0:
        raise ValueError(f"A one-cycle schedule needs a positive transition_steps, got {transition_steps!r}.")
    validate.check_non_negative("peak_value", peak_value)


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> base.Schedule:
    r"""The linear one-cycle policy: up to ``peak_value``, back down, then annealed.

    Piecewise linear through :math:`(0, \eta/d)`, :math:`(\lfloor p_s T\rfloor, \eta)`,
    :math:`(\lfloor p_f T\rfloor, \eta/d)` and :math:`(T, \eta/(d\, d_f))`, constant after.

    Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates <https://arxiv.org/abs/1708.07120>`_, 2017.

    Args:
      transition_steps: :math:`T`, positive.
      peak_value: :math:`\eta`, the maximum.
      pct_start: :math:`p_s`, fraction of the steps spent rising.
      pct_final: :math:`p_f`, fraction of the steps at which the descent ends.
      div_factor: :math:`d`, the initial value is ``peak_value / div_factor``.
      final_div_factor: :math:`d_f`, the final value is ``initial / final_div_factor``.
    """
    _check_onecycle(transition_steps, peak_value)
    validate.check_range("pct_start", pct_start, 0.0, 1.0, high_inclusive=True)
    validate.check_range("pct_final", pct_final, 0.0, 1.0, high_inclusive=True)
    if pct_start >= pct_final:
        raise ValueError(f"pct_start ({pct_start}) must be smaller than pct_final ({pct_final}).")
    validate.check_range("div_factor", div_factor, low=0.0, low_inclusive=False)
    validate.check_range("final_div_factor", final_div_factor, low=0.0, low_inclusive=False)
    return piecewise_interpolate_schedule(
        "linear",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(pct_final * transition_steps): 1.0 / div_factor,
            transition_steps: 1.0 / final_div_factor,
        },
    )


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: float,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> base.Schedule:
    r"""The cosine one-cycle policy: a half-cosine rise to ``peak_value``, then a half-cosine fall.

    Cosine interpolation through :math:`(0, \eta/d)`, :math:`(\lfloor p_s T\rfloor, \eta)`
    and :math:`(T, \eta/(d\, d_f))`, constant after.

    Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates <https://arxiv.org/abs/1708.07120>`_, 2017.

    Args:
      transition_steps: :math:`T`, positive.
      peak_value: :math:`\eta`, the maximum.
      pct_start: :math:`p_s`, fraction of the steps spent rising.
      div_factor: :math:`d`, the initial value is ``peak_value / div_factor``.
      final_div_factor: :math:`d_f`, the final value is ``initial / final_div_factor``.
    """
    _check_onecycle(transition_steps, peak_value)
    validate.check_range("pct_start", pct_start, 0.0, 1.0, high_inclusive=True)
    validate.check_range("div_factor", div_factor, low=0.0, low_inclusive=False)
    validate.check_range("final_div_factor", final_div_factor, low=0.0, low_inclusive=False)
    return piecewise_interpolate_schedule(
        "cosine",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(transition_steps): 1.0 / (div_factor * final_div_factor),
        },
    )
