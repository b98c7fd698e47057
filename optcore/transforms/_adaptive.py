"""Adaptive rescaling by running moments of the gradient (Adam, RMSProp)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from optcore import validate, base, numerics, tree_utils


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates  # first moment, dtype mu_dtype or the params'
    nu: base.Updates  # second moment, dtype nu_dtype or the params'


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`."""

    nu: base.Updates


class ScaleByRmsWithCountState(NamedTuple):
    """State of :func:`scale_by_rms` with ``bias_correction=True``."""

    count: jax.Array
    nu: base.Updates


def _dtype_or_none(dtype: Optional[Any]):
    return None if dtype is None else jnp.dtype(dtype)


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
      b1: decay :math:`\beta_1` of the first moment, in [0, 1].
      b2: decay :math:`\beta_2` of the second moment, in [0, 1].
      eps: :math:`\epsilon`, added to the denominator outside the root.
      eps_root: :math:`\epsilon_{root}`, added inside the root (useful when
        differentiating through the optimizer).
      mu_dtype: dtype of the first moment (default: the params').
      nesterov: use Nesterov momentum (NAdam).
      nu_dtype: dtype in which the second moment is stored (default: the
        params'); the arithmetic is done in the dtype of the gradient, so
        ``nu_dtype=jnp.bfloat16`` halves the memory of ``nu`` without changing
        how it is computed. Not in Optax (its issue 1552).
    """
    validate.check_decay("b1", b1)
    validate.check_decay("b2", b2)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("eps_root", eps_root)
    mu_dtype = _dtype_or_none(mu_dtype)
    nu_dtype = _dtype_or_none(nu_dtype)

    def init_fn(params):
        mu = tree_utils.tree_zeros_like(params, dtype=mu_dtype)
        nu = tree_utils.tree_zeros_like(params, dtype=nu_dtype)
        return ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        del params
        mu = tree_utils.tree_update_moment(updates, state.mu, b1, 1)
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = numerics.safe_increment(state.count)
        if nesterov:
            mu_hat = jax.tree.map(
                lambda m, g: b1 * m + (1 - b1) * g,
                tree_utils.tree_bias_correction(mu, b1, numerics.safe_increment(count)),
                tree_utils.tree_bias_correction(updates, b1, count),
            )
        else:
            mu_hat = tree_utils.tree_bias_correction(mu, b1, count)
        nu_hat = tree_utils.tree_bias_correction(nu, b2, count)
        updates = jax.tree.map(
            lambda m, v: None if m is None else m / (jnp.sqrt(v + eps_root) + eps),
            mu_hat,
            nu_hat,
            is_leaf=lambda x: x is None,
        )
        mu = tree_utils.tree_cast(mu, mu_dtype)
        nu = jax.tree.map(lambda new, old: new.astype(old.dtype), nu, state.nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_rms(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> base.GradientTransformation:
    r"""Rescales updates by the root of a moving average of their squares (RMSProp).

    .. math::
        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad u_t = g_t / \sqrt{v_t + \epsilon}

    (or :math:`g_t / (\sqrt{v_t} + \epsilon)` with ``eps_in_sqrt=False``; with
    ``bias_correction=True``, :math:`v_t` is divided by :math:`1-\rho^t`).

    Hinton, `Lecture 6e of Neural Networks for Machine Learning
    <www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_, 2012.

    Args:
      decay: :math:`\rho`, in [0, 1].
      eps: :math:`\epsilon`.
      initial_scale: initial value of :math:`v`.
      eps_in_sqrt: put :math:`\epsilon` inside the root.
      bias_correction: correct the zero initialisation of :math:`v`.
    """
    validate.check_decay("decay", decay)
    validate.check_non_negative("eps", eps)

    def init_fn(params):
        nu = jax.tree.map(lambda p: jnp.full_like(p, initial_scale), params)
        if bias_correction:
            return ScaleByRmsWithCountState(count=jnp.zeros([], jnp.int32), nu=nu)
        return ScaleByRmsState(nu=nu)

    def update_fn(updates, state, params=None):
        del params
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, decay, 2)
        if bias_correction:
            count = numerics.safe_increment(state.count)
            nu_hat = tree_utils.tree_bias_correction(nu, decay, count)
        else:
            count = None
            nu_hat = nu
        if eps_in_sqrt:
            scaling = jax.tree.map(lambda n: jax.lax.rsqrt(n + eps), nu_hat)
        else:
            scaling = jax.tree.map(lambda n: 1 / (jnp.sqrt(n) + eps), nu_hat)
        updates = jax.tree.map(lambda s, g: s * g, scaling, updates)
        if bias_correction:
            return updates, ScaleByRmsWithCountState(count=count, nu=nu)
        return updates, ScaleByRmsState(nu=nu)

    return base.GradientTransformation(init_fn, update_fn)
