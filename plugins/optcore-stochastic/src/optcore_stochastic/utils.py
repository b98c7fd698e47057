"""Distributions and array helpers used by the Monte Carlo estimators.

The estimators only need two things of a distribution: ``sample(shape, key)``
and ``log_prob(x)``. :func:`multi_normal` builds the diagonal Gaussian that the
measure-valued estimator and the delta-method control variate are written for.
"""

from __future__ import annotations

import inspect
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "MultiNormalDiagFromLogScale",
    "multi_normal",
    "sample_from",
    "set_diags",
    "tile_second_to_last_dim",
]


class MultiNormalDiagFromLogScale:
    r"""A Gaussian with diagonal covariance, parameterised by its log-scale.

    .. math::
      p(x; \mu, \log\sigma) = \prod_i \mathcal{N}(x_i; \mu_i, \sigma_i^2),
      \qquad \sigma = \exp(\log\sigma)

    The parameter shape is the broadcast of ``loc`` and ``log_scale``; a sample
    of ``sample_shape`` has shape ``(*sample_shape, *param_shape)`` and
    ``log_prob`` sums over the parameter axes, so each sample has one log-density.

    Args:
      loc: the mean :math:`\mu`.
      log_scale: the log of the standard deviation :math:`\log\sigma`.
    """

    def __init__(self, loc: jax.Array, log_scale: jax.Array):
        self._mean = jnp.asarray(loc)
        self._log_scale = jnp.asarray(log_scale)
        self._scale = jnp.exp(self._log_scale)
        self._param_shape = jax.lax.broadcast_shapes(self._mean.shape, self._log_scale.shape)

    def sample(self, shape: Sequence[int], key: Optional[jax.Array] = None, *, seed: Optional[jax.Array] = None) -> jax.Array:
        r"""Draws :math:`x = \mu + \sigma \epsilon`, :math:`\epsilon \sim \mathcal{N}(0, I)`.

        The reparameterised form makes the samples differentiable in
        :math:`\mu` and :math:`\log\sigma` (what the pathwise estimator uses).

        Args:
          shape: the leading sample shape.
          key: a ``jax.random`` key (Optax 0.2.6+ spelling).
          seed: the same key under its older name (Optax up to 0.2.4).
        """
        if key is None and seed is None:
            raise TypeError("sample() needs a random key: pass key=... (or seed=...).")
        if key is not None and seed is not None:
            raise TypeError("sample() got both key= and seed=; pass only one.")
        key = key if key is not None else seed
        sample_shape = tuple(shape) + self._param_shape
        dtype = jnp.result_type(self._mean.dtype, self._scale.dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.float32
        noise = jax.random.normal(key, shape=sample_shape, dtype=dtype)
        return noise * self._scale + self._mean

    def log_prob(self, x: jax.Array) -> jax.Array:
        r"""The log-density summed over the parameter axes.

        .. math::
          \log p(x) = \sum_i -\tfrac{1}{2}\Big(\frac{x_i - \mu_i}{\sigma_i}\Big)^2
          - \log\sigma_i - \tfrac{1}{2}\log 2\pi
        """
        log_pdf = jax.scipy.stats.norm.logpdf(x, loc=self._mean, scale=self._scale)
        param_axes = tuple(range(-len(self._param_shape), 0))
        return jnp.sum(log_pdf, axis=param_axes)

    @property
    def mean(self) -> jax.Array:
        return self._mean

    @property
    def log_scale(self) -> jax.Array:
        return self._log_scale

    @property
    def params(self) -> list[jax.Array]:
        """``[loc, log_scale]``, the order in which :func:`multi_normal` takes them."""
        return [self._mean, self._log_scale]


def multi_normal(loc: jax.Array, log_scale: jax.Array) -> MultiNormalDiagFromLogScale:
    r"""A diagonal Gaussian :math:`\mathcal{N}(\mu, \mathrm{diag}(\exp(2\log\sigma)))`.

    This is the distribution builder the estimators are called with as
    ``dist_builder(*params)`` with ``params = [loc, log_scale]``.

    Args:
      loc: the mean.
      log_scale: the log of the per-coordinate standard deviation.

    Returns:
      A :class:`MultiNormalDiagFromLogScale` with ``sample(shape, key=...)``
      (``seed=`` is accepted too), ``log_prob``, ``params`` and ``log_scale``.
    """
    return MultiNormalDiagFromLogScale(loc, log_scale)


def sample_from(dist: Any, sample_shape: Sequence[int], key: jax.Array) -> jax.Array:
    """Calls ``dist.sample`` with the key under whichever name it takes.

    Distributions written for Optax up to 0.2.4 take ``seed=``, later ones
    ``key=``; a distribution taking neither name gets the key positionally.

    Args:
      dist: an object with a ``sample`` method.
      sample_shape: the leading sample shape.
      key: a ``jax.random`` key.
    """
    try:
        parameters = inspect.signature(dist.sample).parameters
    except (TypeError, ValueError):  # builtins and C extensions
        parameters = {}
    if "key" in parameters:
        return dist.sample(tuple(sample_shape), key=key)
    if "seed" in parameters:
        return dist.sample(tuple(sample_shape), seed=key)
    return dist.sample(tuple(sample_shape), key)


def tile_second_to_last_dim(a: jax.Array) -> jax.Array:
    """Repeats ``a`` of shape ``[..., D]`` into ``[..., D, D]``, one copy per column.

    Entry ``[..., i, j]`` is ``a[..., i]``: the layout of Optax's helper of the same name.
    """
    ones = jnp.ones_like(a)
    return jnp.expand_dims(a, axis=-1) * jnp.expand_dims(ones, axis=-2)


def set_diags(a: jax.Array, new_diags: jax.Array) -> jax.Array:
    """Replaces the diagonals of the trailing ``D x D`` matrices of ``a``.

    Args:
      a: an array of shape ``[..., D, D]``.
      new_diags: an array of shape ``[..., D]`` holding the new diagonals.
    """
    size = a.shape[-1]
    if a.shape[-2] != size or new_diags.shape[-1] != size:
        raise ValueError(
            f"set_diags needs a of shape [..., D, D] and new_diags of shape [..., D], got {a.shape} and {new_diags.shape}."
        )
    eye = jnp.eye(size, dtype=bool)
    return jnp.where(eye, jnp.expand_dims(new_diags, axis=-1), a)
