"""Rescaling by accumulated squares: RMSProp, centered RMSProp, AdaGrad,
AdaDelta, SM3 and NovoGrad."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from optcore import base, numerics, tree_utils, validate
from optcore.kit import cast_like, check_beta, dtype_or_none, f32, hyperparameter_dtype, map_params


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`."""

    nu: base.Updates


class ScaleByRmsWithCountState(NamedTuple):
    """State of :func:`scale_by_rms` with ``bias_correction=True``."""

    count: jax.Array  # shape=(), dtype=int32
    nu: base.Updates


class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev`."""

    mu: base.Updates
    nu: base.Updates


class ScaleByRStdDevWithCountState(NamedTuple):
    """State of :func:`scale_by_stddev` with ``bias_correction=True``."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates
    nu: base.Updates


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`."""

    sum_of_squares: base.Updates


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`."""

    e_g: base.Updates  # moving average of squared gradients
    e_x: base.Updates  # moving average of squared updates


class ScaleBySM3State(NamedTuple):
    """State of :func:`scale_by_sm3`."""

    mu: base.Updates  # per leaf, a list of one accumulator vector per axis
    nu: base.Updates  # momentum of the preconditioned updates


class ScaleByNovogradState(NamedTuple):
    """State of :func:`scale_by_novograd`."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates
    nu: base.Updates  # one scalar per leaf


def _inverse_root(x, eps, eps_in_sqrt: bool):
    if eps_in_sqrt:
        return jax.lax.rsqrt(x + eps)
    return 1 / (jnp.sqrt(x) + eps)


def _scale_leaves(updates, scaling):
    return jax.tree.map(lambda g, s: (s * g).astype(g.dtype), updates, scaling)


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
    <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_, 2012.

    Args:
      decay: :math:`\rho`, in [0, 1] (in [0, 1) with ``bias_correction``).
      eps: :math:`\epsilon`.
      initial_scale: initial value of :math:`v`.
      eps_in_sqrt: put :math:`\epsilon` inside the root.
      bias_correction: correct the zero initialisation of :math:`v`.
    """
    (check_beta if bias_correction else validate.check_decay)("decay", decay)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("initial_scale", initial_scale)

    def init_fn(params):
        nu = tree_utils.state_full_like(params, initial_scale)
        if bias_correction:
            return ScaleByRmsWithCountState(count=jnp.zeros([], jnp.int32), nu=nu)
        return ScaleByRmsState(nu=nu)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        decay_, eps_ = (f32(x, hyper_dtype) for x in (decay, eps))
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, decay_, 2)
        if bias_correction:
            count = numerics.safe_increment(state.count)
            nu_hat = tree_utils.tree_bias_correction(nu, decay_, count)
        else:
            nu_hat = nu
        scaling = jax.tree.map(lambda n: _inverse_root(n, eps_, eps_in_sqrt), nu_hat)
        updates = _scale_leaves(updates, scaling)
        nu = cast_like(nu, state.nu)
        if bias_correction:
            return updates, ScaleByRmsWithCountState(count=count, nu=nu)
        return updates, ScaleByRmsState(nu=nu)

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_stddev(
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
) -> base.GradientTransformation:
    r"""Rescales updates by their running standard deviation (centered RMSProp).

    .. math::
        m_t = \rho m_{t-1} + (1-\rho) g_t, \quad
        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
        u_t = g_t / \sqrt{v_t - m_t^2 + \epsilon}

    (or :math:`g_t / (\sqrt{v_t - m_t^2} + \epsilon)` with ``eps_in_sqrt=False``;
    with ``bias_correction=True`` both moments are divided by :math:`1-\rho^t`).

    Graves, `Generating Sequences With Recurrent Neural Networks
    <https://arxiv.org/abs/1308.0850>`_, 2013.

    Args:
      decay: :math:`\rho`, in [0, 1] (in [0, 1) with ``bias_correction``).
      eps: :math:`\epsilon`.
      initial_scale: initial value of :math:`v`.
      eps_in_sqrt: put :math:`\epsilon` inside the root.
      bias_correction: correct the zero initialisation of the moments.
    """
    (check_beta if bias_correction else validate.check_decay)("decay", decay)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("initial_scale", initial_scale)

    def init_fn(params):
        mu = tree_utils.state_zeros_like(params)
        nu = tree_utils.state_full_like(params, initial_scale)
        if bias_correction:
            return ScaleByRStdDevWithCountState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)
        return ScaleByRStdDevState(mu=mu, nu=nu)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        decay_, eps_ = (f32(x, hyper_dtype) for x in (decay, eps))
        mu = tree_utils.tree_update_moment(updates, state.mu, decay_, 1)
        nu = tree_utils.tree_update_moment_per_elem_norm(updates, state.nu, decay_, 2)
        if bias_correction:
            count = numerics.safe_increment(state.count)
            mu_hat = tree_utils.tree_bias_correction(mu, decay_, count)
            nu_hat = tree_utils.tree_bias_correction(nu, decay_, count)
        else:
            mu_hat, nu_hat = mu, nu
        scaling = jax.tree.map(
            lambda m, n: _inverse_root(n - numerics.abs_sq(m), eps_, eps_in_sqrt), mu_hat, nu_hat
        )
        updates = _scale_leaves(updates, scaling)
        mu, nu = cast_like(mu, state.mu), cast_like(nu, state.nu)
        if bias_correction:
            return updates, ScaleByRStdDevWithCountState(count=count, mu=mu, nu=nu)
        return updates, ScaleByRStdDevState(mu=mu, nu=nu)

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_rss(
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> base.GradientTransformation:
    r"""Rescales updates by the root of the sum of all past squared gradients (AdaGrad).

    .. math::
        s_t = s_{t-1} + g_t^2, \quad u_t = g_t / \sqrt{s_t + \epsilon}
        \quad (u_t = 0 \text{ where } s_t = 0)

    Duchi et al., `Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization <https://jmlr.org/papers/v12/duchi11a.html>`_, 2011.

    Args:
      initial_accumulator_value: initial value :math:`s_0`.
      eps: :math:`\epsilon`, added inside the root.
    """
    validate.check_non_negative("initial_accumulator_value", initial_accumulator_value)
    validate.check_non_negative("eps", eps)

    def init_fn(params):
        return ScaleByRssState(
            sum_of_squares=tree_utils.state_full_like(params, initial_accumulator_value)
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        validate.check_tree_match(updates, state.sum_of_squares)
        eps_ = f32(eps, hyper_dtype)
        sum_of_squares = jax.tree.map(lambda g, s: numerics.abs_sq(g) + s, updates, state.sum_of_squares)
        scaling = jax.tree.map(
            lambda s: jnp.where(s > 0, jax.lax.rsqrt(s + eps_), jnp.zeros_like(s + eps_)), sum_of_squares
        )
        return _scale_leaves(updates, scaling), ScaleByRssState(
            sum_of_squares=cast_like(sum_of_squares, state.sum_of_squares)
        )

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_adadelta(rho: float = 0.9, eps: float = 1e-6) -> base.GradientTransformation:
    r"""Rescales updates by AdaDelta's ratio of update and gradient RMS.

    .. math::
        E[g^2]_t = \rho E[g^2]_{t-1} + (1-\rho) g_t^2, \quad
        u_t = \frac{\sqrt{E[\Delta x^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}}\, g_t, \\
        E[\Delta x^2]_t = \rho E[\Delta x^2]_{t-1} + (1-\rho) u_t^2

    Zeiler, `ADADELTA: An Adaptive Learning Rate Method
    <https://arxiv.org/abs/1212.5701>`_, 2012.

    Args:
      rho: :math:`\rho`, the decay of both averages, in [0, 1].
      eps: :math:`\epsilon`, added inside both roots.
    """
    validate.check_decay("rho", rho)
    validate.check_non_negative("eps", eps)

    def init_fn(params):
        return ScaleByAdaDeltaState(e_g=tree_utils.state_zeros_like(params), e_x=tree_utils.state_zeros_like(params))

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        rho_, eps_ = (f32(x, hyper_dtype) for x in (rho, eps))
        e_g = tree_utils.tree_update_moment(updates, state.e_g, rho_, 2)
        new_updates = jax.tree.map(
            lambda g, eg, ex: (jnp.sqrt(ex + eps_) / jnp.sqrt(eg + eps_) * g).astype(g.dtype),
            updates,
            e_g,
            state.e_x,
        )
        e_x = tree_utils.tree_update_moment(new_updates, state.e_x, rho_, 2)
        return new_updates, ScaleByAdaDeltaState(e_g=cast_like(e_g, state.e_g), e_x=cast_like(e_x, state.e_x))

    return base.GradientTransformation(init_fn, update_fn)


def _axis_shape(shape, axis: int) -> list[int]:
    """``shape`` with every dimension but ``axis`` set to 1 (for broadcasting)."""
    return [1] * axis + [shape[axis]] + [1] * (len(shape) - axis - 1)


def scale_by_sm3(b1: float = 0.9, b2: float = 1.0, eps: float = 1e-8) -> base.GradientTransformation:
    r"""Rescales updates by SM3: a memory-efficient AdaGrad with one accumulator per axis slice.

    For a leaf of rank :math:`k \ge 2` with one accumulator vector :math:`\mu^{(i)}`
    per axis :math:`i`,

    .. math::
        a_t = c\, g_t^2 + \beta_2 \min_i \mu^{(i)}_{t-1}, \quad
        \mu^{(i)}_t = \max_{\text{axes} \ne i} a_t, \quad
        \nu_t = \beta_1 \nu_{t-1} + (1-\beta_1)\, g_t / \sqrt{a_t + \epsilon}

    with :math:`c = 1-\beta_2` (:math:`c = 1` when :math:`\beta_2 = 1`, the
    paper's sum); the update is :math:`\nu_t` (zero where :math:`a_t = 0`). A
    leaf of rank below 2 keeps its full accumulator :math:`a_t` (a scalar, rank 0,
    included: Optax 0.2.8 raises on scalars).

    Anil et al., `Memory-Efficient Adaptive Optimization
    <https://arxiv.org/abs/1901.11150>`_, 2019.

    Args:
      b1: decay of the momentum :math:`\nu`, in [0, 1].
      b2: decay of the accumulators, in [0, 1]; 1 sums the squares.
      eps: :math:`\epsilon`, added inside the root.
    """
    validate.check_decay("b1", b1)
    validate.check_decay("b2", b2)
    validate.check_non_negative("eps", eps)
    # Whether b2 is exactly 1 decides the paper's sum; it must be known now.
    b2_is_one = isinstance(b2, (int, float)) and b2 == 1.0

    def accumulators(zeros):
        # One vector per axis, as in Optax, each the sum of the param's zeros over the
        # other axes so that it takes the sharding of its axis (under jit too). A scalar
        # has no axis, so it keeps its full (rank-0) accumulator, like any leaf of rank below 2.
        if zeros.ndim == 0:
            return [zeros]
        others = lambda i: tuple(a for a in range(zeros.ndim) if a != i)  # noqa: E731
        return [jnp.sum(zeros, axis=others(i), dtype=zeros.dtype) for i in range(zeros.ndim)]

    def init_fn(params):
        # Each param's list of vectors replaces a variable wrapping the param (flax.nnx), see kit.map_params.
        mu = map_params(accumulators, tree_utils.state_zeros_like(params))
        return ScaleBySM3State(mu=mu, nu=tree_utils.state_zeros_like(params))

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        validate.check_tree_match(updates, state.nu)
        b1_, b2_, eps_ = (f32(x, hyper_dtype) for x in (b1, b2, eps))
        gain = f32(1.0, hyper_dtype) if b2_is_one else 1 - b2_

        def accumulate(g, vectors):
            if g.ndim < 2:
                return gain * numerics.abs_sq(g) + b2_ * jnp.reshape(vectors[0], g.shape)
            expanded = [jnp.reshape(v, _axis_shape(g.shape, i)) for i, v in enumerate(vectors)]
            return gain * numerics.abs_sq(g) + b2_ * functools.reduce(jnp.minimum, expanded)

        def slice_maxima(g, accum, vectors):
            if g.ndim < 2:
                return [accum.astype(vectors[0].dtype)]
            return [
                jnp.max(accum, axis=tuple(a for a in range(g.ndim) if a != i)).astype(v.dtype)
                for i, v in enumerate(vectors)
            ]

        # Each leaf's vectors are found by the updates' structure, not by an
        # is_leaf test on lists: params that are themselves lists must not be
        # mistaken for a leaf's vectors.
        treedef = jax.tree.structure(updates)
        grads, vectors = jax.tree.leaves(updates), treedef.flatten_up_to(state.mu)
        accums = [accumulate(g, v) for g, v in zip(grads, vectors)]
        accum = jax.tree.unflatten(treedef, accums)
        preconditioned = jax.tree.map(
            lambda g, a: g * jnp.where(a > 0, jax.lax.rsqrt(a + eps_), jnp.zeros_like(a + eps_)), updates, accum
        )
        nu = tree_utils.tree_update_moment(preconditioned, state.nu, b1_, 1)
        mu = jax.tree.unflatten(treedef, [slice_maxima(g, a, v) for g, a, v in zip(grads, accums, vectors)])
        nu = cast_like(nu, state.nu)
        return cast_like(nu, updates), ScaleBySM3State(mu=mu, nu=nu)

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_novograd(
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
    mu_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Rescales updates by NovoGrad: a layer-wise second moment.

    For each leaf :math:`\ell`, with :math:`v_1 = \|g_1\|^2` and
    :math:`m_1 = d_1`,

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2) \|g_t\|^2, \quad
        d_t = \frac{g_t}{\sqrt{v_t + \epsilon_{root}} + \epsilon} + \lambda \theta_t, \quad
        m_t = \beta_1 m_{t-1} + d_t

    and the update is :math:`m_t`.

    Ginsburg et al., `Stochastic Gradient Methods with Layer-wise Adaptive
    Moments for Training of Deep Networks <https://arxiv.org/abs/1905.11286>`_, 2019.

    Args:
      b1: momentum :math:`\beta_1`, in [0, 1].
      b2: decay :math:`\beta_2` of the layer-wise second moment, in [0, 1].
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      weight_decay: :math:`\lambda` (needs ``params`` when non-zero). A number, which its own rule reads: to
        schedule it, inject it (:func:`optcore.inject_hyperparams`).
      mu_dtype: dtype of the first moment.
    """
    validate.check_decay("b1", b1)
    validate.check_decay("b2", b2)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("eps_root", eps_root)
    validate.check_not_schedule("weight_decay", weight_decay, who="scale_by_novograd")
    validate.check_not_nan("weight_decay", weight_decay)
    mu_dtype = dtype_or_none(mu_dtype)

    def init_fn(params):
        return ScaleByNovogradState(
            count=jnp.zeros([], jnp.int32),
            mu=tree_utils.state_zeros_like(params, dtype=mu_dtype),
            # A scalar per param replaces a variable wrapping it (flax.nnx): see kit.map_params.
            nu=map_params(lambda p: jnp.zeros([], hyperparameter_dtype(p)), params),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        validate.check_tree_match(updates, state.mu)
        b1_, b2_, eps_, eps_root_, wd_ = (f32(x, hyper_dtype) for x in (b1, b2, eps, eps_root, weight_decay))
        if params is None:
            # Without params, only a weight decay known to be zero can be applied.
            if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
                raise ValueError(base.NO_PARAMS_MSG)
            params = jax.tree.map(jnp.zeros_like, updates)
        is_first = state.count == 0
        nu = jax.tree.map(
            lambda g, v: jnp.where(
                is_first, jnp.sum(numerics.abs_sq(g)), b2_ * v + (1 - b2_) * jnp.sum(numerics.abs_sq(g))
            ),
            updates,
            state.nu,
        )
        direction = jax.tree.map(
            lambda g, p, v: g / (jnp.sqrt(v + eps_root_) + eps_) + wd_ * p, updates, params, nu
        )
        mu = jax.tree.map(lambda m, d: jnp.where(is_first, d, b1_ * m + d), state.mu, direction)
        count = numerics.safe_increment(state.count)
        mu = cast_like(mu, state.mu)
        return cast_like(mu, updates), ScaleByNovogradState(count=count, mu=mu, nu=cast_like(nu, state.nu))

    return base.GradientTransformation(init_fn, update_fn)
