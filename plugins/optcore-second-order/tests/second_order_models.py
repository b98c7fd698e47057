"""Small models with known curvature, shared by the tests (fixtures live in conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def linear_loss(params, inputs, targets):
    """Mean squared error of an affine model: its Hessian is 2/B [X 1]^T [X 1]."""
    residual = inputs @ params["w"] + params["b"] - targets
    return jnp.mean(residual**2)


def mlp_predict(params, inputs):
    hidden = jnp.tanh(inputs @ params["w1"] + params["b1"])
    return hidden @ params["w2"] + params["b2"]


def softmax_cross_entropy(logits, labels):
    return -jnp.mean(jnp.sum(labels * jax.nn.log_softmax(logits), axis=-1))


def mlp_loss(params, inputs, targets):
    return softmax_cross_entropy(mlp_predict(params, inputs), targets)


def make_linear_problem():
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.normal(size=5), jnp.float32),
        "b": jnp.asarray(0.3, jnp.float32),
    }
    inputs = jnp.asarray(rng.normal(size=(7, 5)), jnp.float32)
    targets = jnp.asarray(rng.normal(size=7), jnp.float32)
    return params, inputs, targets


def make_mlp_problem():
    rng = np.random.default_rng(1)
    params = {
        "w1": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "b1": jnp.asarray(rng.normal(size=4) * 0.1, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "b2": jnp.asarray(rng.normal(size=3) * 0.1, jnp.float32),
    }
    inputs = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    targets = jax.nn.one_hot(jnp.asarray(rng.integers(0, 3, size=6)), 3)
    return params, inputs, targets


def dense_hessian(loss, params, inputs, targets):
    """The full Hessian over the raveled parameters, by jax.hessian (reference only)."""
    flat, unravel = ravel_pytree(params)
    full = jax.jit(jax.hessian(lambda f, x, y: loss(unravel(f), x, y)))
    return np.asarray(full(flat, inputs, targets), np.float64)
