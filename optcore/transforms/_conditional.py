"""Applying a transformation only on the steps a predicate selects."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from optcore import base, numerics
from optcore.transforms._multisteps import neutral_updates


class ConditionFn(Protocol):
    """``f(step, **extra_args) -> bool scalar``: whether to apply the inner transformation."""

    def __call__(self, step: jax.Array, **extra_args: Any) -> jax.Array: ...


class ConditionallyMaskState(NamedTuple):
    """State of :func:`conditionally_mask`: int32 ``step`` and the inner state."""

    step: jax.Array
    inner_state: Any


class ConditionallyTransformState(NamedTuple):
    """State of :func:`conditionally_transform`: the inner state and int32 ``step``."""

    inner_state: Any
    step: jax.Array


def _conditional_update(inner, should_transform_fn, forward_extra_args, otherwise):
    """``update`` that runs ``inner`` when the predicate holds, else ``otherwise(updates)``.

    Returns ``(updates, inner_state)``; the caller advances ``step``. The inner
    state passes through unchanged on the steps that are not transformed.
    """

    def run(updates, inner_state, step, params, extra_args):
        condition_kwargs = extra_args if forward_extra_args else {}

        def apply(_):
            return inner.update(updates, inner_state, params, **extra_args)

        out_types = jax.eval_shape(apply, None)[0]

        def reject(_):
            return otherwise(updates, out_types), inner_state

        condition = jnp.asarray(should_transform_fn(step, **condition_kwargs))
        return jax.lax.cond(condition, apply, reject, None)

    return run


def conditionally_mask(
    inner: base.GradientTransformationLike,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""Applies ``inner`` on the steps where ``should_transform_fn(step)`` holds; zeros elsewhere.

    .. math::
        (u_t, s_t) = \begin{cases} \mathrm{inner}(g_t, s_{t-1}) & c(t) \\ (0, s_{t-1}) & \text{otherwise} \end{cases}

    ``step`` counts calls from 0. On masked steps the updates are zeros
    (exactly ``-0.0``, so params stay bit-identical) and the inner state is
    passed through.

    Args:
      inner: the transformation to apply conditionally.
      should_transform_fn: :class:`ConditionFn` ``c(step, **extra_args)``.
      forward_extra_args: pass the update's extra arguments to ``should_transform_fn``.

    Returns:
      A transformation with state ``ConditionallyMaskState(step, inner_state)``.
    """
    base.check_gradient_transformation(inner, "conditionally_mask inner")
    inner = base.with_extra_args_support(inner)
    run = _conditional_update(
        inner, should_transform_fn, forward_extra_args, lambda updates, out: neutral_updates(out)
    )

    def init_fn(params):
        return ConditionallyMaskState(step=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, inner_state = run(updates, state.inner_state, state.step, params, extra_args)
        return new_updates, ConditionallyMaskState(step=numerics.safe_increment(state.step), inner_state=inner_state)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


def conditionally_transform(
    inner: base.GradientTransformationLike,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""Applies ``inner`` on the steps where ``should_transform_fn(step)`` holds; identity elsewhere.

    .. math::
        (u_t, s_t) = \begin{cases} \mathrm{inner}(g_t, s_{t-1}) & c(t) \\ (g_t, s_{t-1}) & \text{otherwise} \end{cases}

    Args:
      inner: the transformation to apply conditionally.
      should_transform_fn: :class:`ConditionFn` ``c(step, **extra_args)``.
      forward_extra_args: pass the update's extra arguments to ``should_transform_fn``.

    Returns:
      A transformation with state ``ConditionallyTransformState(inner_state, step)``.
    """
    base.check_gradient_transformation(inner, "conditionally_transform inner")
    inner = base.with_extra_args_support(inner)

    def passthrough(updates, out):
        # Cast to the inner's output types so both branches of the cond agree.
        return jax.tree.map(lambda u, o: jnp.asarray(u).astype(o.dtype), updates, out)

    run = _conditional_update(inner, should_transform_fn, forward_extra_args, passthrough)

    def init_fn(params):
        return ConditionallyTransformState(inner_state=inner.init(params), step=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, inner_state = run(updates, state.inner_state, state.step, params, extra_args)
        return new_updates, ConditionallyTransformState(
            inner_state=inner_state, step=numerics.safe_increment(state.step)
        )

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
