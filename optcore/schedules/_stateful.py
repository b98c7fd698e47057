"""Stateful schedules: schedules that carry their own state between steps.

A step -> value schedule only sees the step count. A stateful schedule keeps a
state of its own and may read the extra arguments of ``update`` (the loss
``value``, say), which is what ``inject_hyperparams`` passes it.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from optcore import base, numerics


@runtime_checkable
class StatefulSchedule(Protocol):
    """The protocol of a schedule with state.

    ``state = s.init()``, ``value = s(state, **extra_args)``, then
    ``state = s.update(state, **extra_args)`` once per step.
    """

    def init(self) -> base.ScheduleState:
        """The state before the first step."""

    def update(self, state: base.ScheduleState, **extra_args: Any) -> base.ScheduleState:
        """The state for the next step."""

    def __call__(self, state: base.ScheduleState, **extra_args: Any) -> jax.typing.ArrayLike:
        """The value for the current step."""


class WrappedScheduleState(NamedTuple):
    """State of :class:`WrappedSchedule`: the step count."""

    count: jax.Array  # shape=(), dtype=int32


class WrappedSchedule:
    """A step -> value schedule seen as a :class:`StatefulSchedule` whose state is the count.

    Args:
      schedule_fn: a function of the int32 step count.
    """

    def __init__(self, schedule_fn: base.Schedule):
        if not callable(schedule_fn):
            raise TypeError(f"schedule_fn must be callable, got {type(schedule_fn).__name__}.")
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        return WrappedScheduleState(count=jnp.zeros([], dtype=jnp.int32))

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        del extra_args
        return WrappedScheduleState(count=numerics.safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> jax.typing.ArrayLike:
        del extra_args
        return self.schedule_fn(state.count)

    def __repr__(self) -> str:
        return f"WrappedSchedule({self.schedule_fn!r})"
