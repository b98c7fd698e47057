r"""Monte Carlo estimators of the gradient of an expectation.

Each estimator approximates, for a distribution :math:`p(x; \theta)` built as
``dist_builder(*params)``,

.. math::
  \nabla_\theta \, \mathbb{E}_{p(x;\theta)}[f(x)]

by ``num_samples`` per-sample Jacobians: for every parameter :math:`\theta_k`
the result holds an array of shape ``[num_samples, *theta_k.shape]`` whose mean
over axis 0 is an unbiased estimate of the gradient and whose spread measures
the estimator's variance. ``function`` maps one sample to a scalar; it is
vmapped over the samples, so it need not be vectorised.

Which estimator applies (Mohamed et al., 2020, "Monte Carlo Gradient
Estimation in Machine Learning", https://arxiv.org/abs/1906.10652):

* :func:`score_function_jacobians`: any distribution with a differentiable
  ``log_prob``, discrete or continuous; ``f`` is only evaluated.
* :func:`pathwise_jacobians`: reparameterisable distributions (samples
  differentiable in :math:`\theta`) and differentiable ``f``.
* :func:`measure_valued_jacobians`: diagonal Gaussians from
  :func:`optcore_stochastic.utils.multi_normal`; ``f`` is only evaluated.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from optcore import kit
from optcore_stochastic import _checks
from optcore_stochastic.utils import MultiNormalDiagFromLogScale, multi_normal, sample_from, set_diags, tile_second_to_last_dim

__all__ = [
    "measure_valued_estimation_mean",
    "measure_valued_estimation_std",
    "measure_valued_jacobians",
    "pathwise_jacobians",
    "score_function_jacobians",
]


def _check_params(params: Any, estimator: str) -> list:
    if not isinstance(params, (list, tuple)):
        raise TypeError(
            f"{estimator}: params must be a list or tuple of arrays passed as dist_builder(*params) "
            f"(e.g. [mean, log_scale] for utils.multi_normal), got {type(params).__name__}."
        )
    return [jnp.asarray(p) for p in params]


def _sample_spec(dist: Any, key: jax.Array) -> jax.ShapeDtypeStruct:
    """Shape and dtype of one sample, without drawing it."""
    one = jax.eval_shape(lambda k: sample_from(dist, (1,), k), key)
    return jax.ShapeDtypeStruct(one.shape[1:], one.dtype)


def score_function_jacobians(
    function: Callable[[jax.Array], jax.Array],
    params: Sequence[jax.Array],
    dist_builder: Callable[..., Any],
    rng: jax.Array,
    num_samples: int,
) -> list[jax.Array]:
    r"""Score-function (REINFORCE, likelihood-ratio) per-sample Jacobians.

    .. math::
      \nabla_\theta \mathbb{E}_{p(x;\theta)}[f(x)]
      = \mathbb{E}_{p(x;\theta)}[f(x)\, \nabla_\theta \log p(x;\theta)]
      \approx \frac{1}{N}\sum_{n=1}^{N} f(x_n)\, \nabla_\theta \log p(x_n;\theta),
      \quad x_n \sim p(\cdot;\theta)

    The samples are held fixed (``stop_gradient``) and the Jacobian of the
    surrogate :math:`f(x_n) \log p(x_n; \theta)` is taken with ``jax.jacfwd``.

    Applies to any distribution with a ``log_prob`` differentiable in its
    parameters, discrete or continuous; ``f`` is only evaluated (it may be
    non-differentiable, integer- or boolean-valued). Unbiased, but its variance
    grows with :math:`|f|`: see the control variates in
    :mod:`optcore_stochastic.control_variates`.
    Reference: Williams, 1992, "Simple statistical gradient-following
    algorithms for connectionist reinforcement learning".

    Args:
      function: maps one sample to a scalar.
      params: a list of arrays, the arguments of ``dist_builder``.
      dist_builder: builds the distribution, ``dist_builder(*params)``, with
        ``sample(shape, key=...)`` (or ``seed=``) and ``log_prob(x)``.
      rng: a ``jax.random`` key; the same key gives the same samples.
      num_samples: the number of samples, a positive Python int.

    Returns:
      A list with, for each parameter, the ``[num_samples, *param.shape]``
      per-sample Jacobians.
    """
    kit.check_integer("num_samples", num_samples, 1)
    params = _check_params(params, "score_function_jacobians")
    dist = dist_builder(*params)
    samples = jax.lax.stop_gradient(sample_from(dist, (num_samples,), rng))
    _checks.check_scalar_output(function, jax.ShapeDtypeStruct(samples.shape[1:], samples.dtype), "score_function_jacobians")
    values = jax.lax.stop_gradient(jax.vmap(function)(samples))

    def surrogate(ps):
        log_probs = dist_builder(*ps).log_prob(samples)
        return values.astype(log_probs.dtype) * log_probs

    return list(jax.jacfwd(surrogate)(params))


def pathwise_jacobians(
    function: Callable[[jax.Array], jax.Array],
    params: Sequence[jax.Array],
    dist_builder: Callable[..., Any],
    rng: jax.Array,
    num_samples: int,
) -> list[jax.Array]:
    r"""Pathwise (reparameterisation) per-sample Jacobians.

    With samples written as a differentiable map of parameter-free noise,
    :math:`x = g(\epsilon; \theta)`, :math:`\epsilon \sim q`,

    .. math::
      \nabla_\theta \mathbb{E}_{p(x;\theta)}[f(x)]
      = \mathbb{E}_{q(\epsilon)}[\nabla_x f(x)\big|_{x=g(\epsilon;\theta)} \nabla_\theta g(\epsilon;\theta)]

    computed as ``jax.jacfwd`` of :math:`\theta \mapsto f(g(\epsilon_n; \theta))`.

    Applies only when both hold: the distribution's ``sample`` is
    differentiable in its parameters (e.g. :func:`~optcore_stochastic.utils.multi_normal`,
    for which :math:`x = \mu + \exp(\log\sigma)\,\epsilon`), and ``f`` is
    differentiable. A clear error is raised, before anything is computed, when
    the samples are not floating point, when ``f`` returns integers or
    booleans, or when ``f`` depends on its input only through operations with a
    zero derivative (round, floor, sign, argmax, comparisons, integer casts,
    ``stop_gradient``), found by tracing ``jax.jvp`` of ``f`` (see
    ``_checks.check_differentiable``). A ``f`` that is piecewise differentiable
    with jumps (``jnp.where(x > 0, 1., x)``) cannot be detected this way and
    gives a biased estimate: use the score-function or measure-valued estimator.
    Reference: Kingma & Welling, 2014, "Auto-Encoding Variational Bayes".

    Args:
      function: maps one sample to a scalar; must be differentiable.
      params: a list of arrays, the arguments of ``dist_builder``.
      dist_builder: builds a reparameterisable distribution, ``dist_builder(*params)``.
      rng: a ``jax.random`` key; the same key gives the same samples.
      num_samples: the number of samples, a positive Python int.

    Returns:
      A list with, for each parameter, the ``[num_samples, *param.shape]``
      per-sample Jacobians.
    """
    kit.check_integer("num_samples", num_samples, 1)
    params = _check_params(params, "pathwise_jacobians")
    spec = _sample_spec(dist_builder(*params), rng)
    if not jnp.issubdtype(spec.dtype, jnp.floating):
        raise TypeError(
            f"pathwise_jacobians needs continuous, reparameterisable samples, but the distribution "
            f"samples {spec.dtype} values. Use score_function_jacobians for discrete distributions."
        )
    _checks.check_differentiable(function, spec, "pathwise_jacobians")

    def surrogate(ps):
        samples = sample_from(dist_builder(*ps), (num_samples,), rng)
        return jax.vmap(function)(samples)

    return list(jax.jacfwd(surrogate)(params))


def _gaussian_parts(dist: Any, estimator: str):
    if not isinstance(dist, MultiNormalDiagFromLogScale):
        raise ValueError(
            f"{estimator} is only implemented for diagonal Gaussians built by "
            f"optcore_stochastic.utils.multi_normal, got {type(dist).__name__}."
        )
    shape = jnp.broadcast_shapes(dist.mean.shape, dist.log_scale.shape)
    mean = jnp.broadcast_to(dist.mean, shape)
    scale = jnp.broadcast_to(jnp.exp(dist.log_scale), shape)
    return shape, mean, scale


def _evaluate_one_coordinate_changed(function, base_samples, new_coordinates, shape):
    """``f`` at ``base_samples`` with coordinate ``d`` replaced, for every ``d``.

    ``base_samples`` and ``new_coordinates`` are ``[N, D]`` (flattened
    parameter shape); the result is ``[N, D]`` with entry ``[n, d]`` equal to
    ``f`` at sample ``n`` whose ``d``-th coordinate is ``new_coordinates[n, d]``.
    """
    # Column d of each tiled sample, its d-th coordinate replaced: as rows, [N, D, D].
    perturbed = jnp.swapaxes(set_diags(tile_second_to_last_dim(base_samples), new_coordinates), -1, -2)
    perturbed = perturbed.reshape(perturbed.shape[:2] + tuple(shape))
    return jax.vmap(jax.vmap(function))(perturbed)


def measure_valued_estimation_mean(
    function: Callable[[jax.Array], jax.Array],
    dist: MultiNormalDiagFromLogScale,
    rng: jax.Array,
    num_samples: int,
    coupling: bool = True,
) -> jax.Array:
    r"""Measure-valued per-sample Jacobians for the mean of a diagonal Gaussian.

    The derivative of :math:`\mathcal{N}(x_d; \mu_d, \sigma_d^2)` in
    :math:`\mu_d` is a difference of two Rayleigh-shaped (Weibull with scale
    :math:`\sqrt 2` and concentration 2) measures :math:`W^\pm`:

    .. math::
      \frac{\partial}{\partial\mu_d} \mathbb{E}[f(x)]
      = \frac{1}{\sigma_d\sqrt{2\pi}}
        \mathbb{E}\big[f(x^{(d)}_{+}) - f(x^{(d)}_{-})\big],
      \quad x^{(d)}_{\pm} = x \text{ with } x_d = \mu_d \pm \sigma_d w^\pm,
      \ w^\pm \sim \mathrm{Weibull}(\sqrt2, 2)

    where the other coordinates of :math:`x` are drawn from the Gaussian. With
    ``coupling=True`` the positive and negative parts share :math:`w`
    (:math:`w^+ = w^-`), which lowers the variance. Only ``f`` is evaluated
    (``2 N D`` evaluations). Applies to diagonal Gaussians only.
    Reference: Mohamed et al., 2020, section 6 (https://arxiv.org/abs/1906.10652).

    Args:
      function: maps one sample to a scalar.
      dist: a Gaussian from :func:`~optcore_stochastic.utils.multi_normal`.
      rng: a ``jax.random`` key.
      num_samples: the number of samples ``N``.
      coupling: share the Weibull draws of the positive and negative parts.

    Returns:
      ``[N, *param_shape]`` per-sample Jacobians (``[N, D]`` for a vector mean).
    """
    kit.check_integer("num_samples", num_samples, 1)
    shape, mean, scale = _gaussian_parts(dist, "measure_valued_estimation_mean")
    dim = math.prod(shape)
    dist_rng, pos_rng, neg_rng = jax.random.split(rng, 3)
    base = sample_from(dist, (num_samples,), dist_rng).reshape(num_samples, dim)
    weibull = lambda key: jax.random.weibull_min(key, scale=math.sqrt(2.0), concentration=2.0, shape=(num_samples, dim), dtype=base.dtype)
    pos_draw = weibull(pos_rng)
    neg_draw = pos_draw if coupling else weibull(neg_rng)
    flat_mean, flat_scale = mean.reshape(dim), scale.reshape(dim)
    f_pos = _evaluate_one_coordinate_changed(function, base, flat_mean + flat_scale * pos_draw, shape)
    f_neg = _evaluate_one_coordinate_changed(function, base, flat_mean - flat_scale * neg_draw, shape)
    jac = (f_pos - f_neg) / (math.sqrt(2.0 * math.pi) * flat_scale)
    return jac.reshape((num_samples,) + tuple(shape))


def measure_valued_estimation_std(
    function: Callable[[jax.Array], jax.Array],
    dist: MultiNormalDiagFromLogScale,
    rng: jax.Array,
    num_samples: int,
    coupling: bool = True,
) -> jax.Array:
    r"""Measure-valued per-sample Jacobians for the scale :math:`\sigma` of a diagonal Gaussian.

    The derivative of :math:`\mathcal{N}(x_d; \mu_d, \sigma_d^2)` in
    :math:`\sigma_d` is :math:`\frac{1}{\sigma_d}` times the difference of a
    double-sided Maxwell and a Gaussian measure:

    .. math::
      \frac{\partial}{\partial\sigma_d} \mathbb{E}[f(x)]
      = \frac{1}{\sigma_d}
        \mathbb{E}\big[f(x^{(d)}_{+}) - f(x^{(d)}_{-})\big],
      \quad x^{(d)}_{+}: x_d = \mu_d + \sigma_d m,\
      x^{(d)}_{-}: x_d = \mu_d + \sigma_d \epsilon

    with :math:`m` double-sided Maxwell and, the other coordinates of
    :math:`x` drawn from the Gaussian. With ``coupling=True``,
    :math:`\epsilon = u\,m` with :math:`u \sim U(0, 1)` (which is standard
    normal); otherwise :math:`\epsilon \sim \mathcal{N}(0, 1)` independently.
    This is the derivative in :math:`\sigma`, not :math:`\log\sigma`:
    :func:`measure_valued_jacobians` applies the chain rule. Diagonal
    Gaussians only. Reference: Mohamed et al., 2020, section 6.

    Args:
      function: maps one sample to a scalar.
      dist: a Gaussian from :func:`~optcore_stochastic.utils.multi_normal`.
      rng: a ``jax.random`` key.
      num_samples: the number of samples ``N``.
      coupling: build the Gaussian draw from the Maxwell draw.

    Returns:
      ``[N, *param_shape]`` per-sample Jacobians with respect to :math:`\sigma`.
    """
    kit.check_integer("num_samples", num_samples, 1)
    shape, mean, scale = _gaussian_parts(dist, "measure_valued_estimation_std")
    dim = math.prod(shape)
    dist_rng, pos_rng, neg_rng = jax.random.split(rng, 3)
    base = sample_from(dist, (num_samples,), dist_rng).reshape(num_samples, dim)
    maxwell = jax.random.double_sided_maxwell(pos_rng, loc=0.0, scale=1.0, shape=(num_samples, dim), dtype=base.dtype)
    if coupling:
        normal = jax.random.uniform(neg_rng, shape=(num_samples, dim), dtype=base.dtype) * maxwell
    else:
        normal = jax.random.normal(neg_rng, shape=(num_samples, dim), dtype=base.dtype)
    flat_mean, flat_scale = mean.reshape(dim), scale.reshape(dim)
    f_pos = _evaluate_one_coordinate_changed(function, base, flat_mean + flat_scale * maxwell, shape)
    f_neg = _evaluate_one_coordinate_changed(function, base, flat_mean + flat_scale * normal, shape)
    jac = (f_pos - f_neg) / flat_scale
    return jac.reshape((num_samples,) + tuple(shape))


def _build_diagonal_gaussian(dist_builder: Callable[..., Any], params: list) -> MultiNormalDiagFromLogScale:
    """``dist_builder(*params)``, or the documented ``ValueError`` when it is not a diagonal Gaussian.

    The builder is judged before it is called where that is possible: a
    distribution class of the user's own (any class other than
    ``MultiNormalDiagFromLogScale``) is rejected outright, as Optax rejects any
    builder other than ``multi_normal``, because its constructor may not even
    accept ``(mean, log_scale)`` and would otherwise fail with an unrelated
    ``TypeError``. Any other callable (a wrapper around ``multi_normal``) is
    called, and accepted only if it returns a ``MultiNormalDiagFromLogScale``.
    """
    name = getattr(dist_builder, "__name__", repr(dist_builder))

    def unsupported(built: str) -> ValueError:
        return ValueError(
            "measure_valued_jacobians supports only diagonal Gaussians: dist_builder must be "
            f"optcore_stochastic.utils.multi_normal, got {name!r}{built}. "
            "Use score_function_jacobians or pathwise_jacobians instead."
        )

    known = dist_builder is multi_normal or (
        isinstance(dist_builder, type) and issubclass(dist_builder, MultiNormalDiagFromLogScale)
    )
    if not known and isinstance(dist_builder, type):
        raise unsupported(" (a distribution class other than MultiNormalDiagFromLogScale)")
    try:
        dist = dist_builder(*params)
    except TypeError as error:
        if known:
            raise
        raise unsupported(f", which cannot be called as dist_builder(mean, log_scale) ({error})") from error
    if not isinstance(dist, MultiNormalDiagFromLogScale):
        raise unsupported(f" building {type(dist).__name__}")
    return dist


def measure_valued_jacobians(
    function: Callable[[jax.Array], jax.Array],
    params: Sequence[jax.Array],
    dist_builder: Callable[..., Any],
    rng: jax.Array,
    num_samples: int,
    coupling: bool = True,
) -> list[jax.Array]:
    r"""Measure-valued per-sample Jacobians for ``[mean, log_scale]`` of a diagonal Gaussian.

    .. math::
      \frac{\partial}{\partial\theta} \mathbb{E}_{p(x;\theta)}[f(x)]
      = c_\theta \big(\mathbb{E}_{p^+_\theta}[f(x)] - \mathbb{E}_{p^-_\theta}[f(x)]\big),
      \qquad
      \frac{\partial}{\partial\log\sigma} = \sigma \frac{\partial}{\partial\sigma}

    where :math:`\partial_\theta p = c_\theta (p^+_\theta - p^-_\theta)` is the
    weak derivative: see :func:`measure_valued_estimation_mean` and
    :func:`measure_valued_estimation_std` for the two parts.

    Applies only to diagonal Gaussians: ``dist_builder`` must be
    :func:`optcore_stochastic.utils.multi_normal` (or build a
    :class:`~optcore_stochastic.utils.MultiNormalDiagFromLogScale`); any other
    builder raises ``ValueError``. ``f`` is only evaluated, so it may be
    non-differentiable. Cost: ``4 N D`` evaluations of ``f``.
    Reference: Mohamed et al., 2020, section 6 (https://arxiv.org/abs/1906.10652).

    Args:
      function: maps one sample to a scalar.
      params: ``[mean, log_scale]``.
      dist_builder: :func:`optcore_stochastic.utils.multi_normal`.
      rng: a ``jax.random`` key; the same key gives the same samples.
      num_samples: the number of samples, a positive Python int.
      coupling: couple the positive and negative measures (lower variance).

    Returns:
      ``[mean_jacobians, log_scale_jacobians]``, each ``[num_samples, *param.shape]``.
    """
    kit.check_integer("num_samples", num_samples, 1)
    params = _check_params(params, "measure_valued_jacobians")
    if len(params) != 2:
        raise ValueError(f"measure_valued_jacobians: params must be [mean, log_scale], got {len(params)} arrays.")
    dist = _build_diagonal_gaussian(dist_builder, params)
    if params[0].shape != params[1].shape:
        raise ValueError(
            "measure_valued_jacobians: mean and log_scale must have the same shape, got "
            f"{params[0].shape} and {params[1].shape}."
        )
    _checks.check_scalar_output(function, jax.ShapeDtypeStruct(dist.mean.shape, dist.mean.dtype), "measure_valued_jacobians")
    mean_jacobians = measure_valued_estimation_mean(function, dist, rng, num_samples, coupling=coupling)
    std_jacobians = measure_valued_estimation_std(function, dist, rng, num_samples, coupling=coupling)
    # The parameter is log(sigma): d/dlog(sigma) = sigma * d/dsigma.
    return [mean_jacobians, jnp.exp(dist.log_scale) * std_jacobians]

