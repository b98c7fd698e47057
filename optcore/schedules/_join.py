"""Schedules made of other schedules: joins, warmups and warm restarts."""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import jax.numpy as jnp

from optcore import base, validate
from optcore.schedules._schedule import cosine_decay_schedule, exponential_decay, linear_schedule


def join_schedules(schedules: Sequence[base.Schedule], boundaries: Sequence[int]) -> base.Schedule:
    r"""Runs ``schedules`` one after the other, each restarting its count at a boundary.

    .. math::
        v_t = f_k(t - b_k) \quad \text{for } b_k \le t < b_{k+1}, \qquad b_0 = 0

    Args:
      schedules: the schedules :math:`f_0, \dots, f_n`.
      boundaries: the steps :math:`b_1 \le \dots \le b_n` at which the next
        schedule takes over (one fewer than ``schedules``).
    """
    schedules = list(schedules)
    boundaries = list(boundaries)
    if not schedules:
        raise ValueError("join_schedules needs at least one schedule.")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join_schedules needs one boundary fewer than schedules: got {len(schedules)} schedules "
            f"and {len(boundaries)} boundaries."
        )

    def schedule(step):
        value = schedules[0](step)
        for boundary, later in zip(boundaries, schedules[1:]):
            value = jnp.where(step < boundary, value, later(step - boundary))
        return value

    return schedule


def warmup_constant_schedule(init_value: float, peak_value: float, warmup_steps: int) -> base.Schedule:
    r"""A linear warmup to ``peak_value``, then constant.

    .. math::
        v_t = v_0 + (\eta - v_0) \min(t, W)/W

    Args:
      init_value: :math:`v_0`, the value at step 0.
      peak_value: :math:`\eta`, the value from step ``warmup_steps`` on.
      warmup_steps: :math:`W` (0: constant at ``peak_value``).
    """
    validate.check_non_negative("warmup_steps", warmup_steps)
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps), lambda count: peak_value],
        [warmup_steps],
    )


def warmup_cosine_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    decay_steps: int,
    end_value: float = 0.0,
    exponent: float = 1.0,
) -> base.Schedule:
    r"""A linear warmup to ``peak_value``, then a cosine decay to ``end_value``.

    .. math::
        v_t = \begin{cases}
          v_0 + (\eta - v_0)\, t / W & t < W \\
          v_1 + (\eta - v_1) \left(\tfrac12 \big(1 + \cos(\pi \tfrac{\min(t, T) - W}{T - W})\big)\right)^{p} & t \ge W
        \end{cases}

    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, 2016.

    Args:
      init_value: :math:`v_0`, the value at step 0.
      peak_value: :math:`\eta`, the value at the end of the warmup.
      warmup_steps: :math:`W`, the length of the warmup (may be 0).
      decay_steps: :math:`T`, the total length of warmup and decay
        (not the decay alone); must exceed ``warmup_steps``.
      end_value: :math:`v_1`, the value from step ``decay_steps`` on.
      exponent: :math:`p`, the exponent of the cosine factor.
    """
    validate.check_non_negative("warmup_steps", warmup_steps)
    if decay_steps - warmup_steps <= 0:
        raise ValueError(
            f"warmup_cosine_decay_schedule needs decay_steps > warmup_steps (decay_steps counts the "
            f"warmup too), got decay_steps={decay_steps!r}, warmup_steps={warmup_steps!r}."
        )
    # The cosine decays towards alpha * peak; alpha is undefined for a zero peak.
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )


def warmup_exponential_decay_schedule(
    init_value: float,
    peak_value: float,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Optional[float] = None,
) -> base.Schedule:
    r"""A linear warmup to ``peak_value``, then an exponential decay.

    .. math::
        v_t = \begin{cases}
          v_0 + (\eta - v_0)\, t / W & t < W \\
          \eta\, r^{(t - W - t_0)/T} & t \ge W
        \end{cases}

    (see :func:`exponential_decay` for ``transition_begin`` :math:`t_0`,
    ``staircase`` and ``end_value``).

    Args:
      init_value: :math:`v_0`, the value at step 0.
      peak_value: :math:`\eta`, the value at the end of the warmup.
      warmup_steps: :math:`W`, the length of the warmup.
      transition_steps: :math:`T`, the steps per factor :math:`r`.
      decay_rate: :math:`r`.
      transition_begin: :math:`t_0`, steps after the warmup before decaying.
      staircase: decay in discrete jumps.
      end_value: the bound the value never passes.
    """
    validate.check_non_negative("warmup_steps", warmup_steps)
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            exponential_decay(peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value),
        ],
        [warmup_steps],
    )


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, float]]) -> base.Schedule:
    r"""Stochastic gradient descent with warm restarts: warmup-cosine cycles joined end to end.

    Cycle :math:`k` is ``warmup_cosine_decay_schedule(**cosine_kwargs[k])`` and
    lasts its ``decay_steps``; the next cycle restarts its count at 0.

    Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_, 2016.

    Args:
      cosine_kwargs: one dict of :func:`warmup_cosine_decay_schedule`
        arguments per cycle (``init_value``, ``peak_value``, ``warmup_steps``,
        ``decay_steps``, optionally ``end_value`` and ``exponent``).
    """
    schedules, boundaries, step = [], [], 0
    for kwargs in cosine_kwargs:
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        step += kwargs["decay_steps"]
        boundaries.append(step)
    if not schedules:
        raise ValueError("sgdr_schedule needs at least one cycle in cosine_kwargs.")
    return join_schedules(schedules, boundaries[:-1])
