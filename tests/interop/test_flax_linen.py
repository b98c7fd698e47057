"""optcore as the ``tx`` of a Flax linen ``TrainState``, beside Optax 0.2.8.

``TrainState.create`` calls ``tx.init`` and ``apply_gradients`` calls
``tx.update`` and ``optax.apply_updates``; both runs train the same linen model
under ``jax.jit`` and are compared step by step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import linen as nn
from flax.training import train_state

import optcore
from _interop import assert_close, assert_identical, assert_moved

STEPS = 6


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(8)(x))
        return nn.Dense(2)(x)


def _data():
    kx, ky = jax.random.split(jax.random.key(3))
    return jax.random.normal(kx, (16, 3)), jax.random.normal(ky, (16, 2))


def _initial_params():
    return MLP().init(jax.random.key(0), jnp.ones((1, 3)))["params"]


@jax.jit
def _train_step(state, x, y):
    def loss_fn(params):
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def _train(tx):
    state = train_state.TrainState.create(apply_fn=MLP().apply, params=_initial_params(), tx=tx)
    x, y = _data()
    losses = []
    for _ in range(STEPS):
        state, loss = _train_step(state, x, y)
        losses.append(loss)
    return jnp.stack(losses), state


RECIPES = {
    "adamw_cosine": lambda lib: lib.adamw(lib.cosine_decay_schedule(1e-2, STEPS), weight_decay=1e-3),
    "clip_sgd_nesterov": lambda lib: lib.chain(lib.clip_by_global_norm(0.5), lib.sgd(5e-2, momentum=0.9, nesterov=True)),
    "inject_lamb": lambda lib: lib.inject_hyperparams(lib.lamb)(learning_rate=1e-2),
    "multisteps_adam": lambda lib: lib.MultiSteps(lib.adam(1e-2), every_k_schedule=2),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_train_state_apply_gradients_matches_optax(recipe):
    losses, state = _train(RECIPES[recipe](optcore))
    ref_losses, ref_state = _train(RECIPES[recipe](optax))
    assert int(state.step) == STEPS
    assert_moved(_initial_params(), state.params)
    assert_close(losses, ref_losses, "losses")
    assert_close(state.params, ref_state.params, "params")
    assert_close(state.opt_state, ref_state.opt_state, "optimizer state")
    if recipe == "inject_lamb":
        # Hyperparameters are arrays on both sides: the same float32 arithmetic.
        assert_identical(state.params, ref_state.params, "params")
