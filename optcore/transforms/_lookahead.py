"""The Lookahead optimizer wrapper: slow weights pulled towards fast weights."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optcore import base, validate
from optcore.tree_utils._state_utils import is_params_placeholder


class LookaheadParams(NamedTuple):
    """The params :func:`lookahead` works on: the ``fast`` and the ``slow`` weights.

    Evaluate the loss and its gradient at ``fast``; evaluate the model at
    ``slow`` (the weights Lookahead converges).
    """

    fast: base.Params
    slow: base.Params

    @classmethod
    def init_synced(cls, params: base.Params) -> "LookaheadParams":
        """Both copies equal to ``params``: the starting point of a run."""
        return cls(fast=params, slow=params)


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`: the fast optimizer's state and the int32 steps since the last sync."""

    fast_state: Any
    steps_since_sync: jax.Array


def lookahead(
    fast_optimizer: base.GradientTransformationLike,
    sync_period: int,
    slow_step_size: float,
    reset_state: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""Lookahead: ``k`` fast steps, then move the slow weights towards the fast ones.

    The fast optimizer updates :math:`\theta` every step. Every :math:`k` steps
    the slow weights :math:`\phi` and the fast weights are synchronised:

    .. math::
        \phi \leftarrow \phi + \alpha (\theta - \phi), \qquad \theta \leftarrow \phi

    Zhang et al., `Lookahead Optimizer: k steps forward, 1 step back
    <https://arxiv.org/abs/1907.08610>`_, 2019.

    Use with ``params = LookaheadParams.init_synced(params)``; compute the
    gradient at ``params.fast`` and call ``update(grads, state, params)``.
    The updates are a :class:`LookaheadParams` to apply with ``apply_updates``.

    Args:
      fast_optimizer: the inner optimizer for the fast weights.
      sync_period: :math:`k`, the number of fast steps between syncs (int >= 1).
      slow_step_size: :math:`\alpha`, the step of the slow weights towards the
        fast weights (>= 0; the paper uses (0, 1]).
      reset_state: reset the fast optimizer's state to its init at every sync.

    Returns:
      A transformation with state :class:`LookaheadState`.
    """
    validate.check_range("sync_period", sync_period, low=1)
    validate.check_non_negative("slow_step_size", slow_step_size)
    base.check_gradient_transformation(fast_optimizer, "lookahead fast_optimizer")
    fast_optimizer = base.with_extra_args_support(fast_optimizer)

    def check_params(params):
        # By shape, not class: Optax's LookaheadParams (a NamedTuple with the same fields) works too.
        if not (hasattr(params, "fast") and hasattr(params, "slow") and hasattr(params, "_replace")):
            raise ValueError(
                "lookahead needs params of type LookaheadParams(fast, slow); wrap them with "
                f"LookaheadParams.init_synced(params). Got {type(params).__name__}."
            )

    def init_fn(params):
        if is_params_placeholder(params):
            fast = params  # tree_map_params probing the layout: it stands for the fast params
        else:
            check_params(params)
            fast = params.fast
        return LookaheadState(fast_state=fast_optimizer.init(fast), steps_since_sync=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        check_params(params)
        if type(updates) is type(params):
            updates = updates.fast
        fast_updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast, **extra_args)
        sync = state.steps_since_sync == sync_period - 1

        def slow_update(fast, u, slow):
            # The pull alpha * (theta_new - phi) of the sync, zero between syncs.
            return jnp.where(sync, slow_step_size * (fast + u - slow), jnp.zeros_like(slow)).astype(slow.dtype)

        slow_updates = jax.tree.map(slow_update, params.fast, fast_updates, params.slow)

        def fast_update(fast, u, slow, du_slow):
            # At a sync the fast weights jump to the new slow weights.
            return jnp.where(sync, slow + du_slow - fast, u).astype(u.dtype)

        fast_updates = jax.tree.map(fast_update, params.fast, fast_updates, params.slow, slow_updates)
        if reset_state:
            initial = fast_optimizer.init(params.fast)
            fast_state = jax.tree.map(lambda cur, ini: jnp.where(sync, ini, cur), fast_state, initial)
        steps = (state.steps_since_sync + 1) % sync_period
        # The updates have the params' own class, so apply_updates sees one tree structure.
        new_state = LookaheadState(fast_state, steps.astype(jnp.int32))
        return params._replace(fast=fast_updates, slow=slow_updates), new_state

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
