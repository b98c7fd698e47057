"""optcore in an Equinox training loop: ``eqx.partition``/``eqx.filter`` and ``lax.scan``.

The model is split into arrays and static parts with ``eqx.partition``; the
optimizer state is built from ``eqx.filter(model, eqx.is_array)`` and carried,
with the params, through ``jax.lax.scan`` over the steps. The optcore state
must therefore keep its structure and dtypes from step to step (a scan carry
may not change either). Compared with Optax 0.2.8 in the same loop.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

import optcore
from _interop import assert_close, assert_identical, assert_moved

STEPS = 8


def _model():
    return eqx.nn.MLP(in_size=3, out_size=2, width_size=8, depth=1, activation=jnp.tanh, key=jax.random.key(0))


def _data():
    kx, ky = jax.random.split(jax.random.key(4))
    return jax.random.normal(kx, (16, 3)), jax.random.normal(ky, (16, 2))


def _train(tx, model=None):
    model = _model() if model is None else model
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt_state = tx.init(eqx.filter(model, eqx.is_array))
    x, y = _data()

    def loss_fn(params):
        model = eqx.combine(params, static)
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)

    def step(carry, _):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (eqx.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def run(params, opt_state):
        return jax.lax.scan(step, (params, opt_state), None, length=STEPS)

    (params, opt_state), losses = run(params, opt_state)
    return losses, eqx.combine(params, static), opt_state


RECIPES = {
    "adamw_schedule": lambda lib: lib.adamw(lib.warmup_cosine_decay_schedule(0.0, 1e-2, 2, STEPS), weight_decay=1e-3),
    "clip_adam": lambda lib: lib.chain(lib.clip_by_global_norm(0.5), lib.adam(1e-2)),
    "inject_adam": lambda lib: lib.inject_hyperparams(lib.adam)(learning_rate=lib.exponential_decay(1e-2, 2, 0.7)),
    "multisteps_sgd": lambda lib: lib.MultiSteps(lib.sgd(1e-1, momentum=0.9), every_k_schedule=3),
    "apply_if_finite_rmsprop": lambda lib: lib.apply_if_finite(lib.rmsprop(1e-2), max_consecutive_errors=2),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_scan_training_matches_optax(recipe):
    losses, model, opt_state = _train(RECIPES[recipe](optcore))
    ref_losses, ref_model, ref_opt_state = _train(RECIPES[recipe](optax))
    params = eqx.filter(model, eqx.is_array)
    assert_moved(eqx.filter(_model(), eqx.is_array), params)
    assert float(losses[-1]) < float(losses[0])
    assert_close(losses, ref_losses, "losses")
    assert_close(params, eqx.filter(ref_model, eqx.is_array), "params")
    assert_close(opt_state, ref_opt_state, "optimizer state")
    if recipe == "inject_adam":
        # Every hyperparameter is a float32 array on both sides: the same arithmetic.
        assert_identical(params, eqx.filter(ref_model, eqx.is_array), "params")


def test_filter_leaves_static_fields_out_of_the_state():
    """A model with a non-array field (an int) and a frozen array: only the filtered arrays get state."""

    class Scaled(eqx.Module):
        mlp: eqx.nn.MLP
        scale: jax.Array
        depth: int = eqx.field(static=True)

    model = Scaled(_model(), jnp.asarray(2.0), 1)
    trainable = eqx.filter(model, eqx.is_inexact_array)
    tx = optcore.adam(1e-2)
    state = tx.init(trainable)
    ref_state = optax.adam(1e-2).init(trainable)
    assert jax.tree.leaves(state[0].mu) and len(jax.tree.leaves(state[0].mu)) == len(jax.tree.leaves(trainable))
    assert_identical(state, ref_state, "initial state")

    # Freeze `scale` with a filter spec of the same structure, as Equinox users do.
    filter_spec = jax.tree.map(eqx.is_inexact_array, model)
    filter_spec = eqx.tree_at(lambda m: m.scale, filter_spec, replace=False)
    params, static = eqx.partition(model, filter_spec)
    x, y = _data()

    def loss_fn(params):
        m = eqx.combine(params, static)
        return jnp.mean((m.scale * jax.vmap(m.mlp)(x) - y) ** 2)

    def run(tx):
        state = tx.init(params)

        def step(carry, _):
            p, s = carry
            grads = jax.grad(loss_fn)(p)
            updates, s = tx.update(grads, s, p)
            return (eqx.apply_updates(p, updates), s), None

        (p, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=STEPS))((params, state))
        return eqx.combine(p, static)

    trained, ref_trained = run(optcore.adam(1e-2)), run(optax.adam(1e-2))
    assert float(trained.scale) == 2.0
    assert_close(eqx.filter(trained, eqx.is_array), eqx.filter(ref_trained, eqx.is_array), "params")
