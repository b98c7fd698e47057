"""Skipping steps whose updates are not finite: ``apply_if_finite``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optcore import base, numerics, validate
from optcore.transforms._multisteps import neutral_updates
from optcore.tree_utils._tree_math import reduce_leaves


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`.

    Attributes:
      notfinite_count: int32 number of consecutive non-finite updates so far.
      last_finite: bool, whether the last updates were all finite.
      total_notfinite: int32 number of non-finite updates over the whole run.
      inner_state: the wrapped transformation's state.
    """

    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array
    inner_state: Any


def apply_if_finite(
    inner: base.GradientTransformationLike, max_consecutive_errors: int
) -> base.GradientTransformationExtraArgs:
    r"""Applies ``inner`` only when every entry of the incoming updates is finite.

    With :math:`f_t` = "all of :math:`g_t` is finite" and :math:`c_t` the number
    of consecutive non-finite steps up to :math:`t`,

    .. math::
        (u_t, s_t) = \begin{cases}
          \mathrm{inner}(g_t, s_{t-1}) & f_t \lor c_t > N \\
          (0, s_{t-1}) & \text{otherwise}
        \end{cases}

    A skipped step returns zeros (exactly ``-0.0``, the IEEE additive identity,
    so ``apply_updates`` leaves params bit-identical) and passes the inner state
    through unchanged. After more than :math:`N` =
    ``max_consecutive_errors`` bad steps in a row the bad updates are let
    through, so a run that only produces NaNs fails loudly instead of stalling.

    Args:
      inner: the transformation to protect.
      max_consecutive_errors: :math:`N`, how many consecutive non-finite steps
        are skipped before they are applied anyway (an int >= 0).

    Returns:
      A transformation with state :class:`ApplyIfFiniteState`.
    """
    validate.check_non_negative("max_consecutive_errors", max_consecutive_errors)
    base.check_gradient_transformation(inner, "apply_if_finite inner")
    inner = base.with_extra_args_support(inner)

    def init_fn(params):
        return ApplyIfFiniteState(
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.array(True, jnp.bool_),
            total_notfinite=jnp.zeros([], jnp.int32),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        leaves = jax.tree.leaves(updates)
        # Small leaves are checked together, one kernel per group (issue 8).
        isfinite = jnp.all(jnp.stack(reduce_leaves(leaves, jnp.isfinite, jnp.all))) if leaves else jnp.array(True)
        notfinite_count = jnp.where(isfinite, 0, numerics.safe_increment(state.notfinite_count)).astype(jnp.int32)
        total_notfinite = jnp.where(
            isfinite, state.total_notfinite, numerics.safe_increment(state.total_notfinite)
        ).astype(jnp.int32)

        def apply(_):
            return inner.update(updates, state.inner_state, params, **extra_args)

        out_types = jax.eval_shape(apply, None)[0]

        def skip(_):
            return neutral_updates(out_types), state.inner_state

        new_updates, inner_state = jax.lax.cond(
            jnp.logical_or(isfinite, notfinite_count > max_consecutive_errors), apply, skip, None
        )
        return new_updates, ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=isfinite,
            total_notfinite=total_notfinite,
            inner_state=inner_state,
        )

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
