"""muon: ns_coeffs presets and donated states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore_contrib as cc
from optcore_contrib import _muon

PARAMS = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), "b": jnp.array([0.1, -0.2, 0.3])}


def _muon_state(state):
    (found,) = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, _muon.MuonState)) if isinstance(s, _muon.MuonState)]
    return found


@pytest.mark.parametrize("preset", ["standard", "dion"])
def test_preset_equals_its_coefficients(preset):
    by_name, by_value = cc.muon(0.02, ns_coeffs=preset), cc.muon(0.02, ns_coeffs=_muon.NS_COEFFS_PRESETS[preset])
    np.testing.assert_array_equal(_muon_state(by_name.init(PARAMS)).ns_coeffs, np.asarray(_muon.NS_COEFFS_PRESETS[preset], np.float32))
    grads = jax.tree.map(lambda p: jnp.cos(3.0 * p), PARAMS)
    u_name, _ = by_name.update(grads, by_name.init(PARAMS), PARAMS)
    u_value, _ = by_value.update(grads, by_value.init(PARAMS), PARAMS)
    for a, b in zip(jax.tree.leaves(u_name), jax.tree.leaves(u_value)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="preset"):
        cc.muon(0.02, ns_coeffs="muon")


@pytest.mark.parametrize("ns_coeffs", ["standard", "dion"])
def test_donating_the_state_twice_from_one_optimizer(ns_coeffs):
    # The state's ns_coeffs was the table the factory holds: donating the first
    # state deleted it, and the next init handed out a deleted array.
    tx = cc.muon(0.02, ns_coeffs=ns_coeffs)
    step = jax.jit(tx.update, donate_argnums=1)
    grads = jax.tree.map(lambda p: jnp.cos(3.0 * p), PARAMS)
    results = []
    for _ in range(2):
        state = tx.init(PARAMS)
        updates, state = step(grads, state, PARAMS)
        updates, state = step(grads, state, PARAMS)
        results.append(jax.tree.map(np.asarray, updates))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_array_equal(a, b)
