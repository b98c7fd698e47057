"""chain, named_chain, partition/multi_transform, masked, freeze, selective_transform, flatten.

References are written in NumPy: SGD with momentum per group, zeroed groups.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.3]), "s": jnp.array(2.0)}


def grads_at(t):
    return jax.tree.map(lambda p: jnp.sin(p * (t + 1)) + 0.1 * t, PARAMS)


def momentum_ref(grads_seq, lr, beta):
    """SGD with momentum in NumPy: m = g + beta m; u = -lr m."""
    m, out = 0.0, []
    for g in grads_seq:
        m = np.asarray(g) + beta * m
        out.append(-lr * m)
    return out


def run(tx, steps=3, params=PARAMS):
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for t in range(steps):
        u, state = update(grads_at(t), state, params)
        outs.append(u)
    return outs, state


class CallableTree:
    """A registered pytree class with ``__call__``, like an Equinox module."""

    def __init__(self, w, b, s):
        self.w, self.b, self.s = w, b, s

    def __call__(self, x):
        return x

    def tree_flatten(self):
        return (self.w, self.b, self.s), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


jax.tree_util.register_pytree_node(CallableTree, CallableTree.tree_flatten, CallableTree.tree_unflatten)


class FrozenMapping(collections.abc.Mapping):
    """A Flax-FrozenDict-like immutable mapping registered with keys."""

    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, k):
        return self._data[k]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


jax.tree_util.register_pytree_with_keys(
    FrozenMapping,
    lambda m: (tuple((jax.tree_util.DictKey(k), m[k]) for k in sorted(m)), tuple(sorted(m))),
    lambda keys, values: FrozenMapping(zip(keys, values)),
)


def test_named_chain_equals_chain_and_names_states():
    a = optcore.chain(optcore.trace(0.9), optcore.scale(-0.1))
    b = optcore.named_chain(("momentum", optcore.trace(0.9)), ("lr", optcore.scale(-0.1)))
    ua, _ = run(a)
    ub, sb = run(b)
    for x, y in zip(ua, ub):
        jax.tree.map(np.testing.assert_array_equal, x, y)
    assert list(sb) == ["momentum", "lr"]
    assert isinstance(sb["momentum"], optcore.TraceState)
    with pytest.raises(ValueError, match="distinct"):
        optcore.named_chain(("a", optcore.identity()), ("a", optcore.identity()))
    with pytest.raises(TypeError):
        optcore.named_chain(optcore.identity())


@pytest.mark.parametrize("labels_as", ["tree", "function", "callable_pytree", "prefix"])
def test_partition_matches_per_group_reference(labels_as):
    labels = {"w": "mom", "b": "mom", "s": "frozen"}
    params = PARAMS
    if labels_as == "function":
        labels = lambda p: {"w": "mom", "b": "mom", "s": "frozen"}  # noqa: E731
    elif labels_as == "callable_pytree":
        params = CallableTree(PARAMS["w"], PARAMS["b"], PARAMS["s"])
        labels = CallableTree("mom", "mom", "frozen")
    elif labels_as == "prefix":
        params = {"net": {"w": PARAMS["w"], "b": PARAMS["b"]}, "s": PARAMS["s"]}
        labels = {"net": "mom", "s": "frozen"}
    tx = optcore.partition({"mom": optcore.sgd(0.1, momentum=0.9), "frozen": optcore.set_to_zero()}, labels)
    state = tx.init(params)
    assert isinstance(state, optcore.PartitionState)
    assert set(state.inner_states) == {"mom", "frozen"}
    grads_seq = []
    outs = []
    for t in range(3):
        g = jax.tree.map(lambda p: jnp.cos(p * (t + 1)), params)
        u, state = jax.jit(tx.update)(g, state, params)
        grads_seq.append(g)
        outs.append(u)
    flat_g = [jax.tree.leaves(g) for g in grads_seq]
    flat_u = [jax.tree.leaves(u) for u in outs]
    flat_labels = jax.tree.leaves(tx_labels(labels, params))
    for i, label in enumerate(flat_labels):
        ref = momentum_ref([g[i] for g in flat_g], 0.1, 0.9)
        for t in range(3):
            expected = ref[t] if label == "mom" else np.zeros_like(ref[t])
            np.testing.assert_allclose(flat_u[t][i], expected, rtol=1e-6, atol=1e-7)


def tx_labels(labels, params):
    labels = labels(params) if callable(labels) and not isinstance(labels, CallableTree) else labels
    return jax.tree.map(lambda lab, sub: jax.tree.map(lambda _: lab, sub), labels, params)


def test_multi_transform_is_partition_and_missing_label_raises():
    assert optcore.multi_transform is optcore.partition
    assert optcore.MultiTransformState is optcore.PartitionState
    tx = optcore.partition({"a": optcore.identity()}, {"w": "a", "b": "a", "s": "z"})
    with pytest.raises(ValueError, match="no corresponding transformation"):
        tx.init(PARAMS)


@pytest.mark.parametrize("mask_as", ["tree", "function", "callable_pytree", "frozen_mapping", "dict_for_frozen"])
def test_masked_applies_inner_only_where_true(mask_as):
    params, mask = PARAMS, {"w": True, "b": False, "s": True}
    if mask_as == "function":
        mask = lambda p: {"w": True, "b": False, "s": True}  # noqa: E731
    elif mask_as == "callable_pytree":
        params = CallableTree(PARAMS["w"], PARAMS["b"], PARAMS["s"])
        mask = CallableTree(True, False, True)
    elif mask_as == "frozen_mapping":
        params, mask = FrozenMapping(PARAMS), FrozenMapping(mask)
    elif mask_as == "dict_for_frozen":  # Optax issue 160: a plain-dict mask for FrozenDict params
        params = FrozenMapping(PARAMS)
    tx = optcore.masked(optcore.scale(-2.0), mask)
    state = tx.init(params)
    g = jax.tree.map(lambda p: p + 1.0, params)
    u, _ = jax.jit(tx.update)(g, state, params)
    assert jax.tree.structure(u) == jax.tree.structure(params)
    for name, scaled in (("w", True), ("b", False), ("s", True)):
        got = u[name] if not isinstance(u, CallableTree) else getattr(u, name)
        expected = (np.asarray(PARAMS[name]) + 1.0) * (-2.0 if scaled else 1.0)
        np.testing.assert_allclose(got, expected)


def test_masked_takes_per_example_gradients_with_params():
    """Per-example gradients (dpsgd's) have a leading batch axis the params lack: masked checks the
    structure only, as Optax's masked, and clips each example's masked part by its own norm."""
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    rng = np.random.default_rng(5)
    grads = {"w": rng.normal(size=(4, 2, 3)).astype(np.float32), "b": rng.normal(size=(4, 3)).astype(np.float32)}

    def clip_and_sum(updates, params=None):  # dpsgd's aggregation, noise-free
        clipped, _ = optcore.per_example_global_norm_clip(jax.tree.leaves(updates), 1.0)
        return jax.tree.unflatten(jax.tree.structure(updates), clipped)

    tx = optcore.masked(optcore.stateless(clip_and_sum), {"w": True, "b": False})
    u, _ = jax.jit(tx.update)(jax.tree.map(jnp.asarray, grads), tx.init(params), params)
    norms = np.sqrt((grads["w"] ** 2).sum(axis=(1, 2)))
    expected = (grads["w"] * np.minimum(1.0, 1.0 / norms)[:, None, None]).sum(axis=0)
    np.testing.assert_allclose(u["w"], expected, rtol=1e-5)
    np.testing.assert_array_equal(u["b"], grads["b"])  # masked out: passed through, batch axis and all
    with pytest.raises(ValueError, match="lacks"):  # a structure mismatch still names the path
        tx.update({"w": jnp.asarray(grads["w"])}, tx.init(params), params)


def test_masked_state_has_masked_nodes_and_bad_mask_raises():
    tx = optcore.masked(optcore.trace(0.5), {"w": True, "b": False, "s": False})
    state = tx.init(PARAMS)
    assert isinstance(state.inner_state.trace["b"], optcore.MaskedNode)
    with pytest.raises(ValueError, match="no entry"):
        optcore.masked(optcore.identity(), {"w": True}).init(FrozenMapping(PARAMS))


def test_freeze_and_selective_transform():
    mask = {"w": False, "b": True, "s": False}
    u, _ = run(optcore.chain(optcore.sgd(0.1), optcore.freeze(mask)), steps=1)
    np.testing.assert_array_equal(u[0]["b"], 0.0)
    np.testing.assert_allclose(u[0]["w"], -0.1 * np.asarray(grads_at(0)["w"]), rtol=1e-6)
    tx = optcore.selective_transform(optcore.sgd(0.1, momentum=0.9), freeze_mask=mask)
    outs, state = run(tx, steps=3)
    ref = momentum_ref([grads_at(t)["w"] for t in range(3)], 0.1, 0.9)
    for t in range(3):
        np.testing.assert_allclose(outs[t]["w"], ref[t], rtol=1e-6)
        np.testing.assert_array_equal(outs[t]["b"], 0.0)
    # No optimizer state is kept for the frozen parameter.
    assert isinstance(state.inner_states["train"].inner_state[0].trace["b"], optcore.MaskedNode)


def test_flatten_gives_the_same_numbers():
    inner = lambda: optcore.chain(optcore.scale_by_adam(), optcore.scale(-0.1))  # noqa: E731
    a, _ = run(inner(), steps=4)
    b, state = run(optcore.flatten(inner()), steps=4)
    for x, y in zip(a, b):
        jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-6), x, y)
    assert state[0].mu.shape == (7,)


def test_chain_rejects_non_transformations():
    with pytest.raises(TypeError, match="forget to call"):
        optcore.chain(optcore.sgd)
