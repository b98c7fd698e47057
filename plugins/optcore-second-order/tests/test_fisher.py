"""fisher_diag and empirical_fisher_diag against per-example gradients written in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from second_order_models import linear_loss, mlp_loss
from optcore_second_order import empirical_fisher_diag, fisher_diag


def linear_example_gradients(params, inputs, targets):
    """Rows: d/d(b, w) of (x.w + b - y)**2 = 2 r (1, x), in ravel order (b, then w)."""
    x = np.asarray(inputs, np.float64)
    residual = x @ np.asarray(params["w"], np.float64) + float(params["b"]) - np.asarray(targets)
    return 2.0 * residual[:, None] * np.concatenate([np.ones((len(x), 1)), x], axis=1)


def test_fisher_diag_is_squared_full_batch_gradient(linear_problem):
    params, inputs, targets = linear_problem
    expected = linear_example_gradients(params, inputs, targets).mean(axis=0) ** 2
    result = fisher_diag(linear_loss, params, inputs, targets)
    assert result.shape == (6,)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-7)
    tree = fisher_diag(linear_loss, params, inputs, targets, as_tree=True)
    np.testing.assert_allclose(tree["b"], expected[0], rtol=1e-5)
    np.testing.assert_allclose(tree["w"], expected[1:], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 7, 50])  # 3 leaves a remainder of 1
def test_empirical_fisher_linear(linear_problem, chunk_size):
    params, inputs, targets = linear_problem
    expected = (linear_example_gradients(params, inputs, targets) ** 2).mean(axis=0)
    result = empirical_fisher_diag(linear_loss, params, inputs, targets, chunk_size=chunk_size)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-7)


def test_empirical_fisher_mlp_against_explicit_loop(mlp_problem):
    params, inputs, targets = mlp_problem
    grads = [
        np.asarray(ravel_pytree(jax.grad(mlp_loss)(params, inputs[b : b + 1], targets[b : b + 1]))[0],
                   np.float64)
        for b in range(len(inputs))
    ]
    expected = np.mean(np.square(grads), axis=0)
    jitted = jax.jit(lambda p, x, y: empirical_fisher_diag(mlp_loss, p, x, y, chunk_size=4, as_tree=True))
    result = jitted(params, inputs, targets)
    assert jax.tree.structure(result) == jax.tree.structure(params)
    np.testing.assert_allclose(ravel_pytree(result)[0], expected, rtol=1e-5, atol=1e-8)


def test_empirical_fisher_accepts_pytree_batches():
    w = jnp.asarray([1.0, -2.0])
    inputs = {"a": jnp.asarray([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]), "scale": jnp.asarray([1.0, 2.0, 3.0])}
    targets = jnp.asarray([0.0, 1.0, -1.0])

    def nll(p, x, y):
        return jnp.sum(x["scale"] * (x["a"] @ p - y) ** 2)

    rows = []
    for b in range(3):
        a = np.asarray(inputs["a"][b])
        residual = a @ np.asarray(w) - float(targets[b])
        rows.append(2.0 * float(inputs["scale"][b]) * residual * a)
    result = empirical_fisher_diag(nll, w, inputs, targets, chunk_size=2)
    np.testing.assert_allclose(result, np.mean(np.square(rows), axis=0), rtol=1e-6)


def test_empirical_fisher_keeps_bfloat16_and_sums_in_float32():
    w = jnp.full((3,), 0.5, jnp.bfloat16)
    inputs = jnp.ones((64, 3), jnp.bfloat16) * jnp.asarray([1.0, 0.01, 0.001], jnp.bfloat16)
    nll = lambda p, x, y: jnp.sum(x * p) + 0 * jnp.sum(y)  # per-example gradient is x
    targets = jnp.zeros(64)
    result = empirical_fisher_diag(nll, w, inputs, targets)
    assert result.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(result, np.float32),
                               np.asarray(inputs[0], np.float32) ** 2, rtol=1e-2)
