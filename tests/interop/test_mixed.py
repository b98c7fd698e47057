"""Chains and wrappers that mix optcore and Optax 0.2.8 transformations, in both directions.

A program being ported is often half converted: an Optax chain with one optcore
member, or an optcore wrapper around a transformation from Optax (or from a
library built on it). Each mixed composition trains a small model under
``jax.jit``/``lax.scan`` and is compared with the all-Optax composition.

The optcore-outside direction (``optcore.chain(optax.clip(1.0), ...)``,
``optcore.MultiSteps(optax.adam(...))``, ``optcore.multi_transform`` with Optax
members) needs optcore's combinators to accept foreign transformations: any
object with callable ``init`` and ``update``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import optcore
from _interop import assert_close, assert_moved

STEPS = 8


def _params():
    return {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.full((4,), 0.3)}


_X = jax.random.normal(jax.random.key(6), (8, 3))
_Y = jax.random.normal(jax.random.key(7), (8, 4))


def _loss(params):
    return jnp.mean((jnp.tanh(_X @ params["w"] + params["b"]) - _Y) ** 2)


def _train(tx):
    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(_loss)(params)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    params = _params()
    (params, _), losses = jax.jit(lambda c: jax.lax.scan(step, c, None, length=STEPS))((params, tx.init(params)))
    return losses, params


_LABELS = {"w": "adam", "b": "sgd"}

# name -> (mixed composition, the same composition all in Optax)
OPTAX_OUTSIDE = {
    "optax.chain(optcore.clip, optax.adam)": (
        lambda: optax.chain(optcore.clip(0.05), optax.adam(1e-2)),
        lambda: optax.chain(optax.clip(0.05), optax.adam(1e-2)),
    ),
    "optax.chain(optax.clip_by_global_norm, optcore.adamw)": (
        lambda: optax.chain(optax.clip_by_global_norm(0.1), optcore.adamw(1e-2, weight_decay=1e-2)),
        lambda: optax.chain(optax.clip_by_global_norm(0.1), optax.adamw(1e-2, weight_decay=1e-2)),
    ),
    "optax.MultiSteps(optcore.adam)": (
        lambda: optax.MultiSteps(optcore.adam(1e-2), every_k_schedule=3),
        lambda: optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3),
    ),
    "optax.multi_transform(optcore members)": (
        lambda: optax.multi_transform({"adam": optcore.adam(1e-2), "sgd": optcore.sgd(1e-1, momentum=0.9)}, _LABELS),
        lambda: optax.multi_transform({"adam": optax.adam(1e-2), "sgd": optax.sgd(1e-1, momentum=0.9)}, _LABELS),
    ),
    "optax.inject_hyperparams(optcore.adam)": (
        lambda: optax.inject_hyperparams(optcore.adam)(learning_rate=optcore.linear_schedule(1e-2, 1e-3, STEPS)),
        lambda: optax.inject_hyperparams(optax.adam)(learning_rate=optax.linear_schedule(1e-2, 1e-3, STEPS)),
    ),
}

OPTCORE_OUTSIDE = {
    "optcore.chain(optax.clip, optcore.adam)": (
        lambda: optcore.chain(optax.clip(0.05), optcore.adam(1e-2)),
        lambda: optax.chain(optax.clip(0.05), optax.adam(1e-2)),
    ),
    "optcore.chain(optcore.clip_by_global_norm, optax.adam)": (
        lambda: optcore.chain(optcore.clip_by_global_norm(0.1), optax.adam(1e-2)),
        lambda: optax.chain(optax.clip_by_global_norm(0.1), optax.adam(1e-2)),
    ),
    "optcore.MultiSteps(optax.adam)": (
        lambda: optcore.MultiSteps(optax.adam(1e-2), every_k_schedule=3),
        lambda: optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3),
    ),
    "optcore.multi_transform(optax and optcore members)": (
        lambda: optcore.multi_transform({"adam": optax.adam(1e-2), "sgd": optcore.sgd(1e-1, momentum=0.9)}, _LABELS),
        lambda: optax.multi_transform({"adam": optax.adam(1e-2), "sgd": optax.sgd(1e-1, momentum=0.9)}, _LABELS),
    ),
    "optcore.masked(optax.adam)": (
        lambda: optcore.chain(optcore.masked(optax.adam(1e-2), {"w": True, "b": False}), optcore.masked(optax.sgd(1e-1), {"w": False, "b": True})),
        lambda: optax.chain(optax.masked(optax.adam(1e-2), {"w": True, "b": False}), optax.masked(optax.sgd(1e-1), {"w": False, "b": True})),
    ),
    "optcore.apply_if_finite(optax.adam)": (
        lambda: optcore.apply_if_finite(optax.adam(1e-2), max_consecutive_errors=2),
        lambda: optax.apply_if_finite(optax.adam(1e-2), max_consecutive_errors=2),
    ),
}


def _check(mixed, reference):
    losses, params = _train(mixed())
    ref_losses, ref_params = _train(reference())
    assert_moved(_params(), params)
    assert_close(losses, ref_losses, "losses")
    assert_close(params, ref_params, "params")


@pytest.mark.parametrize("name", sorted(OPTAX_OUTSIDE))
def test_optcore_inside_optax_composition(name):
    _check(*OPTAX_OUTSIDE[name])


@pytest.mark.parametrize("name", sorted(OPTCORE_OUTSIDE))
def test_optax_inside_optcore_composition(name):
    _check(*OPTCORE_OUTSIDE[name])
