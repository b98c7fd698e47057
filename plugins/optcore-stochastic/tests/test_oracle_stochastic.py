"""Differential checks against Optax 0.2.8 (runs only where optax is installed: the tox oracle env).

``optax.monte_carlo`` no longer exists in 0.2.8, so only what survives is compared:
the ``multi_normal``, ``tile_second_to_last_dim`` and ``set_diags`` helpers and ``optax.perturbations``.
"""

import math

import pytest

optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from optax._src import utils as optax_utils  # noqa: E402

import optcore_stochastic.perturbations as perturbations  # noqa: E402
from optcore_stochastic import utils  # noqa: E402


def test_multi_normal_matches_optax():
    loc, log_scale = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.1, -0.7, 0.0])
    ours, theirs = utils.multi_normal(loc, log_scale), optax_utils.multi_normal(loc, log_scale)
    key = jax.random.key(3)
    np.testing.assert_allclose(ours.sample((4,), key=key), theirs.sample((4,), key=key), rtol=1e-6)
    x = jnp.array([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]])
    np.testing.assert_allclose(ours.log_prob(x), theirs.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(ours.log_scale, theirs.log_scale)


def test_tile_and_set_diags_match_optax():
    # The measure-valued estimators' helpers: our tile was the transpose of Optax's.
    a = jnp.arange(6.0).reshape(2, 3)
    tiled = utils.tile_second_to_last_dim(a)
    np.testing.assert_array_equal(tiled, optax_utils.tile_second_to_last_dim(a))
    np.testing.assert_array_equal(tiled[:, :, 1], a)  # every column is a copy
    diags = -jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(utils.set_diags(tiled, diags), optax_utils.set_diags(tiled, diags))


@pytest.mark.parametrize("noise_name", ["Gumbel", "Normal"])
def test_noise_matches_optax(noise_name):
    ours, theirs = getattr(perturbations, noise_name)(), getattr(optax.perturbations, noise_name)()
    z = jnp.linspace(-2.0, 2.0, 7)
    np.testing.assert_allclose(ours.log_prob(z), theirs.log_prob(z), rtol=1e-6)
    key = jax.random.key(0)
    np.testing.assert_allclose(ours.sample(key, (5,)), theirs.sample(key, (5,)), rtol=1e-6)


def test_make_perturbed_fun_agrees_with_optax():
    """Both estimate the same smoothed value and gradient; they use the noise differently,
    so they agree to Monte Carlo accuracy (value SE <= 0.5/sqrt(N), gradient SE <= 1/(s sqrt(N))
    for each, as in test_perturbations; 4 standard errors of the difference)."""
    num_samples, sigma = 10_000, 0.7
    fun = lambda x: jax.nn.one_hot(jnp.argmax(x), x.shape[0])
    x = jnp.array([0.4, 0.0, -0.3])
    ours = perturbations.make_perturbed_fun(fun, num_samples=num_samples, sigma=sigma)
    theirs = optax.perturbations.make_perturbed_fun(fun, num_samples=num_samples, sigma=sigma)
    weights = jnp.array([1.0, -1.0, 0.5])
    key = jax.random.key(1)
    ours_value, ours_grad = jax.jit(jax.value_and_grad(lambda y: jnp.dot(weights, ours(key, y))))(x)
    theirs_value, theirs_grad = jax.jit(jax.value_and_grad(lambda y: jnp.dot(weights, theirs(key, y))))(x)
    scale = math.sqrt(2.0 / num_samples) * float(jnp.sum(jnp.abs(weights)))
    np.testing.assert_allclose(ours_value, theirs_value, atol=4 * 0.5 * scale)
    np.testing.assert_allclose(ours_grad, theirs_grad, atol=4 * scale / sigma)
