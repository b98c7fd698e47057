"""Exact Hessian-vector products and diagonals against closed forms and jax.hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from second_order_models import dense_hessian, linear_loss, mlp_loss
from optcore_second_order import hessian_diag, hvp

CHUNKS = [None, 1, 4, 7, 1000]  # 7 leaves a remainder for both models; 1000 > n


def linear_closed_form_hessian(inputs):
    design = np.concatenate([np.asarray(inputs, np.float64), np.ones((len(inputs), 1))], axis=1)
    # ravel_pytree orders dict keys: "b" first, then "w".
    design = np.concatenate([design[:, -1:], design[:, :-1]], axis=1)
    return 2.0 / len(inputs) * design.T @ design


def test_hvp_linear_closed_form(linear_problem):
    params, inputs, targets = linear_problem
    v = jnp.linspace(-1.0, 1.0, 6)
    result = hvp(linear_loss, v, params, inputs, targets)
    assert jax.tree.structure(result) == jax.tree.structure(params)
    expected = linear_closed_form_hessian(inputs) @ np.asarray(v, np.float64)
    np.testing.assert_allclose(ravel_pytree(result)[0], expected, rtol=1e-5, atol=1e-5)


def test_hvp_mlp_matches_dense_hessian(mlp_problem):
    params, inputs, targets = mlp_problem
    n = ravel_pytree(params)[0].size
    v = jnp.asarray(np.random.default_rng(2).normal(size=n), jnp.float32)
    result = ravel_pytree(hvp(mlp_loss, v, params, inputs, targets))[0]
    expected = dense_hessian(mlp_loss, params, inputs, targets) @ np.asarray(v, np.float64)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_hessian_diag_linear_closed_form(linear_problem, chunk_size):
    params, inputs, targets = linear_problem
    result = hessian_diag(linear_loss, params, inputs, targets, chunk_size=chunk_size)
    expected = np.diag(linear_closed_form_hessian(inputs))
    assert result.shape == (6,) and result.dtype == jnp.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_hessian_diag_mlp_matches_dense_hessian(mlp_problem, chunk_size):
    params, inputs, targets = mlp_problem
    result = hessian_diag(mlp_loss, params, inputs, targets, chunk_size=chunk_size)
    expected = np.diag(dense_hessian(mlp_loss, params, inputs, targets))
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_hessian_diag_as_tree(mlp_problem):
    params, inputs, targets = mlp_problem
    flat = hessian_diag(mlp_loss, params, inputs, targets)
    tree = hessian_diag(mlp_loss, params, inputs, targets, as_tree=True)
    assert jax.tree.structure(tree) == jax.tree.structure(params)
    for leaf, param in zip(jax.tree.leaves(tree), jax.tree.leaves(params)):
        assert leaf.shape == param.shape and leaf.dtype == param.dtype
    np.testing.assert_array_equal(ravel_pytree(tree)[0], flat)


def test_hessian_diag_under_jit(mlp_problem):
    params, inputs, targets = mlp_problem
    jitted = jax.jit(lambda p, x, y: hessian_diag(mlp_loss, p, x, y, chunk_size=5, as_tree=True))
    expected = np.diag(dense_hessian(mlp_loss, params, inputs, targets))
    np.testing.assert_allclose(ravel_pytree(jitted(params, inputs, targets))[0], expected,
                               rtol=1e-5, atol=1e-6)
    jitted_hvp = jax.jit(lambda v, p, x, y: hvp(mlp_loss, v, p, x, y))
    v = jnp.ones(expected.size)
    np.testing.assert_allclose(
        ravel_pytree(jitted_hvp(v, params, inputs, targets))[0],
        dense_hessian(mlp_loss, params, inputs, targets).sum(axis=1), rtol=1e-4, atol=1e-5)


def test_hessian_diag_keeps_bfloat16_params():
    params = {"w": jnp.asarray([0.5, -1.0, 2.0], jnp.bfloat16)}
    loss = lambda p, x, y: jnp.sum(x * p["w"].astype(jnp.float32) ** 3)  # H_ii = 6 x_i w_i
    inputs = jnp.asarray([1.0, 2.0, 0.5])
    flat = hessian_diag(loss, params, inputs, None)
    tree = hessian_diag(loss, params, inputs, None, as_tree=True)
    assert flat.dtype == jnp.bfloat16 and tree["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(tree["w"], np.float32), [3.0, -12.0, 6.0], rtol=1e-2)


def test_hessian_diag_of_a_separable_quartic():
    # loss = sum(c * w**4): H = diag(12 c w**2) exactly.
    w = jnp.asarray([1.0, -2.0, 0.5, 3.0])
    c = jnp.asarray([1.0, 0.5, 2.0, -1.0])
    result = hessian_diag(lambda p, x, y: jnp.sum(x * p**4), w, c, None, chunk_size=3)
    np.testing.assert_allclose(result, 12 * np.asarray(c) * np.asarray(w) ** 2, rtol=1e-6)
