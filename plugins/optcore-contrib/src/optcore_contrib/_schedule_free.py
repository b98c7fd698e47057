"""Schedule-free optimisation: averaging that replaces the learning-rate schedule."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, numerics, tree_utils, validate



class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free`."""

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: base.OptState
    z: base.Params


def schedule_free_eval_params(state: ScheduleFreeState, params: base.Params) -> base.Params:
    r"""The averaged iterate :math:`x_t` to evaluate, from the training params :math:`y_t`.

    .. math::
        x_t = \frac{y_t - (1-\beta_1) z_t}{\beta_1} \quad (x_t = y_t \text{ if } \beta_1 = 0).

    Args:
      state: the :class:`ScheduleFreeState` (possibly nested in a larger state:
        the first one found is used).
      params: the current (training) params :math:`y_t`.
    """
    state = _find_schedule_free_state(state)
    b1 = state.b1
    return jax.tree.map(
        lambda y, z: jnp.where(b1 == 0, y, (y - (1 - b1) * z) / jnp.where(b1 == 0, 1, b1)).astype(y.dtype),
        params,
        state.z,
    )


def _find_schedule_free_state(state):
    if isinstance(state, ScheduleFreeState):
        return state
    found = [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ScheduleFreeState))
        if isinstance(s, ScheduleFreeState)
    ]
    if not found:
        raise ValueError("schedule_free_eval_params: no ScheduleFreeState found in the given state.")
    return found[0]


