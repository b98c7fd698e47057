"""Sophia: a clipped, diagonal second-order optimizer, and its Hutchinson estimator."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, numerics, tree_utils, validate



class HutchinsonState(NamedTuple):
    """State of :func:`hutchinson_estimator_diag_hessian`: the PRNG key."""

    key: jax.Array


class SophiaState(NamedTuple):
    """State of :func:`sophia`."""

    count: jax.Array
    mu: base.Updates
    nu: base.Updates
    hessian_fn_state: Any


def hutchinson_estimator_diag_hessian(random_seed: Optional[jax.Array] = None):
    r"""Estimates the Hessian diagonal with one Rademacher probe per call.

    .. math::
        \widehat{\mathrm{diag}}(H) = s \odot (H s), \quad s_i \in \{-1, +1\}\ \text{uniform},

    unbiased since :math:`\mathbb{E}[s s^\top] = I`. ``update`` ignores the
    updates and needs ``params`` and ``obj_fn=`` (the scalar objective); it
    returns the estimate in place of the updates.

    Hutchinson, `A stochastic estimator of the trace of the influence matrix
    for Laplacian smoothing splines <https://doi.org/10.1080/03610919008812866>`_, 1990.

    Args:
      random_seed: a PRNG key (default ``jax.random.PRNGKey(0)``).
    """

    def init_fn(params):
        del params
        key = random_seed if random_seed is not None else jax.random.PRNGKey(0)
        return HutchinsonState(key=key)

    def update_fn(updates, state, params=None, *, obj_fn=None, **extra_args):
        del updates, extra_args
        kit.require_params(params, "hutchinson_estimator_diag_hessian")
        validate.require_update_args("hutchinson_estimator_diag_hessian", obj_fn=obj_fn)
        key, subkey = jax.random.split(state.key)
        signs = tree_utils.tree_random_like(subkey, params, jax.random.rademacher)
        signs = jax.tree.map(lambda s, p: s.astype(p.dtype), signs, params)
        _, hessian_probe = jax.jvp(jax.grad(obj_fn), (params,), (signs,))
        diagonal = jax.tree.map(lambda s, hs: s * hs, signs, hessian_probe)
        return diagonal, HutchinsonState(key=key)

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


def _scale_by_sophia(
    b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn, mu_dtype,
    verbose, print_win_rate_every_n_steps,
) -> base.GradientTransformationExtraArgs:
    mu_dtype = kit.dtype_or_none(mu_dtype)
    optcore.check_gradient_transformation(hessian_diagonal_fn, "sophia hessian_diagonal_fn")
    hessian_diagonal_fn = optcore.with_extra_args_support(hessian_diagonal_fn)

    def init_fn(params):
        return SophiaState(
            count=kit.zero_count(),
            mu=tree_utils.state_zeros_like(params, dtype=mu_dtype),
            nu=tree_utils.state_zeros_like(params),
            hessian_fn_state=hessian_diagonal_fn.init(params),
        )

    def update_fn(updates, state, params=None, *, obj_fn=None, **extra_args):
        hyper_dtype = kit.hyperparameter_dtype(updates)
        kit.require_params(params, "sophia")
        validate.require_update_args("sophia", obj_fn=obj_fn)
        # Float32 (x64: float64) hyperparameters: the same bits with and without inject_hyperparams.
        b1_, b2_, eps_, gamma_, clip_ = (kit.f32(x, hyper_dtype) for x in (b1, b2, eps, gamma, clip_threshold))
        mu = tree_utils.tree_update_moment(updates, state.mu, b1_, 1)

        def refresh(operand):
            nu, hessian_state = operand
            diagonal, hessian_state = hessian_diagonal_fn.update(
                updates, hessian_state, params, obj_fn=obj_fn, **extra_args
            )
            # The EMA keeps its dtype, so both branches of the cond agree.
            nu = kit.cast_like(tree_utils.tree_update_moment(diagonal, nu, b2_, 1), nu)
            return nu, hessian_state

        def precondition(g, m_stored, m, h):
            ratio = m / jnp.maximum(gamma_ * h, eps_)
            # The promoted dtype of gradient, stored moment and Hessian EMA, as Optax gives it.
            return jnp.clip(ratio, -clip_, clip_).astype(jnp.result_type(g, m_stored, h))

        # The step uses the Hessian EMA as it stood before this step's refresh.
        mu_hat = tree_utils.tree_bias_correction(mu, b1_, numerics.safe_increment(state.count))
        new_updates = jax.tree.map(precondition, updates, state.mu, mu_hat, state.nu)
        nu, hessian_state = jax.lax.cond(
            state.count % update_interval == 0,
            refresh,
            lambda operand: operand,
            (state.nu, state.hessian_fn_state),
        )
        if verbose and print_win_rate_every_n_steps > 0:
            clipped = sum(jnp.sum(jnp.abs(u) >= clip_) for u in jax.tree.leaves(new_updates))
            total = sum(u.size for u in jax.tree.leaves(new_updates))
            jax.lax.cond(
                state.count % print_win_rate_every_n_steps == 0,
                lambda: jax.debug.print("sophia win rate (share of unclipped coordinates): {}", 1 - clipped / total),
                lambda: None,
            )
        return new_updates, SophiaState(
            count=numerics.safe_increment(state.count),
            mu=kit.cast_like(mu, state.mu),  # mu_dtype, or the params'
            nu=nu,
            hessian_fn_state=hessian_state,
        )

    return base.GradientTransformationExtraArgs(init_fn, update_fn)


@kit.static_args("weight_decay_mask", "update_interval", "print_win_rate_every_n_steps")
def sophia(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.965,
    b2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    weight_decay_mask: Optional[Any] = None,
    gamma: float = 0.01,
    clip_threshold: Optional[float] = 1.0,
    update_interval: int = 10,
    hessian_diagonal_fn: Any = hutchinson_estimator_diag_hessian(),
    mu_dtype: Optional[Any] = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> base.GradientTransformationExtraArgs:
    r"""Sophia: momentum divided by a clipped, EMA'd diagonal Hessian estimate.

    ``update`` needs ``obj_fn=`` (the objective as a function of the params).
    Every ``update_interval`` steps (starting at the first) the Hessian
    diagonal :math:`\hat h` is estimated by ``hessian_diagonal_fn``:

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        \theta_{t+1} = \theta_t - \eta_t\left(\mathrm{clip}\!\left(\frac{m_t/(1-\beta_1^t)}{\max(\gamma h_{t-1}, \epsilon)}, \rho\right)
                     + \lambda \theta_t\right), \\
        h_t = \beta_2 h_{t-1} + (1-\beta_2) \hat h_t \ \text{if}\ t \equiv 0 \ (\mathrm{mod}\ k),
        \ \text{else}\ h_t = h_{t-1}.

    The step uses the estimate from *before* the refresh (as Optax does), so
    the first step is :math:`\pm\eta\rho` (or :math:`m/\epsilon` without clipping).

    Liu et al., `Sophia: A Scalable Stochastic Second-order Optimizer for
    Language Model Pre-training <https://arxiv.org/abs/2305.14342>`_, 2023.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: decay of the momentum.
      b2: decay of the Hessian EMA.
      eps: floor of the denominator.
      weight_decay: :math:`\lambda`, decoupled weight decay. A number or a schedule of the step count.
      weight_decay_mask: tree (or function of params) selecting the params to decay.
      gamma: :math:`\gamma`, scales the Hessian in the denominator.
      clip_threshold: :math:`\rho`, the elementwise clip (None: no clipping).
      update_interval: :math:`k`, steps between Hessian estimates.
      hessian_diagonal_fn: a transformation whose ``update(updates, state, params, obj_fn=...)``
        returns a Hessian diagonal estimate (default: Hutchinson).
      mu_dtype: dtype of the momentum.
      verbose: print the win rate (share of unclipped coordinates) with ``jax.debug.print``.
      print_win_rate_every_n_steps: how often to print it when ``verbose``.
    """
    kit.check_beta("b1", b1)  # mu is divided by 1 - b1**t
    validate.check_decay("b2", b2)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("gamma", gamma)
    validate.check_range("update_interval", update_interval, low=1)
    threshold = jnp.inf if clip_threshold is None else clip_threshold
    if clip_threshold is not None:
        validate.check_range("clip_threshold", clip_threshold, low=0.0, low_inclusive=False)
    return optcore.chain(
        _scale_by_sophia(
            b1, b2, eps, gamma, threshold, update_interval, hessian_diagonal_fn, mu_dtype,
            verbose, print_win_rate_every_n_steps,
        ),
        optcore.add_decayed_weights(weight_decay, weight_decay_mask),
        optcore.scale_by_learning_rate(learning_rate),
    )
