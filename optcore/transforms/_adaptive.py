"""Adaptive rescaling by bias-corrected moments of the gradient.

Adam and its relatives: AMSGrad, AdaMax, AdaBelief, Yogi, RAdam and Adan.
Every hyperparameter enters the arithmetic as a float32 array (float64 for
float64 updates under x64; see :mod:`optcore.kit`); moments are stored in their
state dtype and updates are returned in the dtype of the incoming updates.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from optcore import base, numerics, tree_utils, validate
from optcore.kit import cast_like, cast_promoted, check_beta, dtype_or_none, f32, hyperparameter_dtype


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam` (also of AdaMax, Yogi and RAdam)."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates  # first moment, dtype mu_dtype or the params'
    nu: base.Updates  # second moment, dtype nu_dtype or the params'


class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_amsgrad`."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates
    nu: base.Updates
    nu_max: base.Updates  # running maximum of the (corrected) second moment


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates
    nu: base.Updates  # moving average of the squared prediction error


class ScaleByAdanState(NamedTuple):
    """State of :func:`scale_by_adan`."""

    m: base.Updates  # moving average of the gradients
    v: base.Updates  # moving average of the gradient differences
    n: base.Updates  # moving average of the squared corrected gradients
    g: base.Updates  # the previous gradient
    t: jax.Array  # shape=(), dtype=int32


def _zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def _init_moments(state_cls, mu_dtype=None, nu_dtype=None):
    """``init`` of a ``(count, mu, nu)`` state: a zero count and zero moments shaped like the params."""

    def init_fn(params):
        return state_cls(
            count=_zero_count(),
            mu=tree_utils.state_zeros_like(params, dtype=mu_dtype),
            nu=tree_utils.state_zeros_like(params, dtype=nu_dtype),
        )

    return init_fn


def _debiased_first_moment(mu, updates, b1, count, nesterov: bool):
    r""":math:`\hat m_t`, with Nesterov's look-ahead when ``nesterov``."""
    if not nesterov:
        return tree_utils.tree_bias_correction(mu, b1, count)
    # NAdam (Dozat 2016): mix the next step's corrected momentum with the
    # current corrected gradient.
    return jax.tree.map(
        lambda m, g: None if g is None else b1 * m + (1 - b1) * g,
        tree_utils.tree_bias_correction(mu, b1, numerics.safe_increment(count)),
        tree_utils.tree_bias_correction(updates, b1, count),
        is_leaf=lambda x: x is None,
    )


def _divide(dtype_references, numerator, denominator_fn, *denominators):
    """``numerator / denominator_fn(*denominators)`` leafwise.

    In the promoted dtype of the leaves of ``dtype_references`` (the gradient
    and the stored moments), as Optax gives it: float32 for bf16 gradients
    with a float32 ``mu``.
    """
    quotient = jax.tree.map(
        lambda m, *d: None if m is None else m / denominator_fn(*d), numerator, *denominators, is_leaf=lambda x: x is None
    )
    return cast_promoted(quotient, *dtype_references)


def _check_adam_args(b1, b2, eps, eps_root) -> None:
    check_beta("b1", b1)
    check_beta("b2", b2)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("eps_root", eps_root)


