"""Adam-like preconditioners from recent papers: ACProp, AdEMAMix, ADOPT."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, numerics, tree_utils, validate
from optcore.transforms import ScaleByAdamState, ScaleByBeliefState

from optcore_contrib import _common


class ScaleByAdemamixState(NamedTuple):
    """State of :func:`scale_by_ademamix`: counts, fast/slow EMAs and second moment."""

    count: jax.Array
    count_m2: jax.Array
    m1: base.Updates
    m2: base.Updates
    nu: base.Updates


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """State of :func:`scale_by_simplified_ademamix`: step, momentum sum, second moment."""

    t: jax.Array
    m: base.Updates
    n: base.Updates


def _check_betas(**betas):
    """Decays of a plain EMA: [0, 1]."""
    for name, value in betas.items():
        kit.check_decay(name, value)


def _check_bias_corrected_betas(**betas):
    """Decays whose EMA is divided by ``1 - beta^t``: ``beta = 1`` would divide by zero, so [0, 1)."""
    for name, value in betas.items():
        kit.check_beta(name, value)


def scale_by_acprop(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
) -> base.GradientTransformation:
    r"""Rescales updates by ACProp, the asynchronous variant of AdaBelief.

    The denominator uses the belief :math:`s_{t-1}` of the *previous* step, so
    the current gradient does not enter its own normalisation:

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_{t-1})^2 + \epsilon_{root}, \\
        u_t = \frac{g_t}{\sqrt{s_{t-1}/(1-\beta_2^{t-1})} + \epsilon},

    with :math:`u_1 = g_1` (no belief exists before the first step). Momentum,
    if wanted, is applied outside (e.g. chained with ``trace``).

    Zhuang et al., `Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods <https://arxiv.org/abs/2110.05454>`_, 2021.

    Args:
      b1: decay of the gradient EMA, in [0, 1].
      b2: decay of the belief (squared prediction error) EMA, in [0, 1].
      eps: added to the denominator outside the root.
      eps_root: added to the belief inside the root.
    """
    _check_betas(b1=b1)
    _check_bias_corrected_betas(b2=b2)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("eps_root", eps_root)

    def init_fn(params):
        return ScaleByBeliefState(
            count=kit.zero_count(),
            mu=tree_utils.state_zeros_like(params),
            nu=tree_utils.state_zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = kit.hyperparameter_dtype(updates)
        del params
        # Float32 (x64: float64) hyperparameters: the same bits with and without inject_hyperparams.
        b1_, b2_, eps_, eps_root_ = (kit.f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root))
        mu = tree_utils.tree_update_moment(updates, state.mu, b1_, 1)
        # The prediction error is measured against the EMA *before* this gradient.
        prediction_error = jax.tree.map(lambda g, m: g - m, updates, state.mu)
        nu = tree_utils.tree_update_moment_per_elem_norm(prediction_error, state.nu, b2_, 2)
        nu = jax.tree.map(lambda v: v + eps_root_, nu)
        first_step = state.count == 0
        # Asynchronous update: normalise by the belief of the previous step; on
        # the first step there is none, and the gradient passes unscaled.
        previous_nu_hat = tree_utils.tree_bias_correction(state.nu, b2_, jnp.maximum(state.count, 1))
        new_updates = jax.tree.map(
            lambda g, v: jnp.where(first_step, g, g / (jnp.sqrt(v) + eps_)).astype(g.dtype),
            updates,
            previous_nu_hat,
        )
        count = numerics.safe_increment(state.count)
        return new_updates, ScaleByBeliefState(
            count=count, mu=kit.cast_like(mu, state.mu), nu=kit.cast_like(nu, state.nu)
        )

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("mask")
def acprop(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""The ACProp optimizer: :func:`scale_by_acprop`, decoupled weight decay, learning rate.

    .. math::
        \theta_{t+1} = \theta_t - \eta_t (u_t + \lambda \theta_t)

    with :math:`u_t` from :func:`scale_by_acprop`.

    Zhuang et al., `Momentum Centering and Asynchronous Update for Adaptive
    Gradient Methods <https://arxiv.org/abs/2110.05454>`_, 2021.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: decay of the gradient EMA.
      b2: decay of the belief EMA.
      eps: added to the denominator outside the root.
      eps_root: added to the belief inside the root.
      weight_decay: :math:`\lambda`, decoupled weight decay. A number or a schedule of the step count.
      mask: tree (or function of params) selecting the params to decay.
    """
    return _common.with_decay_and_lr(
        scale_by_acprop(b1=b1, b2=b2, eps=eps, eps_root=eps_root), learning_rate, weight_decay, mask
    )


