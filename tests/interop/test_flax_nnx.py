"""optcore inside ``flax.nnx.Optimizer``, beside Optax 0.2.8 in the same loop.

Each test builds the same small nnx model twice, trains one copy with an
optcore transformation and one with the Optax transformation of the same name
(both through ``nnx.Optimizer`` under ``nnx.jit``), and compares losses and
params step by step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

import optcore
from _interop import assert_close, assert_identical, assert_moved

STEPS = 6


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(3, 8, rngs=rngs)
        self.out = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def _data():
    kx, ky = jax.random.split(jax.random.key(1))
    return jax.random.normal(kx, (16, 3)), jax.random.normal(ky, (16, 2))


def _loss(model, x, y):
    return jnp.mean((model(x) - y) ** 2)


@nnx.jit
def _train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(_loss)(model, x, y)
    optimizer.update(model, grads)
    return loss


def _train(tx, steps=STEPS, between=None, wrt=nnx.Param):
    """Trains a fresh model; ``between(optimizer, step)`` runs after each step."""
    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, tx, wrt=wrt)
    x, y = _data()
    losses = []
    for step in range(steps):
        losses.append(_train_step(model, optimizer, x, y))
        if between is not None:
            between(optimizer, step)
    return jnp.stack(losses), nnx.state(model, nnx.Param), optimizer


def _initial_params():
    return nnx.state(MLP(nnx.Rngs(0)), nnx.Param)


def test_adamw_with_schedule_matches_optax():
    def make(lib):
        schedule = lib.warmup_cosine_decay_schedule(0.0, 1e-2, 2, STEPS)
        return lib.chain(lib.clip_by_global_norm(1.0), lib.adamw(schedule, weight_decay=1e-2))

    losses, params, optimizer = _train(make(optcore))
    ref_losses, ref_params, ref_optimizer = _train(make(optax))
    assert_moved(_initial_params(), params)
    assert_close(losses, ref_losses, "losses")
    assert_close(params, ref_params, "params")
    assert_close(nnx.to_pure_dict(nnx.state(optimizer, nnx.OptState)), nnx.to_pure_dict(nnx.state(ref_optimizer, nnx.OptState)), "optimizer state")


def test_inject_hyperparams_schedule_is_readable_from_opt_state():
    """Flax users log ``optimizer.opt_state.hyperparams['learning_rate']``."""

    def make(lib):
        return lib.inject_hyperparams(lib.adam)(learning_rate=lib.exponential_decay(1e-2, 2, 0.5))

    seen, ref_seen = [], []
    _, params, _ = _train(make(optcore), between=lambda o, _: seen.append(o.opt_state.hyperparams["learning_rate"][...]))
    _, ref_params, _ = _train(make(optax), between=lambda o, _: ref_seen.append(o.opt_state.hyperparams["learning_rate"][...]))
    # The value stored by step t is the schedule at count t (0-based): 1e-2 * 0.5 ** (t / 2).
    expected = [1e-2 * 0.5 ** (t / 2) for t in range(STEPS)]
    assert_close(jnp.stack(seen), jnp.asarray(expected, jnp.float32), "logged learning rates", rtol=1e-6)
    # All hyperparameters are float32 arrays on both sides: the same arithmetic.
    assert_identical(jnp.stack(seen), jnp.stack(ref_seen), "logged learning rates")
    assert_identical(params, ref_params, "params")


@pytest.mark.parametrize("how", ["assign", "assign_in_place"])
def test_setting_learning_rate_in_opt_state_takes_effect(how):
    """``optimizer.opt_state.hyperparams['learning_rate'] = ...`` between steps, as Flax users do."""

    def set_lr(optimizer, step):
        if step == 2:
            if how == "assign":
                optimizer.opt_state.hyperparams["learning_rate"] = 0.1
            else:
                optimizer.opt_state.hyperparams["learning_rate"][...] = jnp.asarray(0.1)

    def make(lib):
        return lib.inject_hyperparams(lib.sgd)(learning_rate=1e-2, momentum=0.9)

    losses, params, optimizer = _train(make(optcore), between=set_lr)
    ref_losses, ref_params, _ = _train(make(optax), between=set_lr)
    _, unchanged_params, _ = _train(make(optcore))
    assert float(jnp.asarray(optimizer.opt_state.hyperparams["learning_rate"][...])) == pytest.approx(0.1)
    assert_identical(losses, ref_losses, "losses")
    assert_identical(params, ref_params, "params")
    # The new rate was used: the run differs from the one that kept 1e-2.
    assert_moved(unchanged_params, params, "params after changing the learning rate")


def test_multisteps_accumulates_in_nnx_optimizer():
    def make(lib):
        return lib.MultiSteps(lib.adam(1e-2), every_k_schedule=3)

    _, params, _ = _train(make(optcore))
    _, ref_params, _ = _train(make(optax))
    assert_close(params, ref_params, "params")
    assert_moved(_initial_params(), params)

    # The first two of each three steps only accumulate: the params stay put.
    model = MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, make(optcore), wrt=nnx.Param)
    x, y = _data()
    start = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    _train_step(model, optimizer, x, y)
    _train_step(model, optimizer, x, y)
    assert_identical(nnx.state(model, nnx.Param), start, "params during accumulation")
    _train_step(model, optimizer, x, y)
    assert_moved(start, nnx.state(model, nnx.Param))


def test_partition_on_nnx_map_state_labels():
    """Per-parameter rates as in Flax's optimization cookbook: labels from ``nnx.map_state``."""
    labels = nnx.map_state(lambda path, _: path[-1], _initial_params())

    def make(lib):
        return lib.partition({"kernel": lib.adam(1e-3), "bias": lib.sgd(1e-1)}, labels)

    losses, params, _ = _train(make(optcore))
    ref_losses, ref_params, _ = _train(make(optax))
    assert_close(losses, ref_losses, "losses")
    assert_close(params, ref_params, "params")


