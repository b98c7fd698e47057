"""differentially_private_aggregate / dpsgd: integer keys under jit, and donated states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore_contrib as cc

PER_EXAMPLE = {"w": jnp.arange(24.0).reshape(4, 2, 3) / 10, "b": jnp.ones((4, 3))}
PARAMS = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}


def _jitted_updates(tx, steps=3):
    step = jax.jit(tx.update)
    state = tx.init(PARAMS)
    out = []
    for _ in range(steps):
        updates, state = step(PER_EXAMPLE, state, PARAMS)
        out.append(updates)
    return out


def _reference_updates(key, clip, multiplier, steps=3):
    """The noised mean written out: clip each example to norm <= clip, sum, add N(0, (sigma C)^2), / B."""
    leaves = [PER_EXAMPLE["b"], PER_EXAMPLE["w"]]  # jax.tree order of the dict
    norms = np.sqrt(sum(np.sum(np.square(np.asarray(g)).reshape(4, -1), axis=1) for g in leaves))
    factors = np.minimum(1.0, clip / norms)
    out = []
    for _ in range(steps):
        key, *noise_keys = jax.random.split(key, len(leaves) + 1)
        noised = [
            (np.einsum("i,i...->...", factors, np.asarray(g)) + clip * multiplier * np.asarray(jax.random.normal(k, g.shape[1:])))
            / 4
            for g, k in zip(leaves, noise_keys)
        ]
        out.append({"b": noised[0], "w": noised[1]})
    return out


@pytest.mark.parametrize("key", [7, np.int32(7), jnp.int32(7), jax.random.key(7)], ids=["int", "np_int", "jnp_int", "typed_key"])
def test_integer_key_works_under_jit_and_equals_the_typed_key(key):
    # An int key was kept as the state's key; under jit, jax.random.split of it
    # failed with "key_data.ndim >= 1; got ndim=0".
    got = _jitted_updates(cc.differentially_private_aggregate(0.5, 1.3, key))
    expected = _reference_updates(jax.random.key(7), 0.5, 1.3)
    for g, e in zip(got, expected):
        for name in ("w", "b"):
            np.testing.assert_allclose(g[name], e[name], rtol=1e-5, atol=1e-6)


def test_key_and_seed_are_checked():
    with pytest.raises(ValueError, match="not both"):
        cc.differentially_private_aggregate(1.0, 1.0, 3, seed=3)
    with pytest.raises(ValueError, match="needs a key"):
        cc.differentially_private_aggregate(1.0, 1.0)
    with pytest.raises(TypeError, match="integer seed"):
        cc.differentially_private_aggregate(1.0, 1.0, 0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: cc.dpsgd(0.1, 1.0, 0.5, seed=3, momentum=0.9),
        lambda: cc.differentially_private_aggregate(1.0, 0.5, jax.random.key(3)),
    ],
    ids=["dpsgd", "differentially_private_aggregate_with_key"],
)
def test_donating_the_state_twice_from_one_optimizer(make):
    # The state's key was the very array the factory holds: donating the first
    # state deleted it, and the second init handed out a deleted array.
    tx = make()
    step = jax.jit(tx.update, donate_argnums=1)
    results = []
    for _ in range(2):
        state = tx.init(PARAMS)
        updates, state = step(PER_EXAMPLE, state, PARAMS)
        updates, state = step(PER_EXAMPLE, state, PARAMS)
        results.append(jax.tree.map(np.asarray, updates))
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_array_equal(a, b)  # same key, same noise