def scale_by_adam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Rescales updates by Adam's bias-corrected moment estimates.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \hat m_t = m_t / (1-\beta_1^t), \quad \hat v_t = v_t / (1-\beta_2^t), \quad
        u_t = \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon).

    With ``nesterov=True`` (NAdam, Dozat 2016),
    :math:`\hat m_t = \beta_1 m_t/(1-\beta_1^{t+1}) + (1-\beta_1) g_t/(1-\beta_1^t)`.

    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_, 2014.

    Args:
      b1: decay :math:`\beta_1` of the first moment, in [0, 1).
      b2: decay :math:`\beta_2` of the second moment, in [0, 1).
      eps: :math:`\epsilon`, added to the denominator outside the root.
      eps_root: :math:`\epsilon_{root}`, added inside the root (useful when
        differentiating through the optimizer).
      mu_dtype: dtype of the first moment (default: the params').
      nesterov: use Nesterov momentum (NAdam).
      nu_dtype: dtype in which the second moment is stored (default: the
        params'); the arithmetic is done in float32 or wider, so
        ``nu_dtype=jnp.bfloat16`` halves the memory of ``nu`` without changing
        how it is computed. Not in Optax (its issue 1552).
    """
    _check_adam_args(b1, b2, eps, eps_root)
    mu_dtype = dtype_or_none(mu_dtype)
    nu_dtype = dtype_or_none(nu_dtype)

    init_fn = _init_moments(ScaleByAdamState, mu_dtype, nu_dtype)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        b1_, b2_, eps_, eps_root_ = (f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root))
        mu = tree_utils.tree_update_moment(updates, state.mu, b1_, 1)
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2_, 2)
        count = numerics.safe_increment(state.count)
        mu_hat = _debiased_first_moment(mu, updates, b1_, count, nesterov)
        nu_hat = tree_utils.tree_bias_correction(nu, b2_, count)
        new_updates = _divide((updates, state.mu, state.nu), mu_hat, lambda v: jnp.sqrt(v + eps_root_) + eps_, nu_hat)
        return new_updates, ScaleByAdamState(count=count, mu=cast_like(mu, state.mu), nu=cast_like(nu, state.nu))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_amsgrad(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Rescales updates by AMSGrad: Adam with a non-decreasing second moment.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        \hat v^{max}_t = \max(\hat v^{max}_{t-1}, \hat v_t), \quad
        u_t = \hat m_t / (\sqrt{\hat v^{max}_t + \epsilon_{root}} + \epsilon)

    where :math:`\hat m_t, \hat v_t` are bias-corrected (each optionally).

    Reddi et al., `On the Convergence of Adam and Beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_, 2018.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of the first moment.
      bias_correction_mu: divide :math:`m_t` by :math:`1-\beta_1^t`.
      bias_correction_nu: divide :math:`v_t` by :math:`1-\beta_2^t` before the maximum.
      nu_dtype: storage dtype of ``nu`` and ``nu_max`` (optcore extension).
    """
    _check_adam_args(b1, b2, eps, eps_root)
    mu_dtype = dtype_or_none(mu_dtype)
    nu_dtype = dtype_or_none(nu_dtype)

    def init_fn(params):
        return ScaleByAmsgradState(
            count=_zero_count(),
            mu=tree_utils.state_zeros_like(params, dtype=mu_dtype),
            nu=tree_utils.state_zeros_like(params, dtype=nu_dtype),
            nu_max=tree_utils.state_zeros_like(params, dtype=nu_dtype),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        b1_, b2_, eps_, eps_root_ = (f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root))
        mu = tree_utils.tree_update_moment(updates, state.mu, b1_, 1)
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2_, 2)
        count = numerics.safe_increment(state.count)
        mu_hat = tree_utils.tree_bias_correction(mu, b1_, count) if bias_correction_mu else mu
        nu_hat = tree_utils.tree_bias_correction(nu, b2_, count) if bias_correction_nu else nu
        nu_max = jax.tree.map(jnp.maximum, state.nu_max, nu_hat)
        new_updates = _divide((updates, state.mu, state.nu_max), mu_hat, lambda v: jnp.sqrt(v + eps_root_) + eps_, nu_max)
        return new_updates, ScaleByAmsgradState(
            count=count,
            mu=cast_like(mu, state.mu),
            nu=cast_like(nu, state.nu),
            nu_max=cast_like(nu_max, state.nu_max),
        )

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_adamax(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> base.GradientTransformation:
    r"""Rescales updates by AdaMax: Adam with an infinity-norm second moment.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \max(\beta_2 v_{t-1}, |g_t| + \epsilon), \quad
        u_t = \frac{m_t}{(1-\beta_1^t)\, v_t}

    Kingma & Ba, `Adam: A Method for Stochastic Optimization
    <https://arxiv.org/abs/1412.6980>`_ (section 7.1), 2014.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity norm, in [0, 1].
      eps: added to :math:`|g_t|`, keeping :math:`v_t > 0`.
    """
    check_beta("b1", b1)
    validate.check_decay("b2", b2)
    validate.check_non_negative("eps", eps)

    init_fn = _init_moments(ScaleByAdamState)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        b1_, b2_, eps_ = (f32(x, hyper_dtype) for x in (b1, b2, eps))
        count = numerics.safe_increment(state.count)
        mu = tree_utils.tree_update_moment(updates, state.mu, b1_, 1)
        nu = jax.tree.map(lambda g, v: jnp.maximum(jnp.abs(g) + eps_, b2_ * v), updates, state.nu)
        mu_hat = tree_utils.tree_bias_correction(mu, b1_, count)
        new_updates = _divide((updates, state.mu, state.nu), mu_hat, lambda v: v, nu)
        return new_updates, ScaleByAdamState(count=count, mu=cast_like(mu, state.mu), nu=cast_like(nu, state.nu))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_belief(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Rescales updates by AdaBelief: the second moment of the prediction error.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        s_t = \beta_2 s_{t-1} + (1-\beta_2) (g_t - m_t)^2 + \epsilon_{root}, \\
        u_t = \frac{m_t/(1-\beta_1^t)}{\sqrt{s_t/(1-\beta_2^t)} + \epsilon}

    Zhuang et al., `AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients <https://arxiv.org/abs/2010.07468>`_, 2020.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the belief (second) moment, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added to :math:`s_t` at every step.
      nesterov: use Nesterov momentum for :math:`\hat m_t`.
      nu_dtype: storage dtype of ``nu`` (optcore extension).
    """
    _check_adam_args(b1, b2, eps, eps_root)
    nu_dtype = dtype_or_none(nu_dtype)

    init_fn = _init_moments(ScaleByBeliefState, nu_dtype=nu_dtype)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        b1_, b2_, eps_, eps_root_ = (f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root))
        mu = tree_utils.tree_update_moment(updates, state.mu, b1_, 1)
        prediction_error = jax.tree.map(lambda g, m: g - m, updates, mu)
        nu = tree_utils.tree_update_moment_per_elem_norm(prediction_error, state.nu, b2_, 2)
        nu = jax.tree.map(lambda v: v + eps_root_, nu)
        count = numerics.safe_increment(state.count)
        mu_hat = _debiased_first_moment(mu, updates, b1_, count, nesterov)
        nu_hat = tree_utils.tree_bias_correction(nu, b2_, count)
        new_updates = _divide((updates, state.mu, state.nu), mu_hat, lambda v: jnp.sqrt(v) + eps_, nu_hat)
        return new_updates, ScaleByBeliefState(count=count, mu=cast_like(mu, state.mu), nu=cast_like(nu, state.nu))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_yogi(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    eps_root: float = 0.0,
    initial_accumulator_value: float = 1e-6,
    *,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Rescales updates by Yogi: an additive, sign-controlled second moment.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = v_{t-1} - (1-\beta_2)\,\mathrm{sign}(v_{t-1} - g_t^2)\, g_t^2, \\
        u_t = \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t) + \epsilon_{root}} + \epsilon}

    Zaheer et al., `Adaptive Methods for Nonconvex Optimization
    <https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization.pdf>`_, 2018.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: rate of the second moment, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      initial_accumulator_value: initial value of both moments.
      nu_dtype: storage dtype of ``nu`` (optcore extension).
    """
    _check_adam_args(b1, b2, eps, eps_root)
    nu_dtype = dtype_or_none(nu_dtype)

    def init_fn(params):
        return ScaleByAdamState(
            count=_zero_count(),
            mu=tree_utils.state_full_like(params, initial_accumulator_value),
            nu=tree_utils.state_full_like(params, initial_accumulator_value, dtype=nu_dtype),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        b1_, b2_, eps_, eps_root_ = (f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root))
        mu = tree_utils.tree_update_moment(updates, state.mu, b1_, 1)

        def yogi_nu(g, v):
            g2 = numerics.abs_sq(g)
            # v is unchanged where v == g^2 (sign 0); spelt out so that
            # v = g^2 = inf (an overflowed square) stays inf instead of
            # becoming sign(inf - inf) * inf = NaN.
            return jnp.where(v == g2, v, v - (1 - b2_) * jnp.sign(v - g2) * g2)

        nu = jax.tree.map(yogi_nu, updates, state.nu)
        count = numerics.safe_increment(state.count)
        mu_hat = tree_utils.tree_bias_correction(mu, b1_, count)
        nu_hat = tree_utils.tree_bias_correction(nu, b2_, count)
        new_updates = _divide((updates, state.mu, state.nu), mu_hat, lambda v: jnp.sqrt(v + eps_root_) + eps_, nu_hat)
        return new_updates, ScaleByAdamState(count=count, mu=cast_like(mu, state.mu), nu=cast_like(nu, state.nu))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Rescales updates by Rectified Adam.

    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1-\beta_2^t)`,

    .. math::
        u_t = \begin{cases}
          r_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon) & \rho_t \ge \tau \\
          \hat m_t & \text{otherwise}
        \end{cases}, \quad
        r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    with Adam's bias-corrected moments :math:`\hat m_t, \hat v_t`.

    Liu et al., `On the Variance of the Adaptive Learning Rate and Beyond
    <https://arxiv.org/abs/1908.03265>`_, 2020.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      threshold: :math:`\tau`, the smallest :math:`\rho_t` at which the
        adaptive step is used (it is never used while :math:`\rho_t \le 4`,
        where Optax returns NaN).
      nesterov: use Nesterov momentum for :math:`\hat m_t`.
      nu_dtype: storage dtype of ``nu`` (optcore extension).
    """
    _check_adam_args(b1, b2, eps, eps_root)
    nu_dtype = dtype_or_none(nu_dtype)

    init_fn = _init_moments(ScaleByAdamState, nu_dtype=nu_dtype)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        b1_, b2_, eps_, eps_root_ = (f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root))
        rho_inf = 2 / (1 - b2_) - 1
        mu = tree_utils.tree_update_moment(updates, state.mu, b1_, 1)
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2_, 2)
        count = numerics.safe_increment(state.count)
        # rho_t is a difference of two numbers of order 2/(1-b2): 1 - b2**t is
        # computed with expm1 (and 1 - b2 exactly) so the difference keeps
        # its precision in float32.
        log_b2_t = count * jnp.log1p(-(1 - b2_))
        rho = rho_inf - 2 * count * jnp.exp(log_b2_t) / -jnp.expm1(log_b2_t)
        mu_hat = _debiased_first_moment(mu, updates, b1_, count, nesterov)
        nu_hat = tree_utils.tree_bias_correction(nu, b2_, count)
        # The rectifier is defined only for rho > 4 (a threshold below 4 would
        # take the root of a negative number); elsewhere the momentum step is
        # used and a dummy rho keeps the unused branch finite.
        use_adaptive = jnp.logical_and(rho >= f32(threshold, hyper_dtype), rho > 4)
        safe_rho = jnp.where(rho > 4, rho, rho_inf)
        rectifier = jnp.sqrt((safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho))
        new_updates = jax.tree.map(
            lambda g, m, v, m_stored, v_stored: jnp.where(
                use_adaptive, rectifier * m / (jnp.sqrt(v + eps_root_) + eps_), m
            ).astype(jnp.result_type(g, m_stored, v_stored)),
            updates,
            mu_hat,
            nu_hat,
            state.mu,
            state.nu,
        )
        return new_updates, ScaleByAdamState(count=count, mu=cast_like(mu, state.mu), nu=cast_like(nu, state.nu))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_adan(
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 0.0,
) -> base.GradientTransformation:
    r"""Rescales updates by Adan: adaptive Nesterov momentum.

    With :math:`\Delta_t = g_t - g_{t-1}` (and :math:`\Delta_1 = 0`),

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) \Delta_t, \\
        n_t = \beta_3 n_{t-1} + (1-\beta_3) (g_t + (1-\beta_2)\Delta_t)^2, \\
        u_t = \frac{\hat m_t + (1-\beta_2) \hat v_t}{\sqrt{\hat n_t + \epsilon_{root}} + \epsilon}

    where hats denote bias correction by :math:`1-\beta_i^t`.

    Xie et al., `Adan: Adaptive Nesterov Momentum Algorithm for Faster
    Optimizing Deep Models <https://arxiv.org/abs/2208.06677>`_, 2022.

    Args:
      b1: decay of the gradient average, in [0, 1).
      b2: decay of the gradient-difference average, in [0, 1).
      b3: decay of the squared average, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
    """
    _check_adam_args(b1, b2, eps, eps_root)
    check_beta("b3", b3)

    def init_fn(params):
        zeros = lambda: tree_utils.state_zeros_like(params)  # noqa: E731
        return ScaleByAdanState(m=zeros(), v=zeros(), n=zeros(), g=zeros(), t=_zero_count())

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        validate.check_tree_match(updates, state.g)
        b1_, b2_, b3_, eps_, eps_root_ = (f32(x, hyper_dtype) for x in (b1, b2, b3, eps, eps_root))
        is_first = state.t == 0
        diff = jax.tree.map(lambda g, prev: jnp.where(is_first, jnp.zeros_like(g), g - prev), updates, state.g)
        m = tree_utils.tree_update_moment(updates, state.m, b1_, 1)
        v = tree_utils.tree_update_moment(diff, state.v, b2_, 1)
        corrected = jax.tree.map(lambda g, d: g + (1 - b2_) * d, updates, diff)
        n = tree_utils.tree_update_moment_per_elem_norm(corrected, state.n, b3_, 2)
        t = numerics.safe_increment(state.t)
        m_hat = tree_utils.tree_bias_correction(m, b1_, t)
        v_hat = tree_utils.tree_bias_correction(v, b2_, t)
        n_hat = tree_utils.tree_bias_correction(n, b3_, t)
        direction = jax.tree.map(lambda a, b: a + (1 - b2_) * b, m_hat, v_hat)
        new_updates = _divide((updates, state.m, state.v, state.n), direction, lambda x: jnp.sqrt(x + eps_root_) + eps_, n_hat)
        return new_updates, ScaleByAdanState(
            m=cast_like(m, state.m),
            v=cast_like(v, state.v),
            n=cast_like(n, state.n),
            g=cast_like(updates, state.g),
            t=t,
        )

    return base.GradientTransformation(init_fn, update_fn)
