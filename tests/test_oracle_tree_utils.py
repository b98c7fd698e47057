"""Differential tests of the tree utilities against Optax 0.2.8."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

optax = pytest.importorskip("optax")

import optcore  # noqa: E402
from optcore import tree_utils as tu  # noqa: E402

RNG = np.random.default_rng(1)
X = {"a": jnp.asarray(RNG.normal(size=(3,)), jnp.float32), "b": [jnp.asarray(RNG.normal(size=(2, 2)), jnp.float32)]}
Y = {"a": jnp.asarray(RNG.normal(size=(3,)), jnp.float32), "b": [jnp.asarray(RNG.normal(size=(2, 2)), jnp.float32)]}
POS = jax.tree.map(lambda x: jnp.abs(x) + 0.1, Y)
C = {"c": jnp.array([1 + 2j, 3 - 1j], jnp.complex64)}
BF = {"w": jnp.array([1.5, -2.0], jnp.bfloat16), "v": jnp.array([0.25], jnp.float32)}

CALLS = {
    "add": lambda t: t.tree_add(X, Y, POS),
    "add_scale": lambda t: t.tree_add_scale(X, 0.7, Y),
    "allclose": lambda t: t.tree_allclose(X, jax.tree.map(lambda x: x + 1e-7, X)),
    "batch_shape": lambda t: t.tree_batch_shape(X, (2, 1)),
    "bias_correction": lambda t: t.tree_bias_correction(X, 0.9, jnp.asarray(3)),
    "cast": lambda t: t.tree_cast(X, jnp.bfloat16),
    "cast_like": lambda t: t.tree_cast_like(X, jax.tree.map(lambda x: x.astype(jnp.float16), Y)),
    # Python numbers in the reference have no dtype: the leaves stay bfloat16.
    "cast_like_2": lambda t: t.tree_cast_like(BF, jax.tree.map(lambda x: 1.0, BF)),
    "clip": lambda t: t.tree_clip(X, -0.2, 0.4),
    "conj": lambda t: t.tree_conj(C),
    "div": lambda t: t.tree_div(X, POS),
    "full_like": lambda t: t.tree_full_like(X, 2.5),
    "max": lambda t: t.tree_max(X),
    "min": lambda t: t.tree_min(X),
    "mul": lambda t: t.tree_mul(X, Y),
    "norm": lambda t: t.tree_norm(X),
    "norm_1": lambda t: t.tree_norm(X, ord=1),
    "norm_inf": lambda t: t.tree_norm(X, ord=jnp.inf),
    "norm_squared": lambda t: t.tree_norm(X, squared=True),
    "norm_1_squared": lambda t: t.tree_norm(X, ord=1, squared=True),
    "norm_complex": lambda t: t.tree_norm(C),
    "ones_like": lambda t: t.tree_ones_like(X, jnp.int32),
    "random_like": lambda t: t.tree_random_like(jax.random.PRNGKey(4), X),
    "random_like_uniform": lambda t: t.tree_random_like(jax.random.PRNGKey(4), X, jax.random.uniform, jnp.float16),
    "real": lambda t: t.tree_real(C),
    "scale": lambda t: t.tree_scale(0.3, BF),
    "size": lambda t: t.tree_size(X),
    "split_key_like": lambda t: t.tree_split_key_like(jax.random.PRNGKey(2), X),
    "sub": lambda t: t.tree_sub(X, Y),
    "sum": lambda t: t.tree_sum(X),
    "sum_associative": lambda t: t.tree_sum(X, associative_reduction=True),
    "unwrap_random_key_data": lambda t: t.tree_unwrap_random_key_data({"k": jax.random.key(5), "x": X["a"]}),
    "update_infinity_moment": lambda t: t.tree_update_infinity_moment(X, POS, 0.9, 1e-3),
    "update_moment": lambda t: t.tree_update_moment(X, POS, 0.9, 1),
    "update_moment_2": lambda t: t.tree_update_moment(X, POS, 0.99, 2),
    "update_moment_complex": lambda t: t.tree_update_moment(C, {"c": jnp.zeros(2, jnp.complex64)}, 0.5, 2),
    "update_moment_per_elem_norm_odd": lambda t: t.tree_update_moment_per_elem_norm(X, POS, 0.9, 3),
    "update_moment_per_elem_norm": lambda t: t.tree_update_moment_per_elem_norm(X, POS, 0.99, 2),
    "update_moment_per_elem_norm_complex": lambda t: t.tree_update_moment_per_elem_norm(C, {"c": jnp.ones(2)}, 0.5, 2),
    "vdot": lambda t: t.tree_vdot(X, Y),
    "vdot_complex": lambda t: t.tree_vdot(C, C),
    "where": lambda t: t.tree_where(jnp.asarray(False), X, Y),
    "zeros_like": lambda t: t.tree_zeros_like(BF),
}


@pytest.mark.parametrize("case", sorted(CALLS))
def test_matches_optax(case):
    ours = CALLS[case](tu)
    theirs = CALLS[case](optax.tree_utils)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert jnp.asarray(a).dtype == jnp.asarray(b).dtype, case
        np.testing.assert_allclose(np.asarray(a, np.float64) if not jnp.iscomplexobj(a) else np.asarray(a),
                                   np.asarray(b, np.float64) if not jnp.iscomplexobj(b) else np.asarray(b),
                                   rtol=1e-6, atol=1e-7)


def test_every_tree_utility_has_an_oracle_case():
    covered = {case.split("_")[0] if case.startswith(("norm_", "sum_", "vdot_")) else case for case in CALLS}
    covered = {c.replace("_complex", "").replace("_uniform", "").replace("_odd", "").replace("_2", "") for c in covered}
    named_access = {"get", "get_all_with_path", "set", "map_params", "dtype"}  # tested below
    assert {name[len("tree_"):] for name in tu.__all__ if name.startswith("tree_")} == covered | named_access
    assert set(optcore.tree.__all__) == {n for n in dir(optax.tree) if not n.startswith("_")}


@pytest.mark.parametrize("handler", [None, "promote", "highest", "lowest"])
def test_dtype_matches_optax(handler):
    same = {"a": jnp.ones(2), "b": jnp.ones(1)}
    assert tu.tree_dtype(same, handler) == optax.tree_utils.tree_dtype(same, handler)
    if handler is not None:
        for mixed in [{"a": jnp.ones(1, jnp.int32), "b": jnp.ones(1, jnp.bfloat16)},
                      {"a": jnp.ones(1, jnp.complex64), "b": jnp.ones(1)},
                      {"a": jnp.ones(1, jnp.bool_), "b": jnp.ones(1, jnp.int8)}]:
            assert tu.tree_dtype(mixed, handler) == optax.tree_utils.tree_dtype(mixed, handler)


def _states():
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    ours = optcore.inject_hyperparams(optcore.adam)(learning_rate=0.1)
    theirs = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
    return ours, ours.init(params), theirs, theirs.init(params), params


def _same_paths(ours, theirs):
    def as_text(found):
        return [(tuple(str(k) for k in path), str(jax.tree.map(lambda x: np.asarray(x).tolist(), v))) for path, v in found]

    assert as_text(ours) == as_text(theirs)


@pytest.mark.parametrize("key", ["learning_rate", "count", "mu", "ScaleByAdamState", "b2", "missing"])
def test_named_access_matches_optax(key):
    _, our_state, _, their_state, _ = _states()
    _same_paths(tu.tree_get_all_with_path(our_state, key), optax.tree_utils.tree_get_all_with_path(their_state, key))
    only_outer = lambda path, value: len(path) == 1  # noqa: E731
    _same_paths(
        tu.tree_get_all_with_path(our_state, key, only_outer),
        optax.tree_utils.tree_get_all_with_path(their_state, key, only_outer),
    )
    if key != "count":
        ours = tu.tree_get(our_state, key, default="none")
        theirs = optax.tree_utils.tree_get(their_state, key, default="none")
        assert jax.tree.structure(ours) == jax.tree.structure(theirs) or type(ours).__name__ == type(theirs).__name__


def test_set_learning_rate_matches_optax_trajectory():
    ours, our_state, theirs, their_state, params = _states()
    our_state = tu.tree_set(our_state, learning_rate=jnp.asarray(0.02, jnp.float32))
    their_state = optax.tree_utils.tree_set(their_state, learning_rate=jnp.asarray(0.02, jnp.float32))
    grads = jax.tree.map(lambda p: p + 0.5, params)
    our_updates, _ = ours.update(grads, our_state, params)
    their_updates, _ = theirs.update(grads, their_state, params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), our_updates, their_updates)


def test_map_params_matches_optax():
    ours, our_state, theirs, their_state, params = _states()
    mapped_ours = tu.tree_map_params(ours, lambda x, p: x + 2 * p + 1, our_state, params)
    mapped_theirs = optax.tree_utils.tree_map_params(theirs, lambda x, p: x + 2 * p + 1, their_state, params)
    for a, b in zip(jax.tree.leaves(mapped_ours.inner_state), jax.tree.leaves(mapped_theirs.inner_state)):
        np.testing.assert_array_equal(a, b)
    plain_ours = tu.tree_map_params(optcore.sgd(0.1, momentum=0.9), lambda x: x - 1, optcore.sgd(0.1, momentum=0.9).init(params))
    plain_theirs = optax.tree_utils.tree_map_params(
        optax.sgd(0.1, momentum=0.9), lambda x: x - 1, optax.sgd(0.1, momentum=0.9).init(params)
    )
    for a, b in zip(jax.tree.leaves(plain_ours), jax.tree.leaves(plain_theirs)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# tree_map_params over every registered optimizer that Optax also has.
# ---------------------------------------------------------------------------

import inspect  # noqa: E402

import registry_cases as rc  # noqa: E402


class _Other:
    """Marks a leaf that ``transform_non_params`` was applied to."""

    def __init__(self, leaf):
        self.leaf = leaf


def _optax_factory(name):
    for namespace in (optax, optax.contrib):
        if hasattr(namespace, name):
            return getattr(namespace, name)
    return None


def _mapped_leaves(tree_map_params, opt, state):
    """``(mapped?, value)`` per state leaf after doubling the params-shaped parts."""
    mapped = tree_map_params(opt, lambda p: 2 * p + 1, state, transform_non_params=_Other)
    out = []
    for leaf in jax.tree.leaves(mapped, is_leaf=lambda x: isinstance(x, _Other)):
        other = isinstance(leaf, _Other)
        out.append((not other, rc.raw(leaf.leaf if other else leaf)))
    return out


# Where Optax 0.2.8's own tree_map_params raises (optcore's is checked in tests/test_donation.py).
OPTAX_CANNOT_MAP = {"lbfgs": "Optax 0.2.8's zoom line search init reads the params' leaves: IndexError on its placeholder"}


def _oracle_cases():
    out = []
    for param in rc.case_params(rc.optimizer_cases()):
        case = param.values[0]
        marks = list(param.marks)
        if _optax_factory(case.name) is None:
            marks.append(pytest.mark.skip(reason=f"Optax 0.2.8 has no {case.name}"))
        elif case.name in OPTAX_CANNOT_MAP:
            marks.append(pytest.mark.skip(reason=OPTAX_CANNOT_MAP[case.name]))
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


@pytest.mark.parametrize("case", _oracle_cases())
def test_map_params_of_every_optimizer_matches_optax(case):
    theirs_factory = _optax_factory(case.name)
    accepted = inspect.signature(theirs_factory).parameters
    kwargs = {k: v for k, v in case.kwargs.items() if k in accepted}
    ours, theirs = case.build(), theirs_factory(**kwargs)
    # sm3 (Optax 0.2.8 fails on scalars) and every other optimizer on the same params.
    params = {"layer1": {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3)},
              "scale": jnp.full((1,), 1.5, jnp.float32)}
    got = _mapped_leaves(tu.tree_map_params, ours, ours.init(params))
    want = _mapped_leaves(optax.tree_utils.tree_map_params, theirs, theirs.init(params))
    assert [m for m, _ in got] == [m for m, _ in want], "a different set of state leaves is params-shaped"
    for (_, a), (_, b) in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)


WRAPPERS = {
    "masked": lambda lib: lib.masked(lib.adam(0.1), {"w": True, "b": False}),
    "partition": lambda lib: lib.partition({"on": lib.adam(0.1), "off": lib.sgd(0.1, momentum=0.9)},
                                           {"w": "on", "b": "off"}),
    "adamw_mask": lambda lib: lib.adamw(0.1, mask={"w": True, "b": False}),
    "lookahead": lambda lib: lib.lookahead(lib.adam(0.1), 2, 0.5),
    "multisteps": lambda lib: lib.MultiSteps(lib.adam(0.1), 2).gradient_transformation(),
}


@pytest.mark.parametrize("name", list(WRAPPERS))
def test_map_params_through_wrappers_matches_optax(name):
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    init_params = optcore.LookaheadParams.init_synced(params) if name == "lookahead" else params
    their_params = optax.LookaheadParams.init_synced(params) if name == "lookahead" else params
    ours, theirs = WRAPPERS[name](optcore), WRAPPERS[name](optax)
    got = _mapped_leaves(tu.tree_map_params, ours, ours.init(init_params))
    want = _mapped_leaves(optax.tree_utils.tree_map_params, theirs, theirs.init(their_params))
    assert [m for m, _ in got] == [m for m, _ in want]
    assert any(m for m, _ in got)
    for (_, a), (_, b) in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)

@pytest.mark.parametrize(
    "moment,decay,count",
    [
        (1.0, 0.9, 3),  # everything a Python number
        ({"a": 2.0, "b": [0.5]}, 0.99, 1),
        (jnp.ones(3), 0.9, jnp.array(4, jnp.int32)),
        (jnp.ones(3, jnp.bfloat16), 0.999, jnp.array(2, jnp.int32)),
        (jnp.ones(2), jnp.float32(0.5), 2),
    ],
)
def test_bias_correction_with_python_numbers_matches_optax(moment, decay, count):
    ours = tu.tree_bias_correction(moment, decay, count)
    theirs = optax.tree_utils.tree_bias_correction(moment, decay, count)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert jnp.result_type(a) == jnp.result_type(b)
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-6)


@pytest.mark.parametrize(
    "count",
    [True, jnp.array(False), jnp.array(1 + 2j), jnp.array(3, jnp.int8), 2.5, jnp.array(3.0, jnp.bfloat16)],
    ids=str,
)
def test_safe_increment_accepts_and_rejects_what_optax_does(count):
    try:
        theirs = optax.safe_increment(count)
    except ValueError:
        with pytest.raises(ValueError, match="Cannot safely increment count with dtype"):
            optcore.safe_increment(count)
        return
    ours = optcore.safe_increment(count)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(np.asarray(ours, np.float64), np.asarray(theirs, np.float64))
