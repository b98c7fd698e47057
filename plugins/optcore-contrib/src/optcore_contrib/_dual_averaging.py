"""MADGRAD (dual averaging) and MoMo (momentum models with a Polyak step size)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, numerics, tree_utils, validate



class MadgradState(NamedTuple):
    """State of :func:`scale_by_madgrad`."""

    count: jax.Array
    grad_sum_sq: base.Updates
    s: base.Updates
    x0: base.Params


class MomoState(NamedTuple):
    """State of :func:`momo`: momentum, loss and inner-product averages, lower bound, count."""

    exp_avg: base.Updates
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


class MomoAdamState(NamedTuple):
    """State of :func:`momo_adam`."""

    exp_avg: base.Updates
    exp_avg_sq: base.Updates
    barf: jax.Array
    gamma: jax.Array
    lb: jax.Array
    count: jax.Array


def scale_by_madgrad(
    learning_rate: base.ScalarOrSchedule,
    momentum: float = 0.9,
    eps: float = 1e-6,
) -> base.GradientTransformation:
    r"""Rescales updates by MADGRAD, a momentumised, adaptive dual-averaging method.

    With :math:`\lambda_k = (\eta_k + \epsilon) \sqrt{k+1}` and :math:`c = 1 - \text{momentum}`:

    .. math::
        s_{k+1} = s_k + \lambda_k g_k, \quad
        \nu_{k+1} = \nu_k + \lambda_k g_k^2, \quad
        z_{k+1} = x_0 - \frac{s_{k+1}}{\nu_{k+1}^{1/3} + \epsilon}, \\
        x_{k+1} = (1-c)\, x_k + c\, z_{k+1}, \quad u_k = x_{k+1} - x_k.

    Defazio & Jelassi, `Adaptivity without Compromise: A Momentumized, Adaptive,
    Dual Averaged Gradient Method for Stochastic Optimization
    <https://arxiv.org/abs/2101.11075>`_, 2021.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      momentum: in [0, 1); 0 returns the dual-averaging iterate :math:`z`.
      eps: added to the cube root of the sum of squares, and to the learning rate.
    """
    validate.check_not_nan("learning_rate", learning_rate)
    validate.check_range("momentum", momentum, low=0.0, high=1.0)
    validate.check_non_negative("eps", eps)

    def init_fn(params):
        return MadgradState(
            count=kit.zero_count(),
            grad_sum_sq=tree_utils.state_zeros_like(params),
            s=tree_utils.state_zeros_like(params),
            x0=kit.own_copy(params),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = kit.hyperparameter_dtype(updates)
        kit.require_params(params, "scale_by_madgrad", updates)
        # Float32 (x64: float64) hyperparameters (the schedule evaluated first): the same bits
        # with and without inject_hyperparams.
        lr = kit.f32(kit.learning_rate_at(learning_rate, state.count), hyper_dtype)
        momentum_, eps_ = (kit.f32(x, hyper_dtype) for x in (momentum, eps))
        # As in the reference implementation, eps also keeps the step weight positive.
        lamb = (lr + eps_) * jnp.sqrt(state.count + 1.0)
        s = jax.tree.map(lambda acc, g: acc + lamb * g, state.s, updates)
        grad_sum_sq = jax.tree.map(lambda acc, g: acc + lamb * g * g, state.grad_sum_sq, updates)
        c = 1 - momentum_

        def new_param(p, p0, acc, sq):
            z = p0 - acc / (jnp.cbrt(sq) + eps_)
            return (1 - c) * p + c * z

        new_params = jax.tree.map(new_param, params, state.x0, s, grad_sum_sq)
        new_updates = jax.tree.map(lambda new, p: (new - p).astype(p.dtype), new_params, params)
        # The sums keep the dtypes they were initialised with (the params').
        return new_updates, MadgradState(
            count=numerics.safe_increment(state.count),
            grad_sum_sq=kit.cast_like(grad_sum_sq, state.grad_sum_sq),
            s=kit.cast_like(s, state.s),
            x0=state.x0,
        )

    return base.GradientTransformation(init_fn, update_fn)


def madgrad(
    learning_rate: base.ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: base.ScalarOrSchedule = 0.0,
    eps: float = 1e-6,
) -> base.GradientTransformationExtraArgs:
    r"""The MADGRAD optimizer: coupled weight decay, then :func:`scale_by_madgrad`.

    .. math::
        \tilde g_k = g_k + \lambda x_k, \quad u_k = \mathrm{MADGRAD}(\tilde g_k)

    Defazio & Jelassi, `Adaptivity without Compromise: A Momentumized, Adaptive,
    Dual Averaged Gradient Method for Stochastic Optimization
    <https://arxiv.org/abs/2101.11075>`_, 2021.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      momentum: momentum in [0, 1).
      weight_decay: :math:`\lambda`, added to the gradient. A number or a schedule of the step count.
      eps: added to the cube root of the sum of squares, and to the learning rate.
    """
    return optcore.chain(
        optcore.add_decayed_weights(weight_decay),
        scale_by_madgrad(learning_rate, momentum, eps),
    )


def _polyak_step(lr, bias_correction, h, lb, d_norm_sq, d_dot_x, weight_decay):
    r"""The truncated step size :math:`\tau` of a momentum model with weight decay.

    :math:`\rho(h - \langle d, x\rangle - c f_*) + \langle d, x\rangle` is
    computed as :math:`(h - c f_*) + \alpha\lambda (h - \langle d, x\rangle - c f_*)`:
    the same value, exactly :math:`h - c f_*` when :math:`\lambda = 0` without a
    Python branch on :math:`\lambda` (so it may be traced, as under
    ``inject_hyperparams``) and without cancelling a large :math:`\langle d, x\rangle`.
    """
    decay = lr * weight_decay
    shrink = 1.0 + decay
    gap = h - bias_correction * lb
    numerator = gap + jnp.where(decay == 0, 0.0, decay * (gap - d_dot_x))
    # d = 0 (a zero gradient, or a second moment overflowed to inf in momo_adam)
    # moves nothing whatever tau is: take the cap rather than 0/0.
    cap = lr / bias_correction
    tau = jnp.minimum(cap, kit.safe_ratio(jnp.maximum(numerator, 0.0), d_norm_sq, cap))
    return tau, shrink


def _next_lower_bound(adapt, lower_bound, lb, h, tau, d_norm_sq, bias_correction):
    if not adapt:
        return lb
    # Momo*: the model's value after the step is a running estimate of f*.
    return jnp.maximum(lower_bound, (h - 0.5 * tau * d_norm_sq) / bias_correction)


def _lower_bound_in_use(adapt, lower_bound, lb, h, bias_correction):
    if not adapt:
        return lb
    # An estimate above the model value is stale: restart it halfway to zero,
    # never below the given bound.
    stale = lb * bias_correction > h
    return jnp.where(stale, jnp.maximum(lower_bound, 0.5 * h / bias_correction), lb)


def momo(
    learning_rate: base.ScalarOrSchedule = 1.0,
    beta: float = 0.9,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""MoMo: SGD with momentum and a Polyak-type step size from a model of the loss.

    ``update`` needs the loss as ``value=``. With averages (the first step
    uses the raw values) :math:`d_k = \beta d_{k-1} + (1-\beta) g_k`,
    :math:`\bar f_k = \beta \bar f_{k-1} + (1-\beta) f(x_k)`,
    :math:`\gamma_k = \beta\gamma_{k-1} + (1-\beta)\langle g_k, x_k\rangle`,
    :math:`h_k = \bar f_k + \langle d_k, x_k\rangle - \gamma_k` and
    :math:`\rho = 1 + \alpha_k\lambda`:

    .. math::
        \tau_k = \min\!\left(\alpha_k, \frac{[\rho(h_k - \langle d_k, x_k\rangle - f_*)
                 + \langle d_k, x_k\rangle]_+}{\|d_k\|^2}\right), \quad
        x_{k+1} = \frac{x_k}{\rho} - \tau_k d_k.

    With ``adapt_lower_bound``, :math:`f_*` is re-estimated after each step as
    :math:`\max(f_*^{0}, h_k - \tfrac12\tau_k\|d_k\|^2)`, and an estimate above
    :math:`h_k` is reset to :math:`\max(f_*^{0}, h_k/2)` before it is used.

    Schaipp et al., `MoMo: Momentum Models for Adaptive Learning Rates
    <https://arxiv.org/abs/2305.07583>`_, 2023.

    Args:
      learning_rate: :math:`\alpha_k`, the largest step (a scalar or schedule).
      beta: momentum :math:`\beta` of the averages.
      lower_bound: :math:`f_*`, a lower bound of the loss (0 for most losses).
      weight_decay: :math:`\lambda`. A number, which its own rule reads: to schedule it, inject it
        (:func:`optcore.inject_hyperparams`).
      adapt_lower_bound: estimate the lower bound on the fly.
    """
    validate.check_not_nan("learning_rate", learning_rate)
    validate.check_decay("beta", beta)
    kit.check_not_schedule("weight_decay", weight_decay, who="momo")
    validate.check_not_nan("weight_decay", weight_decay)

    def init_fn(params):
        stat_dtype = kit.hyperparameter_dtype(params)  # float64 for float64 params under x64
        return MomoState(
            exp_avg=tree_utils.state_zeros_like(params),
            barf=jnp.zeros([], stat_dtype),
            gamma=jnp.zeros([], stat_dtype),
            lb=jnp.asarray(lower_bound, stat_dtype),
            count=kit.zero_count(),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        hyper_dtype = kit.hyperparameter_dtype(updates)
        del extra_args
        kit.require_params(params, "momo", updates)
        validate.require_update_args("momo", value=value)
        # Float32 (x64: float64) hyperparameters (the schedule evaluated first): the same bits
        # with and without inject_hyperparams.
        lr = kit.f32(kit.learning_rate_at(learning_rate, state.count), hyper_dtype)
        lower_bound_, weight_decay_ = (kit.f32(x, hyper_dtype) for x in (lower_bound, weight_decay))
        b = jnp.where(state.count == 0, kit.f32(0.0, hyper_dtype), kit.f32(beta, hyper_dtype))
        exp_avg = jax.tree.map(lambda d, g: b * d + (1 - b) * g, state.exp_avg, updates)
        barf = b * state.barf + (1 - b) * value
        gamma = b * state.gamma + (1 - b) * tree_utils.tree_vdot(updates, params)
        d_dot_x = tree_utils.tree_vdot(exp_avg, params)
        d_norm_sq = tree_utils.tree_norm(exp_avg, squared=True)
        h = barf + d_dot_x - gamma
        lb = _lower_bound_in_use(adapt_lower_bound, lower_bound_, state.lb, h, 1.0)
        tau, shrink = _polyak_step(lr, 1.0, h, lb, d_norm_sq, d_dot_x, weight_decay_)
        new_updates = jax.tree.map(
            lambda p, d: (p / shrink - tau * d - p).astype(p.dtype), params, exp_avg
        )
        new_lb = _next_lower_bound(adapt_lower_bound, lower_bound_, state.lb, h, tau, d_norm_sq, 1.0)
        return new_updates, MomoState(
            exp_avg=kit.cast_like(exp_avg, state.exp_avg),
            barf=jnp.asarray(barf, state.barf.dtype),
            gamma=jnp.asarray(gamma, state.gamma.dtype),
            lb=jnp.asarray(new_lb, state.lb.dtype),
            count=numerics.safe_increment(state.count),
        )

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


def momo_adam(
    learning_rate: base.ScalarOrSchedule = 1e-2,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    lower_bound: float = 0.0,
    weight_decay: float = 0.0,
    adapt_lower_bound: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""MoMo-Adam: Adam(W) with a Polyak-type step size from a model of the loss.

    ``update`` needs the loss as ``value=``. With zero-initialised averages
    :math:`d_k, \bar f_k, \gamma_k` (decay :math:`\beta_1`), second moment
    :math:`v_k` (decay :math:`\beta_2`), :math:`D_k = \sqrt{v_k/(1-\beta_2^{k+1})} + \epsilon`,
    :math:`c_k = 1 - \beta_1^{k+1}`, :math:`h_k = \bar f_k + \langle d_k, x_k\rangle - \gamma_k`
    and :math:`\rho = 1 + \alpha_k\lambda`:

    .. math::
        \tau_k = \min\!\left(\frac{\alpha_k}{c_k}, \frac{[\rho(h_k - \langle d_k, x_k\rangle
                 - c_k f_*) + \langle d_k, x_k\rangle]_+}{\langle d_k, d_k / D_k\rangle}\right), \quad
        x_{k+1} = \frac{x_k}{\rho} - \tau_k \frac{d_k}{D_k}.

    ``adapt_lower_bound`` re-estimates :math:`f_*` as in :func:`momo`, divided by :math:`c_k`.

    Schaipp et al., `MoMo: Momentum Models for Adaptive Learning Rates
    <https://arxiv.org/abs/2305.07583>`_, 2023.

    Args:
      learning_rate: :math:`\alpha_k`, a scalar or a schedule.
      b1: decay of the first moment and of the loss averages.
      b2: decay of the second moment.
      eps: added to the root of the second moment.
      lower_bound: :math:`f_*`, a lower bound of the loss.
      weight_decay: :math:`\lambda`, AdamW-style. A number, which its own rule reads: to schedule it, inject
        it (:func:`optcore.inject_hyperparams`).
      adapt_lower_bound: estimate the lower bound on the fly.
    """
    validate.check_not_nan("learning_rate", learning_rate)
    # Both are bias-corrected (1 - b**t divides): [0, 1).
    kit.check_beta("b1", b1)
    kit.check_beta("b2", b2)
    validate.check_non_negative("eps", eps)
    kit.check_not_schedule("weight_decay", weight_decay, who="momo_adam")
    validate.check_not_nan("weight_decay", weight_decay)

    def init_fn(params):
        stat_dtype = kit.hyperparameter_dtype(params)  # float64 for float64 params under x64
        return MomoAdamState(
            exp_avg=tree_utils.state_zeros_like(params),
            exp_avg_sq=tree_utils.state_zeros_like(params),
            barf=jnp.zeros([], stat_dtype),
            gamma=jnp.zeros([], stat_dtype),
            lb=jnp.asarray(lower_bound, stat_dtype),
            count=kit.zero_count(),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        hyper_dtype = kit.hyperparameter_dtype(updates)
        del extra_args
        kit.require_params(params, "momo_adam", updates)
        validate.require_update_args("momo_adam", value=value)
        # Float32 (x64: float64) hyperparameters (the schedule evaluated first): the same bits
        # with and without inject_hyperparams.
        lr = kit.f32(kit.learning_rate_at(learning_rate, state.count), hyper_dtype)
        b1_, b2_, eps_ = (kit.f32(x, hyper_dtype) for x in (b1, b2, eps))
        lower_bound_, weight_decay_ = (kit.f32(x, hyper_dtype) for x in (lower_bound, weight_decay))
        step = state.count + 1
        exp_avg = jax.tree.map(lambda d, g: b1_ * d + (1 - b1_) * g, state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: b2_ * v + (1 - b2_) * g * g, state.exp_avg_sq, updates)
        barf = b1_ * state.barf + (1 - b1_) * value
        gamma = b1_ * state.gamma + (1 - b1_) * tree_utils.tree_vdot(updates, params)
        bias_correction1 = 1 - b1_**step
        bias_correction2 = 1 - b2_**step
        preconditioner = jax.tree.map(lambda v: jnp.sqrt(v / bias_correction2) + eps_, exp_avg_sq)
        direction = jax.tree.map(lambda d, denom: d / denom, exp_avg, preconditioner)
        d_norm_sq = tree_utils.tree_vdot(exp_avg, direction)
        d_dot_x = tree_utils.tree_vdot(exp_avg, params)
        h = barf + d_dot_x - gamma
        lb = _lower_bound_in_use(adapt_lower_bound, lower_bound_, state.lb, h, bias_correction1)
        tau, shrink = _polyak_step(lr, bias_correction1, h, lb, d_norm_sq, d_dot_x, weight_decay_)
        new_updates = jax.tree.map(
            lambda p, dd: (p / shrink - tau * dd - p).astype(p.dtype), params, direction
        )
        new_lb = _next_lower_bound(
            adapt_lower_bound, lower_bound_, state.lb, h, tau, d_norm_sq, bias_correction1
        )
        # The moments keep the dtypes they were initialised with (the params').
        return new_updates, MomoAdamState(
            exp_avg=kit.cast_like(exp_avg, state.exp_avg),
            exp_avg_sq=kit.cast_like(exp_avg_sq, state.exp_avg_sq),
            barf=jnp.asarray(barf, state.barf.dtype),
            gamma=jnp.asarray(gamma, state.gamma.dtype),
            lb=jnp.asarray(new_lb, state.lb.dtype),
            count=numerics.safe_increment(state.count),
        )

    return base.GradientTransformationExtraArgs(init_fn, update_fn)
