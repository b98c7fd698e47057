"""Non-finite gradients and extreme scales, for every registered optimizer.

* ``apply_if_finite`` skips a step with a NaN or Inf gradient: params and the
  inner state stay bit-identical and the skip is counted.
* Without it, a NaN gradient entry propagates to exactly that parameter entry
  (the documented Optax behaviour), for a few simple optimizers.
* Gradients of 1e-30 keep every param and state leaf finite; gradients of 1e30
  (whose squares, 1e60, exceed float32) never produce a NaN, and params stay
  finite. A second moment that overflows to +Inf then turns the step into
  zero, as in Optax; ``nu_dtype=jnp.float32`` avoids this for float16 params.
* float16 and bfloat16 params keep their dtype and stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import optcore.testing
import registry_cases as rc

CASES = rc.optimizer_cases()

# Known faults in other modules, each kept visible as a strict xfail (the mark
# must go once the fault is fixed).
TINY_GRADIENT_BUGS: dict = {}
HALF_PRECISION_BUGS: dict = {}
HUGE_GRADIENT_BUGS: dict = {}


def _cases_with(bugs: dict):
    out = []
    for param in rc.case_params(CASES):
        case = param.values[0]
        marks = list(param.marks)
        if case.name in bugs:
            marks.append(pytest.mark.xfail(reason=bugs[case.name], strict=True))
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


def _fixed_grads(params, value):
    return jax.tree.map(lambda p: jnp.full_like(p, value), params)


def _with_entry(tree, value):
    """``tree`` with its first entry of ``['layer1']['w']`` set to ``value``."""
    out = jax.tree.map(lambda x: x, tree)
    out["layer1"]["w"] = out["layer1"]["w"].at[0, 0].set(value)
    return out


def _nonfinite_leaves(tree, allow_inf=False):
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if rc.is_key(leaf) or not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact):
            continue
        values = np.asarray(jnp.asarray(leaf).astype(jnp.float32))
        if np.isnan(values).any() or (not allow_inf and np.isinf(values).any()):
            bad.append(jax.tree_util.keystr(path))
    return bad


@pytest.mark.parametrize("case", rc.case_params(CASES))
def test_apply_if_finite_skips_nan_and_inf_steps(case):
    """NaN, +Inf, -Inf in turn: params and inner state bit-identical, each skip counted, then a good step."""
    optcore.testing.check_apply_if_finite(rc.harness(case), rc.small_params(case.name))


def test_apply_if_finite_lets_bad_steps_through_after_max_consecutive_errors():
    opt = optcore.apply_if_finite(optcore.sgd(0.1), max_consecutive_errors=1)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    nan_grads = {"w": jnp.array([np.nan, 1.0])}
    updates, state = opt.update(nan_grads, state)
    assert np.all(np.asarray(updates["w"]) == 0)  # skipped: 1 <= max_consecutive_errors
    updates, state = opt.update(nan_grads, state)
    assert np.isnan(np.asarray(updates["w"][0]))  # the second bad step in a row goes through


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "lion"])
def test_without_apply_if_finite_nan_propagates_to_that_entry(name):
    opt = optcore.get(name, learning_rate=0.1)
    params = rc.small_params()
    grads = _with_entry(_fixed_grads(params, 0.5), np.nan)
    updates, state = opt.update(grads, opt.init(params), params)
    new_params = optcore.apply_updates(params, updates)
    w = np.asarray(new_params["layer1"]["w"])
    assert np.isnan(w[0, 0])
    assert np.isfinite(np.delete(w.ravel(), 0)).all() and np.isfinite(np.asarray(new_params["scale"]))


def _two_steps(case, params, grads):
    # The gradients are an argument, as in training: closed over, XLA would
    # constant-fold the arithmetic on them and may rewrite it around Inf.
    opt, step = rc.jitted_step(case)
    state = opt.init(params)
    for _ in range(2):
        params, state = step(params, state, grads)
    return params, state


@pytest.mark.parametrize("case", _cases_with(TINY_GRADIENT_BUGS))
def test_tiny_gradients_keep_everything_finite(case):
    params = rc.small_params(case.name)
    new_params, state = _two_steps(case, params, _fixed_grads(params, 1e-30))
    assert not _nonfinite_leaves(new_params), "params"
    assert not _nonfinite_leaves(state), "state"


@pytest.mark.parametrize("case", _cases_with(HUGE_GRADIENT_BUGS))
def test_huge_gradients_never_give_nan(case):
    """1e30 gradients: squares (1e60) overflow float32, so a second moment may be +Inf,
    but no NaN may appear and the params stay finite."""
    params = rc.small_params(case.name)
    new_params, state = _two_steps(case, params, _fixed_grads(params, 1e30))
    assert not _nonfinite_leaves(new_params), "params"
    assert not _nonfinite_leaves(state, allow_inf=True), "state has NaN"


@pytest.mark.parametrize("name", ["sgd", "lion", "adamax", "signum", "sign_sgd", "rprop"])
def test_huge_gradients_keep_first_order_states_finite(name):
    """Optimizers that store no squared gradient have a finite state at 1e30."""
    case = next(c for c in CASES if c.name == name)
    params = rc.small_params()
    new_params, state = _two_steps(case, params, _fixed_grads(params, 1e30))
    assert not _nonfinite_leaves(state) and not _nonfinite_leaves(new_params)


def test_adam_overflowed_second_moment_gives_a_zero_step_not_nan():
    """g = 1e30: m = 1e29 is finite, v = (1 - b2) g^2 = 1e57 is not a float32; the step is 0."""
    opt = optcore.adam(0.1)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.full(3, 1e30)}, state)
    adam_state = state[0]
    np.testing.assert_allclose(np.asarray(adam_state.mu["w"]), 1e29, rtol=1e-6)
    assert np.isposinf(np.asarray(adam_state.nu["w"])).all()
    assert np.all(np.asarray(updates["w"]) == 0)


def test_yogi_with_an_overflowed_second_moment_gives_no_nan():
    """Yogi's sign(v - g^2) at v = g^2 = inf must be 0 (as for equal finite values), not NaN."""
    opt = optcore.yogi(0.1)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    for _ in range(2):
        updates, state = opt.update({"w": jnp.full(3, 1e30)}, state)
    assert not np.isnan(np.asarray(state[0].nu["w"])).any()
    assert not np.isnan(np.asarray(updates["w"])).any()


