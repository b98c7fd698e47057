r"""Perturbation smoothing: differentiable expectations of non-smooth functions.

:func:`make_perturbed_fun` turns ``f`` (e.g. an argmax returning a one-hot
vector) into its stochastic smoothing

.. math::
  F_\sigma(x) = \mathbb{E}_{Z \sim \mu}[f(x + \sigma Z)]

whose derivative is estimated with the score function of the noise, so ``f``
is only evaluated, never differentiated.
Reference: Berthet et al., 2020, "Learning with Differentiable Perturbed
Optimizers" (https://arxiv.org/abs/2002.08676).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from optcore import kit

__all__ = ["Gumbel", "Normal", "make_perturbed_fun"]


class Gumbel:
    r"""Standard Gumbel noise, :math:`\log p(z) = -z - e^{-z}` (up to a constant).

    The default noise of :func:`make_perturbed_fun`: adding Gumbel noise to
    scores and taking the argmax samples from the softmax distribution
    (the Gumbel-max trick).
    """

    def sample(self, key: jax.Array, sample_shape: Sequence[int] = (), dtype: Any = float) -> jax.Array:
        """Draws standard Gumbel samples of ``sample_shape`` and ``dtype``.

        Args:
          key: a ``jax.random`` key.
          sample_shape: the shape of the result.
          dtype: a floating-point dtype.
        """
        return jax.random.gumbel(key, tuple(sample_shape), dtype)

    def log_prob(self, inputs: jax.Array) -> jax.Array:
        """The elementwise log-density ``-z - exp(-z)`` (unnormalised, which suffices for the score)."""
        return -inputs - jnp.exp(-inputs)


class Normal:
    r"""Standard normal noise, :math:`\log p(z) = -z^2/2` (up to a constant)."""

    def sample(self, key: jax.Array, sample_shape: Sequence[int] = (), dtype: Any = float) -> jax.Array:
        """Draws standard normal samples of ``sample_shape`` and ``dtype``.

        Args:
          key: a ``jax.random`` key.
          sample_shape: the shape of the result.
          dtype: a floating-point dtype.
        """
        return jax.random.normal(key, tuple(sample_shape), dtype)

    def log_prob(self, inputs: jax.Array) -> jax.Array:
        """The elementwise log-density ``-z**2 / 2`` (unnormalised, which suffices for the score)."""
        return -0.5 * inputs**2


def _float_dtype(leaf: jax.Array):
    return leaf.dtype if jnp.issubdtype(leaf.dtype, jnp.floating) else jnp.float32


def make_perturbed_fun(
    fun: Callable[[Any], Any],
    num_samples: int = 1000,
    sigma: float = 0.1,
    noise: Any = Gumbel(),
    use_baseline: bool = True,
) -> Callable[[jax.Array, Any], Any]:
    r"""Makes the Monte Carlo smoothing of ``fun`` by additive noise, with a derivative.

    .. math::
      F_\sigma(x) \approx \frac{1}{N}\sum_{n=1}^{N} f(x + \sigma z_n),
      \qquad
      \partial F_\sigma(x)[v] \approx \frac{1}{N\sigma}\sum_{n=1}^{N}
        \big(f(x + \sigma z_n) - b\big)\, \langle -\nabla_z \log \mu(z_n),\, v \rangle

    with :math:`z_n \sim \mu` i.i.d. (shared by the value and the derivative)
    and :math:`b = f(x)` if ``use_baseline`` else 0. The baseline keeps the
    estimate unbiased (the score has zero mean) and lowers its variance when
    ``f`` changes little under the noise. The derivative is a ``jax.custom_jvp``
    rule, so ``jax.grad``, ``jax.jacfwd`` and ``jax.jacrev`` work; ``fun`` itself
    is only evaluated, so it may be piecewise constant (argmax, sort, rank).
    Applies to any ``fun`` from a pytree of floating arrays to a pytree of
    arrays, with noise that has a differentiable log-density on all of
    :math:`\mathbb{R}` (Gaussian, Gumbel).
    Reference: Berthet et al., 2020 (https://arxiv.org/abs/2002.08676); Abernethy et al., 2016.

    Args:
      fun: the function to smooth, pytree to pytree.
      num_samples: the number :math:`N` of noise draws, a positive int.
      sigma: the noise scale :math:`\sigma > 0`.
      noise: an object with ``sample(key, sample_shape, dtype)`` and an
        elementwise ``log_prob(z)``, e.g. :class:`Gumbel` (default) or :class:`Normal`.
      use_baseline: subtract :math:`f(x)` in the derivative estimate.

    Returns:
      A function ``(key, inputs) -> outputs`` with the structure of ``fun``'s
      outputs; the same key gives the same noise.
    """
    kit.check_integer("num_samples", num_samples, 1)
    kit.check_range("sigma", sigma, low=0.0, low_inclusive=False)
    if not (callable(getattr(noise, "sample", None)) and callable(getattr(noise, "log_prob", None))):
        raise TypeError(f"noise must have sample(key, sample_shape, dtype) and log_prob(z) methods, got {noise!r}.")

    def draw_noise(key, inputs):
        leaves, treedef = jax.tree.flatten(inputs)
        keys = jax.random.split(key, len(leaves))
        draws = [noise.sample(k, (num_samples,) + jnp.shape(leaf), _float_dtype(jnp.asarray(leaf))) for k, leaf in zip(keys, leaves)]
        return jax.tree.unflatten(treedef, draws)

    def outputs_at(inputs, draws):
        """``fun(inputs + sigma * z_n)`` for every ``n``, as floats, stacked on axis 0."""
        perturbed_outputs = jax.vmap(lambda z: fun(jax.tree.map(lambda x, e: x + sigma * e, inputs, z)))(draws)
        return jax.tree.map(lambda y: jnp.asarray(y).astype(_float_dtype(jnp.asarray(y))), perturbed_outputs)

    # The noise is an explicit argument of the custom-JVP function, not a value
    # it closes over: under jit the draws are tracers of the enclosing trace,
    # and reverse mode (jax.jacrev, jax.grad of a jitted function) cannot
    # transpose a custom_jvp that captured them ("No constant handler for
    # type DynamicJaxprTracer"). The noise has no derivative of its own (it
    # comes from the key), so its tangent is ignored.
    @jax.custom_jvp
    def smoothed(x, draws):
        return jax.tree.map(lambda y: jnp.mean(y, axis=0), outputs_at(x, draws))

    @smoothed.defjvp
    def smoothed_jvp(primals, tangents):
        (x, draws), (v, _) = primals, tangents
        outputs = outputs_at(x, draws)
        value = jax.tree.map(lambda y: jnp.mean(y, axis=0), outputs)
        # -grad log mu(z): the log-density is elementwise, so the gradient of its sum is per element.
        scores = jax.tree.map(lambda z: -jax.grad(lambda w: jnp.sum(noise.log_prob(w)))(z), draws)
        # <score(z_n), v> summed over every leaf of the inputs: one number per sample.
        projections = sum(
            jnp.sum((s * jnp.asarray(t, s.dtype)).reshape(num_samples, -1), axis=1)
            for s, t in zip(jax.tree.leaves(scores), jax.tree.leaves(v))
        )
        if use_baseline:
            baseline = jax.tree.map(lambda y: jnp.asarray(y).astype(_float_dtype(jnp.asarray(y))), fun(x))
            residuals = jax.tree.map(lambda y, b: y - b, outputs, baseline)
        else:
            residuals = outputs

        def directional(r):
            weights = projections.reshape((num_samples,) + (1,) * (r.ndim - 1)).astype(r.dtype)
            return jnp.mean(r * weights, axis=0) / sigma

        return value, jax.tree.map(directional, residuals)

    def perturbed_fun(key, inputs):
        return smoothed(inputs, draw_noise(key, inputs))

    return perturbed_fun