def test_multi_transform_with_label_function_freezes_a_layer():
    """A label function of the nnx state; ``set_to_zero`` on one layer freezes it."""

    def label_fn(state):
        return nnx.map_state(lambda path, _: "frozen" if path[0] == "hidden" else "train", state)

    def make(lib):
        return lib.multi_transform({"train": lib.adam(1e-2), "frozen": lib.set_to_zero()}, label_fn)

    _, params, _ = _train(make(optcore))
    _, ref_params, _ = _train(make(optax))
    initial = _initial_params()
    assert_identical(params["hidden"], initial["hidden"], "frozen layer")
    assert_moved(initial["out"], params["out"])
    assert_close(params, ref_params, "params")


def test_masked_weight_decay_on_kernels_only():
    """``adamw(mask=fn)`` and ``masked`` with a mask function of the nnx state (kernels decay, biases do not)."""

    def kernels(state):
        return nnx.map_state(lambda path, _: path[-1] == "kernel", state)

    def make(lib):
        return lib.chain(lib.masked(lib.add_decayed_weights(0.5), kernels), lib.adamw(1e-2, weight_decay=0.1, mask=kernels))

    _, params, _ = _train(make(optcore))
    _, ref_params, _ = _train(make(optax))
    assert_close(params, ref_params, "params")


def test_lora_params_only():
    """``wrt=nnx.LoRAParam``: only the low-rank factors are optimized (cookbook recipe)."""

    BASE = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))  # LoRAParam subclasses Param

    def lora_model():
        base = MLP(nnx.Rngs(0))
        base.hidden = nnx.LoRA(3, 2, 8, base_module=base.hidden, rngs=nnx.Rngs(5))
        return base

    def train(tx):
        model = lora_model()
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.LoRAParam)
        x, y = _data()
        for _ in range(STEPS):
            _train_step(model, optimizer, x, y)
        return nnx.state(model, nnx.LoRAParam), nnx.state(model, BASE)

    lora, frozen = train(optcore.adam(1e-2))
    ref_lora, ref_frozen = train(optax.adam(1e-2))
    assert_close(lora, ref_lora, "LoRA params")
    assert_identical(frozen, nnx.state(lora_model(), BASE), "base params (not in wrt)")
    assert_moved(nnx.state(lora_model(), nnx.LoRAParam), lora)


def test_lbfgs_with_value_fn_extra_args():
    """L-BFGS through ``optimizer.update(model, grads, grad=, value=, value_fn=)`` (cookbook recipe)."""
    x, y = _data()

    def train(tx):
        model = MLP(nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        graphdef = nnx.graphdef(model)

        @nnx.jit
        def step(model, optimizer):
            value_fn = lambda state: _loss(nnx.merge(graphdef, state), x, y)
            loss, grads = nnx.value_and_grad(_loss)(model, x, y)
            optimizer.update(model, grads, grad=grads, value=loss, value_fn=value_fn)
            return loss

        losses = jnp.stack([step(model, optimizer) for _ in range(STEPS)])
        return losses, nnx.state(model, nnx.Param)

    losses, params = train(optcore.lbfgs())
    ref_losses, ref_params = train(optax.lbfgs())
    assert float(losses[-1]) < 0.5 * float(losses[0])
    assert_close(losses, ref_losses, "losses")
    assert_close(params, ref_params, "params")
