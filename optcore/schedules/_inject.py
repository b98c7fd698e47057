"""Hyperparameters as part of the optimizer state: ``inject_hyperparams``.

Wrapping an optimizer factory moves its numeric hyperparameters into the state
as arrays. They are then traced inputs of a jitted ``update`` rather than
constants compiled into it, so they can be read, logged, scheduled or changed
between steps (``optcore.tree_utils.tree_set(state, learning_rate=...)``)
without recompiling.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import warnings
from typing import Any, Callable, Iterable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from optcore import base, kit, numerics
from optcore.schedules._stateful import StatefulSchedule, WrappedSchedule


class InjectHyperparamsState(NamedTuple):
    """Deprecated state layout of ``inject_hyperparams`` (kept for compatibility; never produced)."""

    count: jax.Array  # shape=(), dtype=int32
    hyperparams: dict[str, jax.Array]
    inner_state: base.OptState


class InjectStatefulHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams`.

    Attributes:
      count: number of updates so far (int32).
      hyperparams: the value of every numeric or scheduled hyperparameter used
        by the last update (at init: the initial values); numeric entries may
        be overwritten by the user between steps.
      hyperparams_states: the state of each scheduled hyperparameter.
      inner_state: the state of the wrapped transformation.
    """

    count: jax.Array  # shape=(), dtype=int32
    hyperparams: dict[str, jax.Array]
    hyperparams_states: dict[str, base.ScheduleState]
    inner_state: base.OptState


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float, jax.Array, np.ndarray)) or (
        isinstance(value, numbers.Real) and not isinstance(value, np.generic)
    )


def _as_hyperparam(value: Any, float_dtype: jnp.dtype) -> jax.Array:
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.floating):
        return value.astype(float_dtype)
    return value


def _keep_float_dtypes(tree: Any, like: Any) -> Any:
    """``tree`` with each floating leaf cast to the dtype of the matching floating leaf of ``like``.

    Not :func:`~optcore.tree_utils.tree_cast_like`: integer counters and PRNG
    keys (which cannot be ``astype``-d) are left alone.
    """

    def keep(x, reference):
        floats = all(hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.inexact) for v in (x, reference))
        return x.astype(reference.dtype) if floats else x

    return jax.tree.map(keep, tree, like)


