"""Recording measurements of the updates in the optimizer state.

``snapshot`` and ``monitor`` pass the updates through unchanged and store what
their measures return, so values from the middle of a chain can be logged.
Reading the global norm *before* clipping (a common request) is::

    tx = optcore.chain(
        optcore.snapshot("grad_norm", optcore.tree_utils.tree_norm),
        optcore.clip_by_global_norm(1.0),
        optcore.sgd(0.1),
    )
    ...
    grad_norm = state[0].measurement["grad_norm"]

No clipping transformation needs a logging variant: any measure can be put
anywhere in the chain.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Union

import jax
import jax.numpy as jnp

from optcore import base
from optcore.transforms._adding import ema as _ema


class SnapshotState(NamedTuple):
    """State of :func:`snapshot`: ``{measure_name: measurement}``."""

    measurement: dict


class MonitorState(NamedTuple):
    """State of :func:`monitor`.

    Attributes:
      measurements: ``{name: latest measurement}``.
      measure_states: a tuple with, per measure in order, the state of a
        stateful measure (a transformation) or ``EmptyState()`` for a function.
    """

    measurements: dict
    measure_states: tuple


Measure = Callable[[base.Updates], Any]


def snapshot(measure_name: str, measure: Measure) -> base.GradientTransformation:
    r"""Stores ``measure(updates)`` in the state under ``measure_name``; updates pass through.

    .. math::
        u \leftarrow u, \qquad s \leftarrow \{\mathrm{name}: f(u)\}

    The state is initialised with ``measure(params)``, which fixes its
    structure and dtypes for the rest of the run (so it works under ``jit``
    and ``lax.scan``).

    Args:
      measure_name: the key of the measurement in ``SnapshotState.measurement``.
      measure: a function of the updates (as they arrive at this point of a
        chain) returning an array or pytree of arrays.

    Returns:
      A transformation with state :class:`SnapshotState`.
    """
    if not callable(measure):
        raise TypeError(f"snapshot measure must be callable, got {type(measure).__name__}.")

    def init_fn(params):
        return SnapshotState(measurement={measure_name: measure(params)})

    def update_fn(updates, state, params=None):
        del state, params
        return updates, SnapshotState(measurement={measure_name: measure(updates)})

    return base.GradientTransformation(init_fn, update_fn)


def _as_float(tree):
    """Boolean and integer measurements as floats, so their average has one dtype throughout."""
    return jax.tree.map(
        lambda x: x if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact) else jnp.asarray(x, float), tree
    )


def measure_with_ema(
    measure: Measure,
    decay: float,
    debias: bool = True,
    accumulator_dtype: Any = None,
) -> base.GradientTransformationExtraArgs:
    r"""A stateful measure: the exponential moving average of ``measure(updates)``.

    .. math::
        m_t = \beta m_{t-1} + (1 - \beta) f(u_t), \qquad
        \mathrm{out}_t = m_t / (1 - \beta^t) \ (\text{debias}) \text{ or } m_t

    Its ``update`` *returns the measurement* (not the updates): use it as a
    value of :func:`monitor`. The state is ``(EmptyState(), EmaState(count, ema))``.
    Boolean or integer measurements (``norm > c``) are averaged as floats.

    Args:
      measure: a function of the updates returning an array or pytree.
      decay: :math:`\beta` in [0, 1].
      debias: divide by :math:`1 - \beta^t` (Adam's bias correction).
      accumulator_dtype: dtype of the stored average (default: the measurement's).
    """
    if not callable(measure):
        raise TypeError(f"measure_with_ema measure must be callable, got {type(measure).__name__}.")
    averager = base.with_extra_args_support(_ema(decay, debias=debias, accumulator_dtype=accumulator_dtype))

    def measured(tree):
        return _as_float(measure(tree))

    def init_fn(params):
        # The average has the measurement's structure, not the params'.
        return (base.EmptyState(), averager.init(measured(params)))

    def update_fn(updates, state, params=None, **extra_args):
        value, ema_state = averager.update(measured(updates), state[1], params, **extra_args)
        return value, (state[0], ema_state)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


def monitor(
    measures: Mapping[str, Union[base.GradientTransformationLike, Measure]],
) -> base.GradientTransformationExtraArgs:
    r"""Records several measurements of the updates; updates pass through unchanged.

    .. math::
        u \leftarrow u, \qquad s \leftarrow \{k: f_k(u)\}

    A measure is either a function of the updates (stateless) or a
    transformation whose ``update`` returns the measurement, such as
    :func:`measure_with_ema` (stateful; it receives params and extra args).

    Unlike Optax (which starts with ``measurements={}``), the measurements are
    initialised with zeros of their final shapes and dtypes, so the state keeps
    one structure from ``init`` on and can be carried through ``lax.scan``.

    Args:
      measures: ``{name: measure}``, in the order of ``measure_states``.

    Returns:
      A transformation with state :class:`MonitorState`.
    """
    if not isinstance(measures, Mapping):
        raise TypeError(f"monitor measures must be a mapping name -> measure, got {type(measures).__name__}.")
    stateful = {}
    for name, m in measures.items():
        # Any object with init/update is a stateful measure (optcore's, Optax's, a user's).
        if base.is_gradient_transformation(m):
            stateful[name] = base.with_extra_args_support(m)
        elif not callable(m):
            raise TypeError(f"monitor measure {name!r} must be a function or a transformation, got {type(m).__name__}.")

    def measure_all(updates, states, params, extra_args):
        values, new_states = {}, []
        for (name, m), s in zip(measures.items(), states):
            if name in stateful:
                values[name], s = stateful[name].update(updates, s, params, **extra_args)
            else:
                values[name] = m(updates)
            new_states.append(s)
        return values, tuple(new_states)

    def init_fn(params):
        states = tuple(stateful[name].init(params) if name in stateful else base.EmptyState() for name in measures)
        shapes, _ = jax.eval_shape(lambda: measure_all(params, states, params, {}))
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return MonitorState(measurements=zeros, measure_states=states)

    def update_fn(updates, state, params=None, **extra_args):
        values, states = measure_all(updates, state.measure_states, params, extra_args)
        return updates, MonitorState(measurements=values, measure_states=states)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
