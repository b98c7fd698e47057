"""The protocol at the bottom of optcore: gradient transformations and their types.

A gradient transformation is a pair of pure functions::

    state = init(params)
    updates, state = update(updates, state, params=None, **extra_args)

Nothing here imports any other optcore module.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp

ArrayLike = jax.typing.ArrayLike
PyTree = Any
ArrayTree = Union[jax.Array, Iterable["ArrayTree"], Mapping[Any, "ArrayTree"]]
Params = ArrayTree
Updates = Params
OptState = ArrayTree
PRNGKey = jax.Array
Shape = tuple
ScheduleState = Any
Schedule = Callable[[ArrayLike], ArrayLike]
ScalarOrSchedule = Union[float, jax.Array, Schedule]
MaskOrFn = Optional[Union[Any, Callable[[Params], Any]]]

NO_PARAMS_MSG = (
    "You are using a transformation that requires the current value of "
    "parameters, but you are not passing `params` when calling `update`."
)


class TransformInitFn(Protocol):
    """``init(params) -> state``: builds the initial state from the params."""

    def __call__(self, params: Params) -> OptState: ...


class TransformUpdateFn(Protocol):
    """``update(updates, state, params=None) -> (updates, state)``."""

    def __call__(
        self, updates: Updates, state: OptState, params: Optional[Params] = None
    ) -> tuple[Updates, OptState]: ...


class TransformUpdateExtraArgsFn(Protocol):
    """``update(updates, state, params=None, **extra_args) -> (updates, state)``.

    Extra arguments are passed by keyword; a transformation that needs one
    declares it keyword-only and ignores any others.
    """

    def __call__(
        self,
        updates: Updates,
        state: OptState,
        params: Optional[Params] = None,
        **extra_args: Any,
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pair of pure functions ``(init, update)`` that transform gradients.

    Attributes:
      init: ``init(params) -> state``.
      update: ``update(updates, state, params=None) -> (updates, state)``.
    """

    init: TransformInitFn
    update: TransformUpdateFn


class GradientTransformationExtraArgs(GradientTransformation):
    """A gradient transformation whose ``update`` accepts ``**extra_args``.

    Extra arguments (``value``, ``grad``, ``value_fn``, ...) are forwarded by
    :func:`optcore.chain` to every member; members that do not use them ignore
    them.
    """

    update: TransformUpdateExtraArgsFn


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def init_empty_state(params: Params) -> EmptyState:
    """Returns ``EmptyState()`` whatever the params: the init of stateless transforms."""
    del params
    return EmptyState()


def identity() -> GradientTransformation:
    """The transformation that returns the updates unchanged: ``u -> u``."""

    def update_fn(updates, state, params=None):
        del params
        return updates, state

    return GradientTransformation(init_empty_state, update_fn)


def set_to_zero() -> GradientTransformation:
    """The transformation that zeroes every update: ``u -> 0`` (freezes params)."""

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init_empty_state, update_fn)


def stateless(
    f: Callable[[Updates, Optional[Params]], Updates],
) -> GradientTransformation:
    """A stateless transformation from ``f(updates, params) -> updates``."""

    def update_fn(updates, state, params=None):
        return f(updates, params), state

    return GradientTransformation(init_empty_state, update_fn)


def stateless_with_tree_map(
    f: Callable[[jax.Array, Optional[jax.Array]], jax.Array],
) -> GradientTransformation:
    """A stateless transformation applying ``f(g, p)`` to each leaf.

    When ``params`` is None, ``f`` receives ``None`` as its second argument.
    """

    def update_fn(updates, state, params=None):
        if params is None:
            return jax.tree.map(lambda g: f(g, None), updates), state
        return jax.tree.map(f, updates, params), state

    return GradientTransformation(init_empty_state, update_fn)


def with_extra_args_support(
    tx: GradientTransformation,
) -> GradientTransformationExtraArgs:
    """Returns ``tx`` with an ``update`` that accepts and ignores ``**extra_args``.

    A transformation that already takes extra arguments is returned unchanged.
    """
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return tx.update(updates, state, params)

    return GradientTransformationExtraArgs(tx.init, update_fn)


__all__ = [
    "ArrayTree",
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "MaskOrFn",
    "NO_PARAMS_MSG",
    "OptState",
    "Params",
    "PRNGKey",
    "ScalarOrSchedule",
    "Schedule",
    "ScheduleState",
    "TransformInitFn",
    "TransformUpdateExtraArgsFn",
    "TransformUpdateFn",
    "Updates",
    "identity",
    "init_empty_state",
    "set_to_zero",
    "stateless",
    "stateless_with_tree_map",
    "with_extra_args_support",
]