def inject_hyperparams(
    inner_factory: Callable[..., base.GradientTransformation],
    static_args: Union[str, Iterable[str]] = (),
    hyperparam_dtype: Optional[jnp.dtype] = None,
) -> Callable[..., base.GradientTransformationExtraArgs]:
    r"""Wraps an optimizer factory so that its hyperparameters live in the state.

    ``inject_hyperparams(optcore.adam)(learning_rate=1e-3)`` builds Adam whose
    state is :class:`InjectStatefulHyperparamsState`; each update rebuilds the
    inner transformation from the hyperparameters of the state:

    .. math::
        h_k \leftarrow
        \begin{cases} f_k(s_k, \text{extra args}),\ s_k \leftarrow f_k.\mathrm{update}(s_k) & \text{scheduled} \\
        \text{state.hyperparams}[k] & \text{numeric} \end{cases}, \qquad
        (u, \text{inner}) \leftarrow \mathrm{factory}(h).\mathrm{update}(g, \text{inner})

    Arguments of the factory are sorted into three kinds. Static arguments
    are passed unchanged: those the factory declares with
    :func:`optcore.kit.static_args` (sizes, step counts, seeds, masks: Adafactor's
    ``min_dim_size_to_factor``, L-BFGS's ``memory_size``, AdamW's ``mask``),
    those named in ``static_args``, and anything non-numeric (booleans,
    dtypes, ``None``, transformations). Callables passed by the caller are
    schedules (a step -> value function is wrapped in
    :class:`WrappedSchedule`, a :class:`StatefulSchedule` is used as is)
    evaluated at every step. Numbers and arrays are stored as arrays.

    Every factory of the core and of the first-party plugins declares its
    static arguments, so ``inject_hyperparams(adafactor)(0.01)`` jits without
    ``static_args`` (Optax issue 412: Optax injects the int sizes) and
    ``inject_hyperparams(adamw)(1e-3, mask=fn)`` keeps ``fn`` a mask (Optax
    calls it with the step count and silently masks nothing). A factory that
    declares nothing (an Optax factory, a third party's) is wrapped exactly as
    Optax wraps it. Unlike Optax, a callable *default* (such as a clipping
    rule) stays static rather than being taken for a schedule.

    Unlike Optax, floats are stored as float32 by default (the dtype in which
    optcore's optimizers do hyperparameter arithmetic), so the wrapped and
    unwrapped optimizers give bit-identical results; the values are traced, so
    changing one between steps never recompiles (as long as it keeps its
    dtype: store ``jnp.float32`` arrays, not Python floats).

    Args:
      inner_factory: a function returning a gradient transformation, e.g.
        ``optcore.adam``.
      static_args: names of arguments to pass unchanged even if numeric or
        callable (e.g. a mask function); a single name may be a string.
      hyperparam_dtype: dtype of the float hyperparameters (default: float32,
        or float64 when the params are float64).

    Returns:
      A factory with the signature of ``inner_factory`` that returns a
      :class:`~optcore.base.GradientTransformationExtraArgs`.
    """
    static_args = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    # What the factory declared (optcore.kit.static_args) plus what the caller adds.
    static = static_args | (kit.declared_static_args(inner_factory) or set())
    unknown = static_args - set(signature.parameters)
    if unknown:
        raise ValueError(
            f"static_args must name parameters of {getattr(inner_factory, '__name__', inner_factory)!r}; "
            f"unknown: {sorted(unknown)}; its parameters are {sorted(signature.parameters)}."
        )
    if hyperparam_dtype is not None:
        hyperparam_dtype = jnp.dtype(hyperparam_dtype)

    @functools.wraps(inner_factory)
    def wrapped_factory(*args, **kwargs) -> base.GradientTransformationExtraArgs:
        bound = signature.bind(*args, **kwargs)
        given = set(bound.arguments)
        bound.apply_defaults()
        # The closures below keep this plain dict, never `bound`: tools that turn
        # closures into pytrees (Equinox's closure_to_pytree, used by Optimistix's
        # OptaxMinimiser) need their non-array contents hashable, and an
        # inspect.BoundArguments is not.
        bound_arguments = dict(bound.arguments)
        numeric, schedules = {}, {}
        for name, value in bound_arguments.items():
            kind = signature.parameters[name].kind
            if name in static or kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if isinstance(value, (type, np.dtype)):
                continue  # a dtype (mu_dtype=jnp.float32 is callable, yet no schedule)
            if isinstance(value, StatefulSchedule):
                schedules[name] = value
            elif callable(value) and name in given:
                schedules[name] = WrappedSchedule(value)
            elif callable(value):
                continue  # a default function (a clipping rule, say) is part of the method, not a schedule
            elif _is_numeric(value):
                numeric[name] = value

        def build(hyperparams: dict[str, jax.Array]) -> base.GradientTransformationExtraArgs:
            arguments = dict(bound_arguments)
            arguments.update(hyperparams)
            call = inspect.BoundArguments(signature, arguments)
            return base.with_extra_args_support(inner_factory(*call.args, **call.kwargs))

        def float_dtype(tree):
            return hyperparam_dtype if hyperparam_dtype is not None else kit.hyperparameter_dtype(tree)

        def init_fn(params):
            dtype = float_dtype(params)
            schedule_states = {name: schedule.init() for name, schedule in schedules.items()}
            hyperparams = {name: _as_hyperparam(value, dtype) for name, value in numeric.items()}
            hyperparams.update(
                {name: _as_hyperparam(schedule(schedule_states[name]), dtype) for name, schedule in schedules.items()}
            )
            return InjectStatefulHyperparamsState(
                count=jnp.zeros([], jnp.int32),
                hyperparams=hyperparams,
                hyperparams_states=schedule_states,
                inner_state=build(hyperparams).init(params),
            )

        def update_fn(updates, state, params=None, **extra_args):
            dtype = float_dtype(updates)
            # Numeric values are read back from the state, so a value the user
            # set there is the one used; scheduled values are recomputed.
            hyperparams = {name: _as_hyperparam(state.hyperparams[name], dtype) for name in numeric}
            schedule_states = {}
            for name, schedule in schedules.items():
                schedule_state = state.hyperparams_states[name]
                hyperparams[name] = _as_hyperparam(schedule(schedule_state, **extra_args), dtype)
                schedule_states[name] = schedule.update(schedule_state, **extra_args)
            new_updates, inner_state = build(hyperparams).update(updates, state.inner_state, params, **extra_args)
            # The updates keep the dtype the inner transformation gives them: not
            # the incoming gradients' (adamw with mu_dtype=float32 on bf16 params
            # returns float32 updates, rounded once by apply_updates). optcore's
            # transformations give the same dtypes with float32 array
            # hyperparameters as with Python floats (tests/test_dtypes.py). The
            # inner state keeps the dtypes it had, so that a foreign
            # transformation's bf16 state stays bf16 under float32
            # hyperparameters (a scan carry or a donated buffer needs that).
            inner_state = _keep_float_dtypes(inner_state, state.inner_state)
            return new_updates, InjectStatefulHyperparamsState(
                count=numerics.safe_increment(state.count),
                hyperparams=hyperparams,
                hyperparams_states=schedule_states,
                inner_state=inner_state,
            )

        return base.GradientTransformationExtraArgs(init_fn, update_fn)

    return wrapped_factory


def inject_stateful_hyperparams(
    inner_factory: Callable[..., base.GradientTransformation],
    static_args: Union[str, Iterable[str]] = (),
    hyperparam_dtype: Optional[jnp.dtype] = None,
) -> Callable[..., base.GradientTransformationExtraArgs]:
    """Deprecated: use :func:`inject_hyperparams`, which handles stateful schedules too.

    Args:
      inner_factory: see :func:`inject_hyperparams`.
      static_args: see :func:`inject_hyperparams`.
      hyperparam_dtype: see :func:`inject_hyperparams`.
    """
    warnings.warn(
        # Optax's wording, so that filters matching Optax's message keep working.
        "inject_stateful_hyperparams is deprecated, use inject_hyperparams instead",
        DeprecationWarning,
        stacklevel=base._warning_stacklevel(2),  # the caller's line, past optcore's recording wrapper
    )
    return inject_hyperparams(inner_factory, static_args=static_args, hyperparam_dtype=hyperparam_dtype)

