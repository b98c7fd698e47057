"""Negative and size-1-array learning rates, for every registered optimizer.

Optax runs ``sgd(-0.1)`` (gradient ascent), ``adam(-1e-3)`` and a learning rate
given as ``jnp.array([1e-3])``; so does optcore. Walked over the registry
(tests/registry_cases.py), so plugin optimizers are covered too.

References: for an optimizer whose update is ``-lr * direction(g, state)``
with a direction that does not depend on ``lr``, the update is odd in the
learning rate, ``u(-lr) = -u(lr)`` (closed form, exact up to rounding); a
size-1 array ``[lr]`` must give the numbers and the shapes of the scalar
``lr`` (Optax 0.2.8 broadcasts it instead, turning a scalar param into shape
``(1,)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import registry_cases as rc

LR = rc.LEARNING_RATE

# Optimizers whose learning rate enters other than as the final factor, so the
# first update is not odd in it; for them a negative learning rate is only
# required to build and step to finite numbers. Each was checked to give
# Optax 0.2.8's numbers for a negative learning rate (same formulas).
NOT_ODD_IN_LEARNING_RATE = {
    "fromage": "the params shrink by 1/sqrt(1 + lr^2), even in lr",
    "madgrad": "s = sum(lr g) and nu = sum(lr g^2) are both odd in lr, so the step s / cbrt(nu) is (nearly) even",
    "schedule_free_adamw": "the averaging weight max(lr_max, lr)^2 starts from lr_max = 0: zero for lr < 0",
    "schedule_free_sgd": "the averaging weight max(lr_max, lr)^2 starts from lr_max = 0: zero for lr < 0",
}


def _lr_cases():
    # lbfgs keeps learning_rate=None (its line search picks the step): no learning rate to negate.
    return rc.case_params([case for case in rc.optimizer_cases() if "learning_rate" in case.kwargs])


def _steps(opt, name, params, n=2):
    """The updates of ``n`` steps on the registry objective (eager: each optimizer is built anew)."""
    state = opt.init(params)
    out = []
    for _ in range(n):
        grads = rc.objective_grad(params)
        updates, state = rc.update(opt, name, grads, state, params)
        out.append(updates)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return out


def _assert_finite(tree, what):
    for leaf in jax.tree.leaves(tree):
        assert bool(jnp.all(jnp.isfinite(leaf))), f"{what}: non-finite update {leaf}"


@pytest.mark.parametrize("case", _lr_cases())
def test_negative_learning_rate_builds_and_ascends(case):
    params = rc.small_params(case.name)
    [descent] = _steps(case.build(learning_rate=LR), case.name, params, n=1)
    [ascent] = _steps(case.build(learning_rate=-LR), case.name, params, n=1)
    _assert_finite(ascent, case.name)
    if case.name in NOT_ODD_IN_LEARNING_RATE:
        return
    for up, down in zip(jax.tree.leaves(ascent), jax.tree.leaves(descent)):
        assert up.shape == down.shape
        np.testing.assert_allclose(np.asarray(up, np.float32), -np.asarray(down, np.float32), rtol=1e-5, atol=1e-8)
    # Uphill: the step of ascent does not decrease the objective to first order
    # (some optimizers, e.g. adopt, make a zero first step).
    grads = jax.tree.leaves(rc.objective_grad(params))
    slope = sum(float(jnp.vdot(u.astype(jnp.float32), g)) for u, g in zip(jax.tree.leaves(ascent), grads))
    moved = any(bool(jnp.any(u != 0)) for u in jax.tree.leaves(ascent))
    assert slope > 0 if moved else slope == 0, f"{case.name}: -lr did not step uphill (<u, g> = {slope})"


@pytest.mark.parametrize("case", _lr_cases())
def test_size_one_array_learning_rate_acts_as_a_scalar(case):
    params = rc.small_params(case.name)
    scalar = _steps(case.build(learning_rate=LR), case.name, params)
    array = _steps(case.build(learning_rate=jnp.array([LR])), case.name, params)
    for step, (a, s) in enumerate(zip(array, scalar)):
        assert jax.tree.structure(a) == jax.tree.structure(s)
        for path_leaf, p, leaf in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(params), jax.tree.leaves(s)):
            path, got = path_leaf
            where = f"{case.name} step {step}{jax.tree_util.keystr(path)}"
            assert got.shape == p.shape == leaf.shape, f"{where}: shape {got.shape}, params {p.shape}"
            assert got.dtype == leaf.dtype, f"{where}: dtype {got.dtype} != {leaf.dtype}"
            np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(leaf, np.float32), rtol=1e-6, atol=0,
                                       err_msg=where)