def test_float32_second_moment_protects_float16_params():
    """float16 params, g = 300: v = (1 - b2) g^2 = 90 fits float16, but g^2 = 9e4 does not.

    With ``nu_dtype=float32`` the square is taken in float32 and the first
    Adam step is the textbook ``-lr * sign(g)``. As with Optax's ``mu_dtype``,
    the update has the promoted dtype of gradient and moments (float32), so
    ``apply_updates`` rounds once, and the params stay float16.
    """
    opt = optcore.adam(0.01, nu_dtype=jnp.float32)
    params = {"w": jnp.ones(3, jnp.float16)}
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.full(3, 300.0, jnp.float16)}, state)
    assert updates["w"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(state[0].nu["w"]), 0.001 * 300.0**2, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(updates["w"], np.float32), -0.01, rtol=1e-3)
    new_params = optcore.apply_updates(params, updates)
    assert new_params["w"].dtype == jnp.float16
    np.testing.assert_array_equal(np.asarray(new_params["w"]), np.float16(np.float32(1.0) + np.asarray(updates["w"])))  # one rounding


@pytest.mark.parametrize("case", _cases_with(HALF_PRECISION_BUGS))
def test_half_precision_params_keep_dtype_and_stay_finite(case):
    # float16 and bfloat16 leaves in one tree: one compilation covers both.
    params = rc.small_params(case.name)
    params = {"layer1": {"w": params["layer1"]["w"].astype(jnp.float16)}, "scale": params["scale"].astype(jnp.bfloat16)}
    new_params, state = _two_steps(case, params, jax.grad(rc.objective)(params))
    assert jax.tree.map(lambda p: p.dtype, new_params) == jax.tree.map(lambda p: p.dtype, params)
    assert not _nonfinite_leaves(new_params), "params"
    assert not _nonfinite_leaves(state), "state"
