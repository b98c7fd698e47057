"""muon against Optax 0.2.8: ns_coeffs presets, state layout and values over steps, NaN propagation."""

import pytest

optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import optcore_contrib as cc  # noqa: E402

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "b": jnp.array([0.1, -0.2, 0.3])}


def _grads(step):
    return jax.tree.map(lambda p: jnp.cos(p * (step + 1.0)) + 0.1 * step, PARAMS)


def _layout(state):
    """Tree structure with NamedTuple type and field names, and leaf shapes/dtypes."""
    leaves, treedef = jax.tree.flatten(state)
    return str(treedef), [(jnp.shape(x), jnp.result_type(x)) for x in leaves]


def _run(tx, steps, grads=_grads):
    state = tx.init(PARAMS)
    params = PARAMS
    states = [state]
    for step in range(steps):
        updates, state = jax.jit(tx.update)(grads(step), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        states.append(state)
    return params, states


@pytest.mark.parametrize("ns_coeffs", ["standard", "dion", (3.4445, -4.775, 2.0315)])
@pytest.mark.parametrize("nesterov", [True, False])
def test_presets_match_optax_in_state_layout_and_values(ns_coeffs, nesterov):
    ours = cc.muon(0.02, ns_coeffs=ns_coeffs, nesterov=nesterov)
    theirs = optax.contrib.muon(0.02, ns_coeffs=ns_coeffs, nesterov=nesterov)
    p_ours, s_ours = _run(ours, 4)
    p_theirs, s_theirs = _run(theirs, 4)
    for a, b in zip(s_ours, s_theirs):
        assert _layout(a) == _layout(b)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    for x, y in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_unknown_preset_is_rejected_like_optax():
    with pytest.raises(ValueError):
        optax.contrib.muon(0.02, ns_coeffs="muon")
    with pytest.raises(ValueError, match="preset"):
        cc.muon(0.02, ns_coeffs="muon")


@pytest.mark.parametrize("where", ["w", "b"])
def test_nan_gradient_propagates_like_optax(where):
    def grads(step):
        g = _grads(step)
        if step == 1:
            g = dict(g)
            g[where] = g[where].at[0].set(jnp.nan)
        return g

    _, s_ours = _run(cc.muon(0.02), 3, grads)
    _, s_theirs = _run(optax.contrib.muon(0.02), 3, grads)
    for a, b in zip(s_ours, s_theirs):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.isnan(np.asarray(x)), np.isnan(np.asarray(y)))
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
