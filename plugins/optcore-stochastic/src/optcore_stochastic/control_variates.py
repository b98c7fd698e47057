r"""Control variates for the Monte Carlo gradient estimators.

A control variate :math:`h(x; \theta)` with a known expectation lowers the
variance of an estimate of :math:`\nabla_\theta \mathbb{E}[f]` without biasing it:

.. math::
  \nabla_\theta \mathbb{E}_{p(x;\theta)}[f(x)]
  = \nabla_\theta \mathbb{E}_{p}[f(x) - c\,h(x;\theta)] + c\,\nabla_\theta \mathbb{E}_{p}[h(x;\theta)]

A control variate is the triple ``(compute_cv, expected_value_cv,
update_state)``:

* ``compute_cv(params, sample, state)``: :math:`h` at one sample;
* ``expected_value_cv(params, state)``: :math:`\mathbb{E}_{p(x;\theta)}[h(x;\theta)]`
  in closed form, differentiable in ``params``;
* ``update_state(params, samples, state)``: the new state (e.g. a moving average).

:func:`control_variates_jacobians` combines any control variate with any of
the estimators in :mod:`optcore_stochastic.stochastic_gradient_estimators`.
Reference: Mohamed et al., 2020, section 7 (https://arxiv.org/abs/1906.10652).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

import optcore.validate

from optcore_stochastic.utils import sample_from

__all__ = [
    "ComputeCv",
    "ControlVariate",
    "CvExpectedValue",
    "CvState",
    "UpdateCvState",
    "control_delta_method",
    "control_variates_jacobians",
    "estimate_control_variate_coefficients",
    "moving_avg_baseline",
]

CvState = Any
ComputeCv = Callable[[Sequence[jax.Array], jax.Array, CvState], jax.Array]
CvExpectedValue = Callable[[Sequence[jax.Array], CvState], jax.Array]
UpdateCvState = Callable[[Sequence[jax.Array], jax.Array, CvState], CvState]
ControlVariate = tuple[ComputeCv, CvExpectedValue, UpdateCvState]


def control_delta_method(function: Callable[[jax.Array], jax.Array]) -> ControlVariate:
    r"""The delta-method control variate: the 2nd-order Taylor expansion of ``f`` at the mean.

    .. math::
      h(x; \mu) = f(\mu) + \nabla f(\mu)^\top (x - \mu)
                + \tfrac{1}{2} (x - \mu)^\top \nabla^2 f(\mu) (x - \mu),
      \qquad
      \mathbb{E}_{\mathcal{N}(\mu, \mathrm{diag}\,\sigma^2)}[h]
      = f(\mu) + \tfrac{1}{2} \sum_i \sigma_i^2 \, [\nabla^2 f(\mu)]_{ii}

    The gradient and Hessian come from ``jax.grad`` and ``jax.hessian``, so ``f``
    must be twice differentiable; the closed-form expectation assumes a
    diagonal Gaussian with ``params = [mean, log_scale]`` (as built by
    :func:`~optcore_stochastic.utils.multi_normal`). Stateless. It reduces
    variance most when ``f`` is close to quadratic near the mean; with the
    pathwise and measure-valued estimators too, since :math:`h` depends on
    :math:`\mu`.
    Reference: Mohamed et al., 2020, section 7.2 (https://arxiv.org/abs/1906.10652).

    Args:
      function: maps one sample (a vector) to a scalar; twice differentiable.

    Returns:
      A ``(compute_cv, expected_value_cv, update_state)`` triple.
    """

    def _expansion_terms(mean):
        mean = jnp.asarray(mean)
        if mean.ndim != 1:
            raise ValueError(f"control_delta_method needs a vector mean (shape [D]), got shape {mean.shape}.")
        return function(mean), jax.grad(function)(mean), jax.hessian(function)(mean)

    def compute_cv(params, sample, state=None):
        del state
        mean = params[0]
        value, gradient, hessian = _expansion_terms(mean)
        centred = sample - mean
        return value + jnp.dot(gradient, centred) + 0.5 * jnp.dot(centred, jnp.dot(hessian, centred))

    def expected_value_cv(params, state=None):
        del state
        mean, log_scale = params[0], params[1]
        value, _, hessian = _expansion_terms(mean)
        variance = jnp.exp(2.0 * log_scale)
        return value + 0.5 * jnp.sum(variance * jnp.diag(hessian))

    def update_state(params, samples, state=None):
        del params, samples
        return state

    return compute_cv, expected_value_cv, update_state


def _log_product_of_decays(steps, decay, use_heuristic):
    r""":math:`\log \prod_{s=0}^{t-1} d_s` for ``steps`` :math:`= t \ge 0` (0 when t = 0).

    With the early-training heuristic, :math:`d_s = \min(\beta, (1+s)/(10+s))`;
    the ratio grows with :math:`s`, so it is used for the first :math:`k` steps
    and :math:`\beta` after, and :math:`\prod_{s<k} (1+s)/(10+s) = k!\,9!/(k+9)!`.
    Closed forms keep the update free of loops over past steps.
    """
    steps = jnp.asarray(steps, jnp.float32)
    decay = jnp.asarray(decay, jnp.float32)
    log_decay = jnp.log(decay)
    if not use_heuristic:
        return jnp.where(steps > 0, steps * log_decay, 0.0)
    # First step s at which (1+s)/(10+s) >= decay.
    switch = jnp.where(decay < 1.0, jnp.ceil(jnp.maximum(10.0 * decay - 1.0, 0.0) / jnp.maximum(1.0 - decay, 1e-12)), jnp.inf)
    ratio_steps = jnp.minimum(steps, switch)
    decay_steps = steps - ratio_steps
    log_ratio_product = gammaln(ratio_steps + 1.0) + gammaln(10.0) - gammaln(ratio_steps + 10.0)
    return log_ratio_product + jnp.where(decay_steps > 0, decay_steps * log_decay, 0.0)


def moving_avg_baseline(
    function: Callable[[jax.Array], jax.Array],
    decay: float = 0.99,
    zero_debias: bool = True,
    use_decay_early_training_heuristic: bool = True,
) -> ControlVariate:
    r"""A moving-average baseline: :math:`h = b`, an average of past values of ``f``.

    Each call of ``update_state`` with samples :math:`x_{1..N}` at step :math:`t`
    (the state is ``(value, t)``, initially ``(0., 0)``) does

    .. math::
      d_t = \min\Big(\beta, \frac{1 + t}{10 + t}\Big) \text{ (or } \beta\text{)},
      \qquad
      a_t = d_t\, a_{t-1} + (1 - d_t)\, \frac{1}{N}\sum_n f(x_n)

    and with ``zero_debias`` the stored value is :math:`b_t = a_t / (1 - \prod_{s \le t} d_s)`,
    which removes the pull towards the initial 0 (exactly: :math:`b_t` is a
    weighted average of the past batch means whose weights sum to 1).

    The baseline does not depend on :math:`x` or :math:`\theta`, so its
    expectation is itself and it changes only the score-function estimator,
    whose Jacobians become :math:`(f(x_n) - b)\nabla_\theta\log p(x_n;\theta)`;
    it has no effect on the pathwise and measure-valued estimators.
    Reference: Williams, 1992; Mohamed et al., 2020, section 7.3.

    Args:
      function: maps one sample to a scalar.
      decay: :math:`\beta` in ``[0, 1]``, the decay of the moving average.
      zero_debias: divide by the total weight of the averaged batches.
      use_decay_early_training_heuristic: use :math:`\min(\beta, (1+t)/(10+t))`,
        so that the first batches are not averaged with the initial 0 for long.

    Returns:
      A ``(compute_cv, expected_value_cv, update_state)`` triple; the state is
      ``(value, step)``; start from ``(jnp.array(0.), 0)`` (``None`` means the same).
    """
    optcore.validate.check_decay("decay", decay)
    if zero_debias and not use_decay_early_training_heuristic:
        optcore.validate.check_range("decay", decay, low=0.0, high=1.0)  # decay 1 would never move off 0

    initial_state = (jnp.zeros([], jnp.float32), 0)

    def compute_cv(params, sample, state):
        del params, sample
        return (initial_state if state is None else state)[0]

    def expected_value_cv(params, state):
        del params
        return (initial_state if state is None else state)[0]

    def update_state(params, samples, state):
        del params
        value, step = initial_state if state is None else state
        step_f = jnp.asarray(step, jnp.float32)
        if use_decay_early_training_heuristic:
            step_decay = jnp.minimum(decay, (1.0 + step_f) / (10.0 + step_f))
        else:
            step_decay = jnp.asarray(decay, jnp.float32)
        batch_mean = jnp.mean(jax.vmap(function)(samples))
        if zero_debias:
            # Stored value is debiased; recover the biased average from the previous weight.
            previous_weight = 1.0 - jnp.exp(_log_product_of_decays(step_f, decay, use_decay_early_training_heuristic))
            weight = step_decay * previous_weight + (1.0 - step_decay)
            new_value = (step_decay * previous_weight * value + (1.0 - step_decay) * batch_mean) / weight
        else:
            new_value = step_decay * value + (1.0 - step_decay) * batch_mean
        return jax.lax.stop_gradient(new_value), step + 1

    return compute_cv, expected_value_cv, update_state


def _cv_function_of_sample(control_variate: ControlVariate, params, state):
    """``h(x)`` with the parameters held fixed: only the samples carry ``theta``."""
    compute_cv = control_variate[0]
    fixed = jax.lax.stop_gradient(params)
    return lambda x: compute_cv(fixed, x, state)


def _optimal_coefficient(function_jacobians, cv_jacobians, eps):
    r""":math:`\sum_i \mathrm{Cov}(\partial f_i, \partial h_i) / (\sum_i \mathrm{Var}(\partial h_i) + \epsilon)`."""
    f_centred = function_jacobians - jnp.mean(function_jacobians, axis=0)
    h_centred = cv_jacobians - jnp.mean(cv_jacobians, axis=0)
    covariance = jnp.sum(jnp.mean(f_centred * h_centred, axis=0))
    variance = jnp.sum(jnp.mean(h_centred * h_centred, axis=0))
    return covariance / (variance + eps)


def estimate_control_variate_coefficients(
    function: Callable[[jax.Array], jax.Array],
    control_variate_from_function: Callable[[Callable], ControlVariate],
    grad_estimator: Callable[..., list],
    params: Sequence[jax.Array],
    dist_builder: Callable[..., Any],
    rng: jax.Array,
    num_samples: int,
    control_variate_state: CvState = None,
    eps: float = 1e-3,
) -> list[jax.Array]:
    r"""Variance-minimising control-variate coefficients, one per parameter.

    For the per-sample Jacobians :math:`g_f` of ``f`` and :math:`g_h` of the
    control variate (with its parameters held fixed),

    .. math::
      c_k = \frac{\sum_i \mathrm{Cov}(g_{f,ki}, g_{h,ki})}{\sum_i \mathrm{Var}(g_{h,ki}) + \epsilon}

    minimises the summed variance of :math:`g_f - c_k g_h` over the entries
    :math:`i` of parameter :math:`k`. The samples come from a key split off
    ``rng``, so the coefficients are independent of the samples they are later
    applied to (which keeps the corrected estimate unbiased).

    Args:
      function: maps one sample to a scalar.
      control_variate_from_function: e.g. :func:`control_delta_method`.
      grad_estimator: an estimator such as ``score_function_jacobians``.
      params: the distribution parameters.
      dist_builder: builds the distribution from ``params``.
      rng: a ``jax.random`` key.
      num_samples: the number of samples used to estimate the coefficients.
      control_variate_state: the control variate's state, if it has one.
      eps: added to the denominator, so that a control variate with zero
        variance gives a zero coefficient rather than a NaN.

    Returns:
      A list with one scalar coefficient per parameter.
    """
    optcore.validate.check_non_negative("eps", eps)
    control_variate = control_variate_from_function(function)
    coefficient_rng = jax.random.split(rng)[1]
    function_jacobians = grad_estimator(function, params, dist_builder, coefficient_rng, num_samples)
    cv_fn = _cv_function_of_sample(control_variate, params, control_variate_state)
    cv_jacobians = grad_estimator(cv_fn, params, dist_builder, coefficient_rng, num_samples)
    return [_optimal_coefficient(fj, hj, eps) for fj, hj in zip(function_jacobians, cv_jacobians)]


def control_variates_jacobians(
    function: Callable[[jax.Array], jax.Array],
    control_variate_from_function: Callable[[Callable], ControlVariate],
    grad_estimator: Callable[..., list],
    params: Sequence[jax.Array],
    dist_builder: Callable[..., Any],
    rng: jax.Array,
    num_samples: int,
    control_variate_state: CvState = None,
    estimate_cv_coeffs: bool = False,
    estimate_cv_coeffs_num_samples: int = 20,
) -> tuple[list[jax.Array], CvState]:
    r"""Per-sample Jacobians of any estimator, corrected by a control variate.

    .. math::
      \hat g_n = \hat g_n[f] - c\,\hat g_n[h] - c\,\frac{1}{N}\sum_m \nabla_\theta h(x_m;\theta)
               + c\,\nabla_\theta \mathbb{E}_{p(x;\theta)}[h(x;\theta)]

    where :math:`\hat g_n[\cdot]` are the estimator's per-sample Jacobians
    (with :math:`h`'s own parameters held fixed, the same ``rng`` and so the
    same samples as for ``f``), the third term accounts for the direct
    dependence of :math:`h` on :math:`\theta` and the last term is the gradient
    of the control variate's closed-form expectation. The mean over samples is
    unbiased for any constant :math:`c`. The control-variate state is updated
    once, with this call's samples, before it is used (as in Optax); the
    returned state is to be passed to the next call.

    Applies with every estimator and control variate in this package; the
    moving-average baseline only changes the score-function estimator.
    Reference: Mohamed et al., 2020, section 7 (https://arxiv.org/abs/1906.10652).

    Args:
      function: maps one sample to a scalar.
      control_variate_from_function: builds the control variate triple from
        ``function``, e.g. :func:`control_delta_method` or
        ``functools.partial(moving_avg_baseline, decay=0.9)``.
      grad_estimator: an estimator with the signature of ``score_function_jacobians``.
      params: the distribution parameters.
      dist_builder: builds the distribution, ``dist_builder(*params)``.
      rng: a ``jax.random`` key.
      num_samples: the number of samples.
      control_variate_state: the state from the previous call (``None`` for
        stateless control variates; ``(jnp.array(0.), 0)`` to start a
        moving-average baseline).
      estimate_cv_coeffs: estimate :math:`c` per parameter with
        :func:`estimate_control_variate_coefficients` (on separate samples);
        otherwise :math:`c = 1`.
      estimate_cv_coeffs_num_samples: samples used to estimate :math:`c`.

    Returns:
      ``(jacobians, new_control_variate_state)``, the jacobians as a list with
      one ``[num_samples, *param.shape]`` array per parameter.
    """
    params = [jnp.asarray(p) for p in params]
    control_variate = control_variate_from_function(function)
    _, expected_value_cv, update_state = control_variate
    if estimate_cv_coeffs:
        coefficients = estimate_control_variate_coefficients(
            function, control_variate_from_function, grad_estimator, params, dist_builder, rng,
            estimate_cv_coeffs_num_samples, control_variate_state,
        )
    else:
        coefficients = [1.0] * len(params)

    function_jacobians = grad_estimator(function, params, dist_builder, rng, num_samples)
    # The estimators draw dist.sample((num_samples,), rng): the same samples again.
    samples = sample_from(dist_builder(*params), (num_samples,), rng)
    control_variate_state = update_state(params, samples, control_variate_state)

    cv_fn = _cv_function_of_sample(control_variate, params, control_variate_state)
    cv_jacobians = grad_estimator(cv_fn, params, dist_builder, rng, num_samples)

    compute_cv = control_variate[0]
    fixed_samples = jax.lax.stop_gradient(samples)

    def mean_cv_at_samples(ps):
        return jnp.mean(jax.vmap(lambda x: compute_cv(ps, x, control_variate_state))(fixed_samples))

    cv_direct_grads = jax.grad(mean_cv_at_samples)(params)
    expected_value_grads = jax.grad(lambda ps: expected_value_cv(ps, control_variate_state))(params)

    jacobians = []
    for index, param in enumerate(params):
        chex.assert_shape(function_jacobians[index], (num_samples,) + param.shape)
        chex.assert_shape(cv_jacobians[index], (num_samples,) + param.shape)
        c = coefficients[index]
        corrected = function_jacobians[index] - c * cv_jacobians[index]
        corrected = corrected - c * cv_direct_grads[index] + c * expected_value_grads[index]
        jacobians.append(corrected)
    return jacobians, control_variate_state