def schedule_free(
    base_optimizer: base.GradientTransformationLike,
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    weight_lr_power: float = 2.0,
    state_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Turns ``base_optimizer`` into its schedule-free version.

    The base optimizer (which applies the learning rate) moves the sequence
    :math:`z`; the params hold the interpolation :math:`y` of :math:`z` and the
    weighted average :math:`x`:

    .. math::
        z_{t+1} = z_t + \mathrm{base}(g(y_t)), \quad
        c_{t+1} = \frac{\gamma_{\max,t}^{p}}{\sum_{i \le t} \gamma_{\max,i}^{p}}, \\
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}, \quad
        y_{t+1} = (1-\beta_1) z_{t+1} + \beta_1 x_{t+1},

    with :math:`\gamma_{\max,t}` the largest learning rate so far and
    :math:`p` = ``weight_lr_power``. Evaluate at :math:`x` with
    :func:`schedule_free_eval_params`.

    Defazio et al., `The Road Less Scheduled <https://arxiv.org/abs/2405.15682>`_, 2024.

    Args:
      base_optimizer: the optimizer moving :math:`z` (e.g. SGD or Adam, with the learning rate).
      learning_rate: the learning rate used by the base optimizer (for the weights).
      b1: interpolation :math:`\beta_1` between :math:`z` and :math:`x`.
      weight_lr_power: :math:`p`, the power of the learning rate in the weights.
      state_dtype: dtype of :math:`z` (default: the params').
    """
    validate.check_decay("b1", b1)
    state_dtype = kit.dtype_or_none(state_dtype)
    optcore.check_gradient_transformation(base_optimizer, "schedule_free base_optimizer")
    base_optimizer = optcore.with_extra_args_support(base_optimizer)

    def init_fn(params):
        stat_dtype = kit.hyperparameter_dtype(params)  # float64 for float64 params under x64
        # z starts at the params but in its own buffers (a cast to the same dtype is no copy).
        z = kit.own_copy(params if state_dtype is None else tree_utils.tree_cast(params, state_dtype))
        return ScheduleFreeState(
            b1=jnp.asarray(b1, stat_dtype),
            weight_sum=jnp.zeros([], stat_dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], stat_dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update_fn(updates, state, params=None, **extra_args):
        kit.require_params(params, "schedule_free", updates)
        lr = kit.learning_rate_at(learning_rate, state.step_count)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        weight_sum = state.weight_sum + weight
        c = jnp.where(weight_sum > 0, weight / jnp.where(weight_sum > 0, weight_sum, 1), 0.0)
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra_args
        )
        z = jax.tree.map(lambda zz, u: (zz + u).astype(zz.dtype), state.z, base_updates)
        beta = state.b1

        def new_update(y, z_old, z_new):
            # Recover x_t from y_t = (1 - b1) z_t + b1 x_t.
            x_prev = jnp.where(beta == 0, y, (y - (1 - beta) * z_old) / jnp.where(beta == 0, 1, beta))
            x_new = (1 - c) * x_prev + c * z_new
            y_new = (1 - beta) * z_new + beta * x_new
            return (y_new - y).astype(y.dtype)

        new_updates = jax.tree.map(new_update, params, state.z, z)
        return new_updates, ScheduleFreeState(
            b1=state.b1,
            weight_sum=weight_sum.astype(state.weight_sum.dtype),
            step_count=numerics.safe_increment(state.step_count),
            max_lr=max_lr.astype(state.max_lr.dtype),
            base_optimizer_state=base_state,
            z=z,
        )

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _warmed_up(learning_rate, warmup_steps):
    learning_rate = validate.as_scalar("learning_rate", learning_rate)
    if warmup_steps is None:
        return learning_rate
    validate.check_range("warmup_steps", warmup_steps, low=1)
    return optcore.schedules.warmup_constant_schedule(0.0, learning_rate, warmup_steps)


def schedule_free_sgd(
    learning_rate: float = 1.0,
    warmup_steps: Optional[int] = None,
    b1: float = 0.9,
    weight_decay: Optional[base.ScalarOrSchedule] = None,
    weight_lr_power: float = 2.0,
    state_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Schedule-free SGD: :func:`schedule_free` around SGD.

    .. math::
        z_{t+1} = z_t - \gamma_t (g(y_t) + \lambda y_t)

    with the averaging of :func:`schedule_free`; :math:`\gamma_t` warms up
    linearly from 0 over ``warmup_steps``.

    Defazio et al., `The Road Less Scheduled <https://arxiv.org/abs/2405.15682>`_, 2024.

    Args:
      learning_rate: :math:`\gamma`, the peak learning rate.
      warmup_steps: length of the linear warm-up (None: no warm-up).
      b1: interpolation :math:`\beta_1`.
      weight_decay: :math:`\lambda`, applied at :math:`y` (None: none). A number or a schedule of the step
        count.
      weight_lr_power: power of the learning rate in the averaging weights.
      state_dtype: dtype of :math:`z`.
    """
    lr = _warmed_up(learning_rate, warmup_steps)
    optimizer = optcore.sgd(lr)
    if weight_decay is not None:
        optimizer = optcore.chain(optcore.add_decayed_weights(weight_decay), optimizer)
    return schedule_free(optimizer, lr, b1, weight_lr_power, state_dtype)


def schedule_free_adamw(
    learning_rate: float = 0.0025,
    warmup_steps: Optional[int] = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: base.ScalarOrSchedule = 0.0,
    weight_lr_power: float = 2.0,
    state_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Schedule-free AdamW: :func:`schedule_free` around RMSProp with AdamW decay.

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        z_{t+1} = z_t - \gamma_t\left(\frac{g_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} + \lambda y_t\right)

    with the averaging of :func:`schedule_free` (the momentum comes from the
    interpolation :math:`\beta_1`, not from a first moment).

    Defazio et al., `The Road Less Scheduled <https://arxiv.org/abs/2405.15682>`_, 2024.

    Args:
      learning_rate: :math:`\gamma`, the peak learning rate.
      warmup_steps: length of the linear warm-up (None: no warm-up).
      b1: interpolation :math:`\beta_1`.
      b2: decay of the second moment.
      eps: added to the root of the second moment.
      weight_decay: :math:`\lambda`, applied at :math:`y`. A number or a schedule of the step count.
      weight_lr_power: power of the learning rate in the averaging weights.
      state_dtype: dtype of :math:`z`.
    """
    kit.check_beta("b2", b2)  # the second moment is bias-corrected (1 - b2**t divides)
    lr = _warmed_up(learning_rate, warmup_steps)
    optimizer = optcore.chain(
        optcore.scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        optcore.add_decayed_weights(weight_decay),
        optcore.scale_by_learning_rate(lr),
    )
    return schedule_free(optimizer, lr, b1, weight_lr_power, state_dtype)
