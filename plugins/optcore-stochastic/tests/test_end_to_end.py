"""Optimising a Gaussian's parameters with each estimator and optcore.adam, and the seed example."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
from optcore_stochastic import measure_valued_jacobians, pathwise_jacobians, score_function_jacobians, utils

TARGET = jnp.array([1.0, -0.5])


def _loss(x):
    """E[f] = |mu - target|^2 + sum sigma^2: minimised by mean = target, sigma -> 0."""
    return jnp.sum((x - TARGET) ** 2)


@pytest.mark.parametrize(
    "estimator, num_samples",
    [(score_function_jacobians, 400), (pathwise_jacobians, 50), (measure_valued_jacobians, 50)],
    ids=["score_function", "pathwise", "measure_valued"],
)
def test_adam_on_estimated_gradients_reaches_the_optimum(estimator, num_samples):
    optimizer = optcore.adam(0.05)
    initial = [jnp.zeros(2), jnp.zeros(2)]

    @jax.jit
    def run(params, key):
        def step(carry, step_key):
            params, state = carry
            jacobians = estimator(_loss, params, utils.multi_normal, step_key, num_samples)
            grads = [jnp.mean(j, axis=0) for j in jacobians]
            updates, state = optimizer.update(grads, state, params)
            return (optcore.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, 300))
        return params

    mean, log_scale = run(initial, jax.random.key(0))
    np.testing.assert_allclose(mean, TARGET, atol=0.1)
    assert np.all(np.exp(np.asarray(log_scale)) < 0.3), log_scale  # from sigma = 1, shrinking towards 0


def test_seed_example_runs_as_written(within_se):
    rng = jax.random.key(0)
    num_samples = 100
    mean = jnp.array([0.5, -0.2, 1.0])
    log_scale = jnp.array([0.0, -1.0, 0.5])
    weights = jnp.array([1.0, -2.0, 0.5])
    optim = optcore.adam(1e-2)
    dist_params = [mean, log_scale]
    optim_state = optim.init(dist_params)

    function = lambda x: jnp.sum(x * weights)
    jacobians = pathwise_jacobians(function, dist_params, utils.multi_normal, rng, num_samples)
    mean_grads = jnp.mean(jacobians[0], axis=0)
    log_scale_grads = jnp.mean(jacobians[1], axis=0)
    grads = [mean_grads, log_scale_grads]
    optim_update, optim_state = optim.update(grads, optim_state)
    updated_dist_params = optcore.apply_updates(dist_params, optim_update)

    # Linear function: every per-sample d/dmean is exactly the weights; d/dlog_scale is
    # weights * sigma * eps per sample, zero on average.
    np.testing.assert_allclose(jacobians[0], jnp.broadcast_to(weights, (num_samples, 3)), rtol=1e-6)
    within_se(jacobians[1], np.zeros(3))
    # Adam's first step moves each coordinate by the learning rate against the gradient's sign.
    np.testing.assert_allclose(updated_dist_params[0], mean - 1e-2 * jnp.sign(weights), rtol=1e-5)
    np.testing.assert_allclose(updated_dist_params[1], log_scale - 1e-2 * jnp.sign(log_scale_grads), rtol=1e-4, atol=1e-6)