def scale_by_ademamix(
    b1: float = 0.9,
    b2: float = 0.999,
    b3: base.ScalarOrSchedule = 0.9999,
    alpha: base.ScalarOrSchedule = 6.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Rescales updates by AdEMAMix: Adam with a mixture of a fast and a slow EMA.

    .. math::
        m^{(1)}_t = \beta_1 m^{(1)}_{t-1} + (1-\beta_1) g_t, \quad
        m^{(2)}_t = \beta_3 m^{(2)}_{t-1} + (1-\beta_3) g_t, \quad
        \nu_t = \beta_2 \nu_{t-1} + (1-\beta_2) g_t^2, \\
        u_t = \frac{m^{(1)}_t/(1-\beta_1^t) + \alpha\, m^{(2)}_t}
                   {\sqrt{\nu_t/(1-\beta_2^t) + \epsilon_{root}} + \epsilon}.

    The slow EMA is not bias corrected. ``b3`` and ``alpha`` may be schedules
    of ``count_m2`` (the paper warms them up).

    Pagliardini et al., `The AdEMAMix Optimizer: Better, Faster, Older
    <https://arxiv.org/abs/2409.03137>`_, 2024.

    Args:
      b1: decay :math:`\beta_1` of the fast EMA.
      b2: decay :math:`\beta_2` of the second moment.
      b3: decay :math:`\beta_3` of the slow EMA (scalar or schedule).
      alpha: mixing weight :math:`\alpha` of the slow EMA (scalar or schedule).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of both EMAs and of the second moment (default: the
        params'), as in Optax.
    """
    _check_bias_corrected_betas(b1=b1, b2=b2)
    _check_betas(b3=b3)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("eps_root", eps_root)
    mu_dtype = kit.dtype_or_none(mu_dtype)

    def init_fn(params):
        return ScaleByAdemamixState(
            count=kit.zero_count(),
            count_m2=kit.zero_count(),
            m1=tree_utils.state_zeros_like(params, dtype=mu_dtype),
            m2=tree_utils.state_zeros_like(params, dtype=mu_dtype),
            nu=tree_utils.state_zeros_like(params, dtype=mu_dtype),  # as Optax 0.2.8: all three in mu_dtype
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = kit.hyperparameter_dtype(updates)
        del params
        # Float32 (x64: float64) hyperparameters (schedules evaluated first): the same bits with
        # and without inject_hyperparams.
        b1_, b2_, eps_, eps_root_ = (kit.f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root))
        b3_now = kit.f32(kit.value_at(b3, state.count_m2), hyper_dtype)
        alpha_now = kit.f32(kit.value_at(alpha, state.count_m2), hyper_dtype)
        m1 = tree_utils.tree_update_moment(updates, state.m1, b1_, 1)
        m2 = tree_utils.tree_update_moment(updates, state.m2, b3_now, 1)
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2_, 2)
        count = numerics.safe_increment(state.count)
        count_m2 = numerics.safe_increment(state.count_m2)
        m1_hat = tree_utils.tree_bias_correction(m1, b1_, count)
        nu_hat = tree_utils.tree_bias_correction(nu, b2_, count)
        new_updates = jax.tree.map(
            lambda fast, slow, v: (fast + alpha_now * slow) / (jnp.sqrt(v + eps_root_) + eps_), m1_hat, m2, nu_hat
        )
        new_updates = kit.cast_promoted(new_updates, updates, state.m1, state.m2, state.nu)
        # The moments keep the dtypes they were initialised with (mu_dtype, or the params').
        return new_updates, ScaleByAdemamixState(
            count=count,
            count_m2=count_m2,
            m1=kit.cast_like(m1, state.m1),
            m2=kit.cast_like(m2, state.m2),
            nu=kit.cast_like(nu, state.nu),
        )

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("mask")
def ademamix(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: base.ScalarOrSchedule = 0.9999,
    alpha: base.ScalarOrSchedule = 5.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""The AdEMAMix optimizer: :func:`scale_by_ademamix` with decoupled weight decay.

    .. math::
        \theta_{t+1} = \theta_t - \eta_t (u_t + \lambda \theta_t)

    Pagliardini et al., `The AdEMAMix Optimizer: Better, Faster, Older
    <https://arxiv.org/abs/2409.03137>`_, 2024.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: decay of the fast EMA.
      b2: decay of the second moment.
      b3: decay of the slow EMA (scalar or schedule).
      alpha: mixing weight of the slow EMA (scalar or schedule).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of the EMAs.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      mask: tree (or function of params) selecting the params to decay.
    """
    return _common.with_decay_and_lr(
        scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype), learning_rate, weight_decay, mask
    )


def scale_by_simplified_ademamix(
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: base.ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> base.GradientTransformation:
    r"""Rescales updates by Simplified AdEMAMix (a single, unnormalised momentum).

    .. math::
        m_t = \beta_1 m_{t-1} + g_t, \quad
        n_t = \beta_2 n_{t-1} + (1-\beta_2) g_t^2, \\
        u_t = \frac{\alpha g_t + m_t}{\sqrt{n_t/(1-\beta_2^t) + \epsilon_{root}} + \epsilon}.

    Morwani et al., `Connections between Schedule-Free Optimizers, AdEMAMix,
    and Accelerated SGD Variants <https://arxiv.org/abs/2502.02431>`_, 2025.

    Args:
      b1: decay :math:`\beta_1` of the momentum sum.
      b2: decay :math:`\beta_2` of the second moment.
      alpha: weight :math:`\alpha` of the current gradient (scalar or schedule of the step).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
    """
    _check_betas(b1=b1)
    _check_bias_corrected_betas(b2=b2)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("eps_root", eps_root)

    def init_fn(params):
        return ScaleBySimplifiedAdEMAMixState(
            t=kit.zero_count(),
            m=tree_utils.state_zeros_like(params),
            n=tree_utils.state_zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = kit.hyperparameter_dtype(updates)
        del params
        validate.check_tree_match(updates, state.m)
        # Float32 (x64: float64) hyperparameters (schedules evaluated first): the same bits with
        # and without inject_hyperparams.
        b1_, b2_, eps_, eps_root_ = (kit.f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root))
        alpha_now = kit.f32(kit.value_at(alpha, state.t), hyper_dtype)
        m = jax.tree.map(lambda old, g: b1_ * old + g, state.m, updates)
        n = tree_utils.tree_update_moment_per_elem_norm(updates, state.n, b2_, 2)
        t = numerics.safe_increment(state.t)
        n_hat = tree_utils.tree_bias_correction(n, b2_, t)
        new_updates = jax.tree.map(
            lambda g, mom, v: ((alpha_now * g + mom) / (jnp.sqrt(v + eps_root_) + eps_)).astype(g.dtype),
            updates,
            m,
            n_hat,
        )
        return new_updates, ScaleBySimplifiedAdEMAMixState(
            t=t, m=kit.cast_like(m, state.m), n=kit.cast_like(n, state.n)
        )

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("mask")
def simplified_ademamix(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.99,
    b2: float = 0.95,
    alpha: base.ScalarOrSchedule = 0.0,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Simplified AdEMAMix: :func:`scale_by_simplified_ademamix` with decoupled weight decay.

    .. math::
        \theta_{t+1} = \theta_t - \eta_t (u_t + \lambda \theta_t)

    Morwani et al., `Connections between Schedule-Free Optimizers, AdEMAMix,
    and Accelerated SGD Variants <https://arxiv.org/abs/2502.02431>`_, 2025.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: decay of the momentum sum.
      b2: decay of the second moment.
      alpha: weight of the current gradient.
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      mask: tree (or function of params) selecting the params to decay.
    """
    return _common.with_decay_and_lr(
        scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root), learning_rate, weight_decay, mask
    )


def _fourth_root(step):
    return step**0.25


def scale_by_adopt(
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root,
) -> base.GradientTransformation:
    r"""Rescales updates by ADOPT: normalise by the *previous* second moment, then average.

    The first step only initialises :math:`v_0 = g_0^2` (the update is zero). Then

    .. math::
        \tilde g_t = \mathrm{clip}\!\left(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},
                     c(t)\right), \quad
        m_t = \beta_1 m_{t-1} + (1-\beta_1) \tilde g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad u_t = m_t,

    with :math:`c(t) = t^{1/4}` by default; Nesterov uses
    :math:`u_t = \beta_1 m_t + (1-\beta_1)\tilde g_t`.

    Taniguchi et al., `ADOPT: Modified Adam Can Converge with Any beta_2 with
    the Optimal Rate <https://arxiv.org/abs/2411.02853>`_, 2024.

    Args:
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: floor of :math:`\sqrt{v}`.
      mu_dtype: dtype of the first moment.
      nesterov: use Nesterov momentum.
      use_clipping: clip the normalised gradient to :math:`[-c(t), c(t)]`.
      clip_value_fn: :math:`c`, a function of the step count.
    """
    _check_betas(b1=b1, b2=b2)
    validate.check_non_negative("eps", eps)
    mu_dtype = kit.dtype_or_none(mu_dtype)

    def init_fn(params):
        return ScaleByAdamState(
            count=kit.zero_count(),
            mu=tree_utils.state_zeros_like(params, dtype=mu_dtype),
            nu=tree_utils.state_zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        first_step = state.count == 0
        # On the first step nu is set to g**2 and the momentum is left untouched.
        b2_now = jnp.where(first_step, 0.0, b2)
        b1_now = jnp.where(first_step, 1.0, b1)
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2_now, 2)

        def normalise(g, v):
            scaled = g / jnp.maximum(jnp.sqrt(v), eps)
            if use_clipping:
                bound = clip_value_fn(state.count)
                scaled = jnp.clip(scaled, -bound, bound)
            return scaled

        normalised = jax.tree.map(normalise, updates, state.nu)
        mu = tree_utils.tree_update_moment(normalised, state.mu, b1_now, 1)
        if nesterov:
            new_updates = jax.tree.map(
                lambda m, g: b1_now * m + (1 - b1_now) * g, mu, normalised
            )
        else:
            new_updates = mu
        # With Python-float b1, b2, eps the arithmetic stays in the arrays'
        # dtypes; float32 array hyperparameters (inject_hyperparams, a
        # schedule) would promote bf16 to float32, so the results are cast to
        # those dtypes: a bf16 state stays bf16 (a scan carry needs that).
        new_updates = kit.cast_promoted(new_updates, updates, state.nu, state.mu)
        new_state = ScaleByAdamState(
            count=numerics.safe_increment(state.count),
            mu=kit.cast_like(mu, state.mu),
            nu=kit.cast_like(nu, state.nu),
        )
        return new_updates, new_state

    return base.GradientTransformation(init_fn, update_fn)


def adopt(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.9999,
    eps: float = 1e-6,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _fourth_root,
) -> base.GradientTransformationExtraArgs:
    r"""The ADOPT optimizer: :math:`\theta_{t+1} = \theta_t - \eta_t u_t` with :func:`scale_by_adopt`.

    Taniguchi et al., `ADOPT: Modified Adam Can Converge with Any beta_2 with
    the Optimal Rate <https://arxiv.org/abs/2411.02853>`_, 2024.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: decay of the first moment.
      b2: decay of the second moment.
      eps: floor of :math:`\sqrt{v}`.
      mu_dtype: dtype of the first moment.
      nesterov: use Nesterov momentum.
      use_clipping: clip the normalised gradient.
      clip_value_fn: the clipping bound as a function of the step count.
    """
    return optcore.chain(
        scale_by_adopt(
            b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping, clip_value_fn=clip_value_fn
        ),
        optcore.scale_by_learning_rate(learning_rate),
    )
