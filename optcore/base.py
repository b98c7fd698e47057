"""The protocol at the bottom of optcore: gradient transformations and their types.

A gradient transformation is a pair of pure functions::

    state = init(params)
    updates, state = update(updates, state, params=None, **extra_args)

Nothing here imports any other optcore module.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Protocol, Union, runtime_checkable

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


# Code objects of the frames that optcore.plugins' recording wrappers put between a factory and its
# caller (they let ``optcore.to_config`` know how an object was built). A factory's warning skips them,
# so that it points at the caller's line: a DeprecationWarning from ``__main__`` is still shown.
_WRAPPER_CODES: set = set()


def _warning_stacklevel(stacklevel: int = 2) -> int:
    """The ``stacklevel`` for ``warnings.warn`` in a factory, not counting recording-wrapper frames."""
    frame, level, counted = sys._getframe(1), 1, 1
    while frame is not None and counted < stacklevel:
        frame, level = frame.f_back, level + 1
        if frame is not None and frame.f_code not in _WRAPPER_CODES:
            counted += 1
    return level


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


@runtime_checkable
class GradientTransformationLike(Protocol):
    """Anything with an ``init`` and an ``update``: what every optcore combinator accepts.

    Optax's combinators take any object with ``init`` and ``update``, so ours do
    too: an Optax ``GradientTransformation``, an ``optax.MultiSteps``, a user's own
    class. This is structural typing, not a class check. ``isinstance(x,
    GradientTransformationLike)`` only tests that both attributes exist; use
    :func:`is_gradient_transformation` to also require that they are callable.
    """

    init: Callable[..., Any]
    update: Callable[..., Any]


def is_gradient_transformation(obj: Any) -> bool:
    """True when ``obj`` is an instance with callable ``init`` and ``update``.

    A class (rather than an instance of it) is not a transformation even though
    its methods are callable: ``MyTx.update`` would be missing ``self``.
    """
    if isinstance(obj, type):
        return False
    return callable(getattr(obj, "init", None)) and callable(getattr(obj, "update", None))


def check_gradient_transformation(obj: Any, what: str = "the transformation") -> None:
    """Raises a ``TypeError`` that says why ``obj`` is not a gradient transformation.

    Args:
      obj: the object to check.
      what: how to name ``obj`` in the message (``"chain() argument 0"``).

    Raises:
      TypeError: naming the likely mistake: a factory passed uncalled
        (``adam`` for ``adam(1e-3)``), a class for an instance, a missing or
        non-callable ``init``/``update``.
    """
    if is_gradient_transformation(obj):
        return
    kind = type(obj).__name__
    if isinstance(obj, type):
        if callable(getattr(obj, "init", None)) and callable(getattr(obj, "update", None)):
            raise TypeError(
                f"{what} is the class {obj.__name__}, not an instance of it; did you forget to call "
                f"{obj.__name__}(...)?"
            )
        raise TypeError(f"{what} is the class {obj.__name__}, which has no init/update methods.")
    if callable(obj) and not hasattr(obj, "init") and not hasattr(obj, "update"):
        # functools.partial has no __name__ of its own: name the function it wraps.
        name = getattr(obj, "__name__", None) or getattr(getattr(obj, "func", None), "__name__", kind)
        raise TypeError(
            f"{what} is the function {name!r}, not a gradient transformation (an object with init and "
            f"update); did you forget to call it (`{name}(...)` rather than `{name}`)?"
        )
    for attribute in ("init", "update"):
        if not hasattr(obj, attribute):
            raise TypeError(
                f"{what} is {kind}, not a gradient transformation: it has no `{attribute}` "
                "(a gradient transformation is any object with callable `init` and `update`)."
            )
        if not callable(getattr(obj, attribute)):
            raise TypeError(
                f"{what} is {kind}, not a gradient transformation: its `{attribute}` is "
                f"{type(getattr(obj, attribute)).__name__}, not callable."
            )


def _update_keywords(update: Callable[..., Any]) -> Union[bool, frozenset, None]:
    """Which extra keyword arguments ``update`` takes: ``True`` for all, else their names.

    Read from the signature: a ``**kwargs`` (VAR_KEYWORD) parameter takes all;
    otherwise the parameters after ``(updates, state, params)`` that can be
    passed by keyword are the ones it takes. ``None`` when the signature
    cannot be read (some builtins and C extensions).
    """
    try:
        parameters = list(inspect.signature(update).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    named = [p.name for p in positional[3:] if p.kind is p.POSITIONAL_OR_KEYWORD]
    named += [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    return frozenset(named)


def _declares_extra_args(tx: Any) -> bool:
    """True when ``tx``'s class says its ``update`` takes ``**extra_args``.

    That is our :class:`GradientTransformationExtraArgs`, or any class named
    ``GradientTransformationExtraArgs`` in the MRO: Optax's class of that name
    (and any library that copies its protocol) promises the same contract, and
    is recognised without importing it. Only consulted when the signature of
    ``update`` cannot be read: a readable signature is the stronger evidence.
    """
    return any(cls.__name__ == "GradientTransformationExtraArgs" for cls in type(tx).__mro__)


def with_extra_args_support(tx: GradientTransformationLike) -> GradientTransformationExtraArgs:
    """Returns ``tx`` as a :class:`GradientTransformationExtraArgs` that accepts any ``**extra_args``.

    ``tx`` is any object with callable ``init`` and ``update`` (an optcore or
    Optax transformation, a user's class). Which extra arguments reach
    ``tx.update`` is decided by its shape, never by importing a library:

    * all of them when ``update`` has a ``**kwargs`` parameter, read with
      :func:`inspect.signature` (which sees through ``functools.partial``,
      ``functools.wraps`` and ``jax.jit``). Optax builds every
      ``GradientTransformationExtraArgs`` with such an ``update``, so this is
      how Optax's are recognised; the signature, unlike a class check, also
      covers a user's own class and any library;
    * only those it names when ``update`` declares them as keyword parameters
      (``def update(self, updates, state, params=None, *, value)``), so a
      member that needs ``value`` gets it without choking on ``grad``;
    * none otherwise: Optax's base contract ``update(updates, state, params)``.

    When the signature cannot be read, a class named
    ``GradientTransformationExtraArgs`` in ``type(tx).__mro__`` (Optax's, or a
    copy of the protocol) stands for a ``**kwargs`` ``update``.

    One of ours that already takes extra arguments is returned unchanged.

    Raises:
      TypeError: if ``tx`` has no callable ``init``/``update`` (see
        :func:`check_gradient_transformation`).
    """
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx
    check_gradient_transformation(tx, "with_extra_args_support() argument")
    keywords = _update_keywords(tx.update)
    if keywords is None:
        keywords = True if _declares_extra_args(tx) else frozenset()
    if keywords is True:
        return GradientTransformationExtraArgs(tx.init, tx.update)
    inner_update = tx.update

    if keywords:

        def update_fn(updates, state, params=None, **extra_args):
            taken = {name: value for name, value in extra_args.items() if name in keywords}
            return inner_update(updates, state, params, **taken)

    else:

        def update_fn(updates, state, params=None, **extra_args):
            del extra_args
            return inner_update(updates, state, params)

    return GradientTransformationExtraArgs(tx.init, update_fn)


__all__ = [
    "ArrayTree",
    "EmptyState",
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "GradientTransformationLike",
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
    "check_gradient_transformation",
    "identity",
    "init_empty_state",
    "is_gradient_transformation",
    "set_to_zero",
    "stateless",
    "stateless_with_tree_map",
    "with_extra_args_support",
]
