"""Orbax checkpoints of optcore states: save after k steps, restore, continue.

As Orbax users do, the state is restored into a *target* built from the
optimizer: an abstract one from ``jax.eval_shape(opt.init, params)`` for
``StandardCheckpointer``, a concrete one from ``opt.init(params)`` for
``PyTreeCheckpointer``. Training then continues from the restored state and
must be bit-identical to a run that was never interrupted.

A checkpoint written by an Optax 0.2.8 program restores into the optcore state
of the same optimizer (same layout), and training continues within float32
rtol 1e-5 of the uninterrupted Optax run (the tolerance of optcore's numerics
against Optax; the round trip itself is exact).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
import pytest

import optcore
from _interop import assert_close, assert_identical, assert_moved

STEPS_BEFORE, STEPS_AFTER = 3, 3
# The apply_if_finite case gets a NaN gradient at this step, so its counters are not all zero when saved.
POISONED_STEP = 1


def _params():
    return {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.full((4,), 0.3)}


def _loss(params, x):
    return jnp.mean(jnp.sin(x @ params["w"] + params["b"]) ** 2)


_X = jax.random.normal(jax.random.key(2), (8, 3))

# name -> (build(lib), uses LookaheadParams, poisons a gradient)
CASES = {
    "chain": (lambda lib: lib.chain(lib.clip_by_global_norm(1.0), lib.adamw(1e-2, weight_decay=1e-2)), False, False),
    "inject_hyperparams": (
        lambda lib: lib.inject_hyperparams(lib.adam)(learning_rate=lib.linear_schedule(1e-2, 1e-3, 6), b1=0.8),
        False,
        False,
    ),
    "MultiSteps": (lambda lib: lib.MultiSteps(lib.adam(1e-2), every_k_schedule=2), False, False),
    "masked": (lambda lib: lib.masked(lib.adam(1e-2), {"w": True, "b": False}), False, False),
    "multi_transform": (
        lambda lib: lib.multi_transform({"a": lib.adam(1e-2), "m": lib.sgd(1e-1, momentum=0.9)}, {"w": "a", "b": "m"}),
        False,
        False,
    ),
    "apply_if_finite": (lambda lib: lib.apply_if_finite(lib.adam(1e-2), max_consecutive_errors=3), False, True),
    "lookahead": (lambda lib: lib.lookahead(lib.adam(1e-2), sync_period=2, slow_step_size=0.5), True, False),
    "schedule_free": (lambda lib: lib.contrib.schedule_free_adamw(1e-2, warmup_steps=2), False, False),
}


def _initial(lib, lookahead):
    params = _params()
    return lib.LookaheadParams.init_synced(params) if lookahead else params


def _stepper(name, lib):
    """``run(params, state, first, count)`` with one jitted step for case ``name`` built from ``lib``."""
    build, lookahead, poison = CASES[name]
    tx = build(lib)

    @jax.jit
    def step(params, state, index):
        # Lookahead: the gradient at the fast weights (Optax's documented use).
        grads = jax.grad(_loss)(params.fast if lookahead else params, _X)
        if poison:
            grads = jax.tree.map(lambda g: jnp.where(index == POISONED_STEP, jnp.nan, g), grads)
        updates, state = tx.update(grads, state, params)
        return optcore.apply_updates(params, updates), state

    def run(params, state, first, count):
        for index in range(first, first + count):
            params, state = step(params, state, index)
        return params, state

    def start():
        params = _initial(lib, lookahead)
        return params, tx.init(params)

    return tx, start, run


def _save(tmp_path, tree, checkpointer):
    path = tmp_path / "ckpt"
    checkpointer.save(path, tree)
    if isinstance(checkpointer, ocp.AsyncCheckpointer):  # StandardCheckpointer writes in the background
        checkpointer.wait_until_finished()
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_standard_checkpointer_restore_into_abstract_state_and_continue(tmp_path, name):
    tx, start, run = _stepper(name, optcore)
    params, state = run(*start(), 0, STEPS_BEFORE)

    path = _save(tmp_path, {"params": params, "opt_state": state}, ocp.StandardCheckpointer())
    abstract = jax.eval_shape(lambda: dict(zip(("params", "opt_state"), start())))
    restored = ocp.StandardCheckpointer().restore(path, abstract)

    assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(state), "restored state layout differs"
    assert_identical(restored["opt_state"], state, "restored state")
    params, state = run(restored["params"], restored["opt_state"], STEPS_BEFORE, STEPS_AFTER)
    ref_params, ref_state = run(*start(), 0, STEPS_BEFORE + STEPS_AFTER)
    assert_moved(start()[0], params)
    assert_identical(params, ref_params, "params")
    assert_identical(state, ref_state, "state")


@pytest.mark.parametrize("name", ["inject_hyperparams", "MultiSteps", "apply_if_finite"])
def test_pytree_checkpointer_restore_into_concrete_target_and_continue(tmp_path, name):
    tx, start, run = _stepper(name, optcore)
    params, state = run(*start(), 0, STEPS_BEFORE)

    path = _save(tmp_path, (params, state), ocp.PyTreeCheckpointer())
    restored_params, restored_state = ocp.PyTreeCheckpointer().restore(path, item=start())

    assert jax.tree.structure(restored_state) == jax.tree.structure(state)
    params, state = run(restored_params, restored_state, STEPS_BEFORE, STEPS_AFTER)
    ref_params, ref_state = run(*start(), 0, STEPS_BEFORE + STEPS_AFTER)
    assert_identical(params, ref_params, "params")
    assert_identical(state, ref_state, "state")


@pytest.mark.parametrize("name", sorted(CASES))
def test_optax_checkpoint_restores_into_optcore_state(tmp_path, name):
    """A ported program resumes from the checkpoint its Optax version wrote."""
    _, optax_start, optax_run = _stepper(name, optax)
    _, start, run = _stepper(name, optcore)
    params, state = optax_run(*optax_start(), 0, STEPS_BEFORE)

    path = _save(tmp_path, {"params": params, "opt_state": state}, ocp.StandardCheckpointer())
    abstract = jax.eval_shape(lambda: dict(zip(("params", "opt_state"), start())))
    restored = ocp.StandardCheckpointer().restore(path, abstract)

    # Same values, now in optcore's own state classes.
    assert_identical(restored["opt_state"], state, "restored state")
    assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(start()[1])
    params, state = run(restored["params"], restored["opt_state"], STEPS_BEFORE, STEPS_AFTER)
    ref_params, ref_state = optax_run(*optax_start(), 0, STEPS_BEFORE + STEPS_AFTER)
    assert_close(params, ref_params, "params")
    assert_close(state, ref_state, "state")
