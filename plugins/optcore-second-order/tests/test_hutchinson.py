"""Hutchinson's estimator: exact on diagonal Hessians, converging like 1/sqrt(samples) otherwise.

For Rademacher probes the error of entry i has variance sum_{j != i} H_ij**2 / S,
so the expected squared error of the whole estimate is ||offdiag(H)||_F**2 / S.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from second_order_models import dense_hessian, mlp_loss
from optcore_second_order import hutchinson_hessian_diag

SAMPLES = (8, 64, 512)


def test_exact_for_a_diagonal_hessian():
    w = jnp.asarray([1.0, -2.0, 0.5, 3.0])
    c = jnp.asarray([1.0, 0.5, 2.0, -1.0])
    loss = lambda p, x, y: jnp.sum(x * p**4)
    result = hutchinson_hessian_diag(loss, w, c, None, jax.random.key(0), num_samples=1)
    np.testing.assert_allclose(result, 12 * np.asarray(c) * np.asarray(w) ** 2, rtol=1e-6)


def test_error_falls_like_one_over_sqrt_samples(mlp_problem):
    params, inputs, targets = mlp_problem
    hessian = dense_hessian(mlp_loss, params, inputs, targets)
    exact = np.diag(hessian)
    offdiag_sq = np.sum(hessian**2) - np.sum(exact**2)
    errors = []
    for seed, num_samples in enumerate(SAMPLES):
        estimate = hutchinson_hessian_diag(
            mlp_loss, params, inputs, targets, jax.random.key(seed),
            num_samples=num_samples, chunk_size=64)
        errors.append(np.sum((np.asarray(estimate, np.float64) - exact) ** 2))
        # err**2 has mean offdiag_sq / S; over 20 seeds per S the ratio below
        # stayed in [0.27, 2.6], so these bounds test the rate with margin.
        ratio = errors[-1] * num_samples / offdiag_sq
        assert 0.25 < ratio < 4.0, (num_samples, ratio)
    slope = np.polyfit(np.log(SAMPLES), 0.5 * np.log(errors), 1)[0]
    assert -0.75 < slope < -0.3, slope


def test_chunking_and_jit_do_not_change_the_estimate(mlp_problem):
    params, inputs, targets = mlp_problem
    key = jax.random.key(3)
    one_at_a_time = hutchinson_hessian_diag(mlp_loss, params, inputs, targets, key, num_samples=10)
    jitted = jax.jit(lambda p, x, y, k: hutchinson_hessian_diag(
        mlp_loss, p, x, y, k, num_samples=10, chunk_size=4, as_tree=True))
    tree = jitted(params, inputs, targets, key)
    assert jax.tree.structure(tree) == jax.tree.structure(params)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(tree)[0], one_at_a_time,
                               rtol=1e-5, atol=1e-6)


def test_accepts_legacy_uint32_keys(mlp_problem):
    params, inputs, targets = mlp_problem
    new = hutchinson_hessian_diag(mlp_loss, params, inputs, targets, jax.random.key(5), num_samples=3)
    old = hutchinson_hessian_diag(mlp_loss, params, inputs, targets, jax.random.PRNGKey(5), num_samples=3)
    np.testing.assert_allclose(new, old, rtol=1e-6)
