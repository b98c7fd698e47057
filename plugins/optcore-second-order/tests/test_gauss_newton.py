"""gauss_newton_diag against J^T H J built from jax.jacobian and jax.hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from second_order_models import linear_loss, mlp_predict, softmax_cross_entropy
from optcore_second_order import gauss_newton_diag, hessian_diag


def dense_gauss_newton_diag(predict, output_loss, params, inputs, targets):
    flat, unravel = ravel_pytree(params)
    outputs = predict(params, inputs)
    jac = jax.jit(jax.jacobian(lambda f, x: predict(unravel(f), x).ravel()))(flat, inputs)
    hess = jax.jit(jax.hessian(lambda z, y: output_loss(z.reshape(outputs.shape), y)))(
        outputs.ravel(), targets)
    jac, hess = np.asarray(jac, np.float64), np.asarray(hess, np.float64)
    return np.einsum("aj,ab,bj->j", jac, hess, jac)


@pytest.mark.parametrize("chunk_size", [None, 5, 1000])
def test_gauss_newton_equals_hessian_for_a_linear_model(linear_problem, chunk_size):
    params, inputs, targets = linear_problem
    predict = lambda p, x: x @ p["w"] + p["b"]
    output_loss = lambda z, y: jnp.mean((z - y) ** 2)
    result = gauss_newton_diag(predict, output_loss, params, inputs, targets, chunk_size=chunk_size)
    np.testing.assert_allclose(result, hessian_diag(linear_loss, params, inputs, targets),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_gauss_newton_mlp(mlp_problem, chunk_size):
    params, inputs, targets = mlp_problem
    expected = dense_gauss_newton_diag(mlp_predict, softmax_cross_entropy, params, inputs, targets)
    result = gauss_newton_diag(mlp_predict, softmax_cross_entropy, params, inputs, targets,
                               chunk_size=chunk_size)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(result) >= -1e-7)  # convex output loss: PSD diagonal


def test_gauss_newton_coupled_loss_pytree_outputs_and_jit(mlp_problem):
    params, inputs, targets = mlp_problem

    def predict(p, x):  # two outputs, as a dict
        logits = mlp_predict(p, x)
        return {"logits": logits, "energy": jnp.sum(logits**2, axis=-1)}

    def output_loss(z, y):  # couples every example through logsumexp over the batch
        return jax.nn.logsumexp(z["logits"] * y) + 0.1 * jnp.sum(jnp.tanh(z["energy"]))

    def flat_predict(p, x):
        z = predict(p, x)
        return jnp.concatenate([z["logits"].ravel(), z["energy"]])

    def flat_loss(z, y):
        return output_loss({"logits": z[:18].reshape(6, 3), "energy": z[18:]}, y)

    expected = dense_gauss_newton_diag(flat_predict, flat_loss, params, inputs, targets)
    jitted = jax.jit(lambda p, x, y: gauss_newton_diag(predict, output_loss, p, x, y, as_tree=True))
    result = jitted(params, inputs, targets)
    assert jax.tree.structure(result) == jax.tree.structure(params)
    np.testing.assert_allclose(ravel_pytree(result)[0], expected, rtol=1e-4, atol=5e-5)  # entries up to ~2
