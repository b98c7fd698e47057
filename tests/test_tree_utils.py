"""Tree utilities checked against the same operation written in NumPy."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
from optcore import tree_utils as tu

RNG = np.random.default_rng(0)
X = {"a": RNG.normal(size=(3,)).astype(np.float32), "b": [RNG.normal(size=(2, 2)).astype(np.float32)]}
Y = {"a": RNG.normal(size=(3,)).astype(np.float32), "b": [RNG.normal(size=(2, 2)).astype(np.float32)]}
Z = {"a": RNG.normal(size=(3,)).astype(np.float32), "b": [RNG.normal(size=(2, 2)).astype(np.float32)]}


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, dtype=np.float64)) for x in jax.tree.leaves(tree)])


def _close(tree, expected_tree, rtol=1e-6):
    for got, want in zip(jax.tree.leaves(tree), jax.tree.leaves(expected_tree)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize(
    "fn, reference",
    [
        (lambda: tu.tree_add(X, Y), lambda x, y, z: x + y),
        (lambda: tu.tree_add(X, Y, Z), lambda x, y, z: x + y + z),
        (lambda: tu.tree_sub(X, Y), lambda x, y, z: x - y),
        (lambda: tu.tree_mul(X, Y), lambda x, y, z: x * y),
        (lambda: tu.tree_div(X, Y), lambda x, y, z: x / y),
        (lambda: tu.tree_scale(0.5, X), lambda x, y, z: 0.5 * x),
        (lambda: tu.tree_add_scale(X, -2.0, Y), lambda x, y, z: x - 2.0 * y),
        (lambda: tu.tree_clip(X, -0.5, 0.3), lambda x, y, z: np.clip(x, -0.5, 0.3)),
        (lambda: tu.tree_clip(X, max_value=0.0), lambda x, y, z: np.minimum(x, 0.0)),
        (lambda: tu.tree_where(True, X, Y), lambda x, y, z: x),
        (lambda: tu.tree_where(False, X, Y), lambda x, y, z: y),
        (lambda: tu.tree_full_like(X, 3.5), lambda x, y, z: np.full_like(x, 3.5)),
        (lambda: tu.tree_zeros_like(X), lambda x, y, z: np.zeros_like(x)),
        (lambda: tu.tree_ones_like(X), lambda x, y, z: np.ones_like(x)),
        (lambda: tu.tree_update_moment(X, Y, 0.9, 1), lambda x, y, z: 0.1 * x + 0.9 * y),
        (lambda: tu.tree_update_moment(X, Y, 0.9, 2), lambda x, y, z: 0.1 * x**2 + 0.9 * y),
        (lambda: tu.tree_update_moment_per_elem_norm(X, Y, 0.8, 2), lambda x, y, z: 0.2 * x**2 + 0.8 * y),
        (lambda: tu.tree_update_moment_per_elem_norm(X, Y, 0.8, 3), lambda x, y, z: 0.2 * x**3 + 0.8 * y),  # real: g**k, as Optax
        (
            lambda: tu.tree_update_infinity_moment(X, Y, 0.9, 1e-3),
            lambda x, y, z: np.maximum(np.abs(x) + 1e-3, 0.9 * y),
        ),
        (lambda: tu.tree_bias_correction(X, 0.9, jnp.array(3)), lambda x, y, z: x / (1 - 0.9**3)),
        (lambda: tu.tree_batch_shape(X, (2,)), lambda x, y, z: np.broadcast_to(x, (2,) + x.shape)),
    ],
)
def test_elementwise_against_numpy(fn, reference):
    result = fn()
    assert jax.tree.structure(result) == jax.tree.structure(X)
    expected = jax.tree.map(lambda x, y, z: reference(np.float64(x), np.float64(y), np.float64(z)), X, Y, Z)
    _close(result, expected, rtol=2e-6)


def test_reductions_against_numpy():
    x, y = _flat(X), _flat(Y)
    np.testing.assert_allclose(tu.tree_vdot(X, Y), np.dot(x, y), rtol=1e-6)
    np.testing.assert_allclose(tu.tree_sum(X), x.sum(), rtol=1e-6)
    np.testing.assert_allclose(tu.tree_sum(X, associative_reduction=True), x.sum(), rtol=1e-6)
    np.testing.assert_allclose(tu.tree_max(X), x.max())
    np.testing.assert_allclose(tu.tree_min(X), x.min())
    assert tu.tree_size(X) == x.size == 7
    np.testing.assert_allclose(tu.tree_norm(X), np.linalg.norm(x), rtol=1e-6)
    np.testing.assert_allclose(tu.tree_norm(X, squared=True), np.sum(x**2), rtol=1e-6)
    np.testing.assert_allclose(tu.tree_norm(X, ord=1), np.abs(x).sum(), rtol=1e-6)
    np.testing.assert_allclose(tu.tree_norm(X, ord="inf"), np.abs(x).max())
    np.testing.assert_allclose(tu.tree_norm(X, ord=jnp.inf), np.abs(x).max())


def test_reductions_of_empty_trees_are_neutral():
    assert tu.tree_sum({}) == 0 and tu.tree_vdot({}, {}) == 0 and tu.tree_size({}) == 0
    assert tu.tree_max({}) == -np.inf and tu.tree_min({}) == np.inf
    # A leaf without entries adds nothing to the max or min of the others (it raised before).
    tree = [jnp.array([[2.0, -3.0]]), jnp.zeros((4, 0, 5)), jnp.zeros(0, jnp.int8)]
    assert float(tu.tree_max(tree)) == 2.0 and float(tu.tree_min(tree)) == -3.0
    assert tu.tree_max([jnp.zeros(0)]) == -np.inf and tu.tree_min([jnp.zeros(0)]) == np.inf
    assert float(tu.tree_norm({})) == 0.0
    assert bool(tu.tree_allclose({}, {}))


def test_associative_sum_of_many_leaves():
    leaves = [np.float32(i) for i in range(11)]
    assert float(tu.tree_sum(leaves, associative_reduction=True)) == 55.0


def test_complex_leaves():
    x = {"c": jnp.array([1 + 2j, 3 - 1j])}
    y = {"c": jnp.array([2 - 1j, 1j])}
    np.testing.assert_allclose(tu.tree_vdot(x, y), np.vdot(np.array([1 + 2j, 3 - 1j]), np.array([2 - 1j, 1j])))
    np.testing.assert_allclose(tu.tree_norm(x), np.sqrt(1 + 4 + 9 + 1), rtol=1e-6)
    np.testing.assert_allclose(tu.tree_conj(x)["c"], np.array([1 - 2j, 3 + 1j]))
    np.testing.assert_allclose(tu.tree_real(x)["c"], np.array([1.0, 3.0]))
    # tree_update_moment raises g as it is (complex g**2, as Optax); the per-element norm uses |g|**2.
    moment = tu.tree_update_moment(x, {"c": jnp.zeros(2, jnp.complex64)}, 0.5, 2)["c"]
    np.testing.assert_allclose(moment, 0.5 * np.array([1 + 2j, 3 - 1j]) ** 2, rtol=1e-6)
    norm_moment = tu.tree_update_moment_per_elem_norm(x, {"c": jnp.zeros(2)}, 0.5, 2)["c"]
    np.testing.assert_allclose(norm_moment, 0.5 * np.array([5.0, 10.0]))
    assert norm_moment.dtype == jnp.float32


def test_allclose():
    assert bool(tu.tree_allclose(X, X))
    assert not bool(tu.tree_allclose(X, Y))
    nan = {"a": jnp.array([jnp.nan])}
    assert not bool(tu.tree_allclose(nan, nan))
    assert bool(tu.tree_allclose(nan, nan, equal_nan=True))


def test_none_leaves_pass_through():
    assert tu.tree_add({"a": 1.0, "b": None}, {"a": 2.0, "b": None}) == {"a": 3.0, "b": None}
    assert tu.tree_update_moment({"a": None}, {"a": None}, 0.9, 1) == {"a": None}
    # A None leaf of x stays None whatever y holds there (a None update added to the params' step).
    out = tu.tree_add_scale({"a": jnp.array(1.0), "b": None}, 2.0, {"a": jnp.array(3.0), "b": jnp.ones(2)})
    assert out["b"] is None and float(out["a"]) == 7.0


def test_dtypes_are_preserved():
    bf16 = {"w": jnp.ones(3, jnp.bfloat16)}
    assert tu.tree_scale(0.5, bf16)["w"].dtype == jnp.bfloat16
    assert tu.tree_bias_correction(bf16, 0.9, jnp.array(2))["w"].dtype == jnp.bfloat16
    assert tu.tree_update_moment(bf16, bf16, 0.9, 1)["w"].dtype == jnp.bfloat16
    assert tu.tree_cast(bf16, jnp.float32)["w"].dtype == jnp.float32
    assert tu.tree_cast(bf16, None) is bf16
    assert tu.tree_cast_like({"w": jnp.ones(3)}, bf16)["w"].dtype == jnp.bfloat16
    # A Python number in the reference has no dtype to copy: the leaf is kept (it became float32 before).
    tree = {"lr": jnp.ones((), jnp.float16), "w": jnp.ones(2)}
    kept = tu.tree_cast_like(tree, {"lr": 1.0, "w": jnp.ones(2, jnp.bfloat16)})
    assert kept["lr"].dtype == jnp.float16 and kept["w"].dtype == jnp.bfloat16
    assert tu.tree_zeros_like(bf16, jnp.float32)["w"].dtype == jnp.float32
    assert tu.tree_full_like(bf16, 2, dtype=jnp.int32)["w"].dtype == jnp.int32


def test_tree_dtype():
    mixed = {"a": jnp.ones(1, jnp.bfloat16), "b": jnp.ones(1, jnp.float32), "i": jnp.ones(1, jnp.int32)}
    assert tu.tree_dtype({"a": jnp.ones(2), "b": jnp.zeros(1)}) == jnp.float32
    with pytest.raises(ValueError, match="different dtypes"):
        tu.tree_dtype(mixed)
    assert tu.tree_dtype(mixed, "promote") == jnp.float32
    assert tu.tree_dtype(mixed, "highest") == jnp.float32
    assert tu.tree_dtype(mixed, "lowest") == jnp.int32
    with pytest.raises(ValueError, match="Cannot order"):
        tu.tree_dtype({"a": jnp.ones(1, jnp.bfloat16), "b": jnp.ones(1, jnp.float16)}, "highest")
    with pytest.raises(ValueError, match="mixed_dtype_handler"):
        tu.tree_dtype(mixed, "largest")
    assert tu.tree_dtype({}) == jnp.float32


def test_random_trees():
    key = jax.random.PRNGKey(3)
    keys = tu.tree_split_key_like(key, X)
    expected_keys = jax.random.split(key, 3)
    for got, want in zip(jax.tree.leaves(keys), expected_keys):
        np.testing.assert_array_equal(got, want)
    sample = tu.tree_random_like(key, X)
    for leaf, leaf_key, target in zip(jax.tree.leaves(sample), expected_keys, jax.tree.leaves(X)):
        np.testing.assert_array_equal(leaf, jax.random.normal(leaf_key, target.shape, target.dtype))
    uniform = tu.tree_random_like(key, X, sampler=jax.random.uniform, dtype=jnp.float16)
    assert all(leaf.dtype == jnp.float16 and 0 <= float(leaf.min()) for leaf in jax.tree.leaves(uniform))
    typed = {"k": jax.random.key(0), "x": 1.0}
    unwrapped = tu.tree_unwrap_random_key_data(typed)
    np.testing.assert_array_equal(unwrapped["k"], jax.random.key_data(jax.random.key(0)))
    assert unwrapped["x"] == 1.0


def test_short_names_are_the_same_objects():
    for name in tu.__all__:
        if name.startswith("tree_"):
            assert getattr(optcore.tree, name[len("tree_") :]) is getattr(tu, name)
    assert optcore.bias_correction is tu.tree_bias_correction
    assert optcore.update_moment is tu.tree_update_moment
    assert optcore.update_infinity_moment is tu.tree_update_infinity_moment
    assert optcore.update_moment_per_elem_norm is tu.tree_update_moment_per_elem_norm


def test_utilities_run_under_jit():
    @jax.jit
    def f(x, y):
        return tu.tree_norm(tu.tree_add_scale(x, 2.0, y)), tu.tree_vdot(x, y), tu.tree_max(x)

    norm, vdot, maximum = f(X, Y)
    np.testing.assert_allclose(norm, np.linalg.norm(_flat(X) + 2 * _flat(Y)), rtol=1e-6)
    np.testing.assert_allclose(vdot, np.dot(_flat(X), _flat(Y)), rtol=1e-6)
    np.testing.assert_allclose(maximum, _flat(X).max())


# --- named access to real optimizer states ---------------------------------

PARAMS = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}


def _adam_state(lr=0.1):
    opt = optcore.inject_hyperparams(optcore.adam)(learning_rate=lr)
    return opt, opt.init(PARAMS)


def test_get_learning_rate_and_counts_from_a_real_state():
    opt, state = _adam_state(0.1)
    np.testing.assert_allclose(tu.tree_get(state, "learning_rate"), 0.1)
    found = tu.tree_get_all_with_path(state, "count")
    assert [path for path, _ in found] == [
        (tu.NamedTupleKey("InjectStatefulHyperparamsState", "count"),),
        (
            tu.NamedTupleKey("InjectStatefulHyperparamsState", "inner_state"),
            jax.tree_util.SequenceKey(0),
            tu.NamedTupleKey("ScaleByAdamState", "count"),
        ),
    ]
    with pytest.raises(KeyError, match="multiple"):
        tu.tree_get(state, "count")
    assert tu.tree_get(state, "missing", default=7) == 7
    inner_count = tu.tree_get(state, "count", filtering=lambda path, value: len(path) > 1)
    assert int(inner_count) == 0
    adam_state = tu.tree_get(state, "ScaleByAdamState")
    assert type(adam_state).__name__ == "ScaleByAdamState"
    assert str(tu.NamedTupleKey("ScaleByAdamState", "mu")) == "ScaleByAdamState.mu"


def test_get_count_from_a_plain_chain_after_steps():
    opt = optcore.chain(optcore.clip_by_global_norm(1.0), optcore.scale_by_adam(), optcore.scale(-0.1))
    state = opt.init(PARAMS)
    for _ in range(3):
        _, state = opt.update(jax.tree.map(jnp.ones_like, PARAMS), state)
    assert int(tu.tree_get(state, "count")) == 3
    # The 9 unit gradients have global norm 3, clipped to 1: each entry is 1/3.
    np.testing.assert_allclose(tu.tree_get(state, "mu")["b"], (1 - 0.9**3) / 3, rtol=1e-6)


def test_set_learning_rate_changes_the_next_update():
    opt, state = _adam_state(0.1)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    state = tu.tree_set(state, learning_rate=jnp.asarray(0.01, jnp.float32))
    np.testing.assert_allclose(tu.tree_get(state, "learning_rate"), 0.01)
    updates, state = opt.update(grads, state)
    # Adam's first step is -lr * sign(g) (up to eps).
    np.testing.assert_allclose(updates["w"], -0.01 * np.ones((2, 3)), rtol=1e-5)
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.01)


def test_set_replaces_every_match_and_respects_filtering():
    _, state = _adam_state()
    both = tu.tree_set(state, count=jnp.asarray(5, jnp.int32))
    assert int(both.count) == 5 and int(both.inner_state[0].count) == 5
    outer = tu.tree_set(state, lambda path, value: len(path) == 1, count=jnp.asarray(5, jnp.int32))
    assert int(outer.count) == 5 and int(outer.inner_state[0].count) == 0
    assert tu.tree_set({"count": {"count": 1}}, count=5) == {"count": 5}
    assert tu.tree_set({"x": [{"n": 1}], "y": {"n": 2}}, n=0) == {"x": [{"n": 0}], "y": {"n": 0}}
    with pytest.raises(KeyError, match="no values"):
        tu.tree_set(state, not_a_field=1)
    assert type(both) is type(state)


def test_map_params_touches_only_params_like_state():
    opt, state = _adam_state()
    mapped = tu.tree_map_params(opt, lambda x: x + 1.0, state)
    adam = mapped.inner_state[0]
    np.testing.assert_array_equal(adam.mu["w"], np.ones((2, 3)))
    np.testing.assert_array_equal(adam.nu["b"], np.ones(3))
    assert int(adam.count) == 0
    np.testing.assert_allclose(mapped.hyperparams["learning_rate"], 0.1)
    marked = tu.tree_map_params(opt, lambda x, p: x + p, state, PARAMS, transform_non_params=lambda v: -1)
    np.testing.assert_array_equal(marked.inner_state[0].mu["w"], np.ones((2, 3)))
    assert marked.count == -1 and marked.hyperparams["b1"] == -1


MASK = {"w": True, "b": False}
# Transformations whose init checks the params against a tree fixed at construction
# (a mask, labels, LookaheadParams): tree_map_params probes init with a placeholder.
CHECKED_INITS = {
    "masked": (lambda: optcore.masked(optcore.adam(0.1), MASK), lambda p: p),
    "partition": (lambda: optcore.partition({"on": optcore.adam(0.1), "off": optcore.sgd(0.1, momentum=0.9)},
                                            {"w": "on", "b": "off"}), lambda p: p),
    "adamw_mask": (lambda: optcore.adamw(0.1, mask=MASK), lambda p: p),
    "lookahead": (lambda: optcore.lookahead(optcore.adam(0.1), 2, 0.5), optcore.LookaheadParams.init_synced),
}


@pytest.mark.parametrize("name", list(CHECKED_INITS))
def test_map_params_through_inits_that_check_their_params(name):
    build, wrap = CHECKED_INITS[name]
    opt = build()
    state = opt.init(wrap(PARAMS))
    mapped = tu.tree_map_params(opt, lambda x: x + 1.0, state, transform_non_params=lambda v: "other")
    moments = [s for s in jax.tree.leaves(mapped, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    assert moments, "no moment state found"
    for moment in moments:
        # Every present leaf of mu (masked-out ones are MaskedNode) went from 0 to 1; counts are not params.
        assert moment.count == "other"
        leaves = jax.tree_util.tree_flatten_with_path(moment.mu)[0]
        assert leaves
        for path, leaf in leaves:
            np.testing.assert_array_equal(leaf, np.ones_like(PARAMS[path[0].key]), err_msg=str(path))


@pytest.mark.parametrize("group_size", [None, 4])
def test_tree_norm_of_many_small_leaves_of_mixed_dtypes_matches_numpy(group_size, monkeypatch):
    # Small leaves are reduced together per dtype (one kernel per group, issue 8):
    # float32, bfloat16 and complex64 leaves, an empty leaf and one large leaf;
    # with group_size=4 the small float32 leaves are split over several groups.
    if group_size is not None:
        from optcore.tree_utils import _tree_math

        monkeypatch.setattr(_tree_math, "_GROUP_SIZE", group_size)
    rng = np.random.default_rng(3)
    tree = {
        "f32": [jnp.asarray(rng.normal(size=n), jnp.float32) for n in (1, 3, 64)],
        "bf16": [jnp.asarray(rng.normal(size=n), jnp.bfloat16) for n in (2, 9)],
        "c64": jnp.asarray(rng.normal(size=4) + 1j * rng.normal(size=4), jnp.complex64),
        "empty": jnp.zeros((0,), jnp.float32),
        "large": jnp.asarray(rng.normal(size=(130, 140)), jnp.float32),
    }
    flat = np.concatenate([np.asarray(x.astype(jnp.complex64) if x.dtype == jnp.bfloat16 else x).ravel()
                           for x in jax.tree.leaves(tree)])
    modulus = np.abs(flat.astype(np.complex128))
    for ord, want in ((None, np.sqrt(np.sum(modulus**2))), (1, np.sum(modulus)), ("inf", np.max(modulus))):
        got = jax.jit(lambda t: tu.tree_norm(t, ord=ord))(tree)
        np.testing.assert_allclose(float(got), want, rtol=1e-5, err_msg=f"ord={ord}")
    np.testing.assert_allclose(float(tu.tree_norm(tree, squared=True)), np.sum(modulus**2), rtol=1e-5)


@pytest.mark.parametrize(
    "name, replacement, reference",
    [
        ("tree_l1_norm", "tree_norm(..., ord=1)", lambda x: np.abs(_flat(x)).sum()),
        ("tree_l2_norm", "tree_norm", lambda x: np.sqrt((_flat(x) ** 2).sum())),
        ("tree_linf_norm", "tree_norm(..., ord=jnp.inf)", lambda x: np.abs(_flat(x)).max()),
    ],
)
def test_deprecated_norm_names_warn_and_compute_the_norm(name, replacement, reference):
    with pytest.warns(DeprecationWarning, match=rf"tree_utils\.{name} is deprecated: use optcore\.tree_utils\.{re.escape(replacement)}"):
        fn = getattr(tu, name)
    np.testing.assert_allclose(fn(X), reference(X), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(fn)(X), reference(X), rtol=1e-6)
    assert name not in dir(tu) and name not in tu.__all__


def test_deprecated_scalar_mul_names_warn_and_compute():
    with pytest.warns(DeprecationWarning, match="use optcore.tree_utils.tree_scale"):
        scalar_mul = tu.tree_scalar_mul
    with pytest.warns(DeprecationWarning, match="use optcore.tree_utils.tree_add_scale"):
        add_scalar_mul = tu.tree_add_scalar_mul
    _close(scalar_mul(0.5, X), jax.tree.map(lambda x: 0.5 * x, X))
    _close(add_scalar_mul(X, -2.0, Y), jax.tree.map(lambda x, y: x - 2.0 * y, X, Y))
    with pytest.raises(AttributeError, match="tree_l3_norm"):
        tu.tree_l3_norm  # noqa: B018


def test_bias_correction_takes_python_numbers():
    """m / (1 - beta^t) with m, beta and t Python numbers (as Optax accepts): 1 / (1 - 0.9^3) = 1/0.271."""
    np.testing.assert_allclose(tu.tree_bias_correction(1.0, 0.9, 3), 1 / 0.271, rtol=1e-6)
    out = tu.tree_bias_correction({"a": 2.0, "b": [jnp.ones(2, jnp.bfloat16)]}, 0.5, 1)
    np.testing.assert_allclose(out["a"], 4.0)
    assert out["b"][0].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out["b"][0], np.float32), [2.0, 2.0])
    np.testing.assert_allclose(jax.jit(tu.tree_bias_correction)(1.0, 0.9, 3), 1 / 0.271, rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_state_zeros_and_full_like_have_the_exact_values(jit):
    # +0.0 everywhere, also where the param is -0.0, negative, infinite or NaN (|p| * 0 alone would give NaN
    # there, p * 0 would give -0.0); a fill value is kept exactly, -0.0 and non-finite fills included.
    params = {"w": jnp.array([-2.0, -0.0, jnp.inf, -jnp.inf, jnp.nan, 3.0]), "h": jnp.array([1.5, -1.0], jnp.bfloat16),
              "c": jnp.array([1 - 2j, jnp.inf + 0j], jnp.complex64), "i": jnp.array([3, -4], jnp.int32)}
    zeros = jax.jit(tu.state_zeros_like, static_argnums=(1,)) if jit else tu.state_zeros_like
    full = jax.jit(tu.state_full_like, static_argnums=(2,)) if jit else tu.state_full_like
    for leaf, ref in zip(jax.tree.leaves(zeros(params)), jax.tree.leaves(params)):
        assert leaf.dtype == ref.dtype and leaf.shape == ref.shape
        np.testing.assert_array_equal(np.asarray(leaf), np.zeros(ref.shape, ref.dtype))
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert not np.signbit(np.asarray(leaf, np.float32)).any()
    assert zeros(params, jnp.float16)["w"].dtype == jnp.float16
    for fill in (-0.0, 0.0, 1e-6, -3.5, jnp.inf, jnp.nan):
        got = np.asarray(full({"w": params["w"]}, fill, None)["w"])
        np.testing.assert_array_equal(got, np.full(6, fill, np.float32))
        assert (np.signbit(got) == np.signbit(np.float32(fill))).all()
    np.testing.assert_array_equal(full(params, 2.0, jnp.float32)["c"], np.full(2, 2.0, np.float32))
