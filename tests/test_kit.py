"""The author's kit (optcore.kit): the boundary every core transform and first-party plugin uses."""

import ast
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
from optcore import kit

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_f32_traces_and_rounds_like_float32():
    assert kit.f32(0.1).dtype == jnp.float32 and float(kit.f32(0.1)) == float(np.float32(0.1))
    traced = jax.jit(lambda x: kit.f32(x) * 2)(jnp.asarray(0.25, jnp.bfloat16))
    assert traced.dtype == jnp.float32 and float(traced) == 0.5


def test_hyperparameter_dtype_is_float32_unless_a_leaf_is_float64():
    low = {"w": jnp.ones(2, jnp.bfloat16), "h": jnp.ones(2, jnp.float16), "i": jnp.ones(2, jnp.int32), "none": None}
    assert kit.hyperparameter_dtype(low) == jnp.float32
    assert kit.hyperparameter_dtype({"c": jnp.ones(2, jnp.complex64)}, 0.5) == jnp.float32
    assert kit.f32(0.1, jnp.bfloat16).dtype == jnp.float32  # never narrower than float32
    with jax.enable_x64(True):
        assert kit.hyperparameter_dtype({"w": jnp.ones(2, jnp.float32)}) == jnp.float32
        assert kit.hyperparameter_dtype({"w": jnp.ones(2, jnp.float32), "d": jnp.ones(2, jnp.float64)}) == jnp.float64
        assert kit.hyperparameter_dtype(jnp.ones(2, jnp.complex128)) == jnp.float64  # by its real part
        assert kit.hyperparameter_dtype([1.5]) == jnp.float64  # a Python float, typed as JAX types it
        assert kit.hyperparameter_dtype({"i": jnp.ones(2, jnp.int64)}) == jnp.float32
        b1 = kit.f32(0.9, kit.hyperparameter_dtype(jnp.ones(2, jnp.float64)))
        assert b1.dtype == jnp.float64 and float(b1) == 0.9  # not float32(0.9) = 0.899999976...


def test_value_at_and_learning_rate_at():
    schedule = optcore.linear_schedule(1.0, 0.0, 10)
    assert float(kit.value_at(schedule, jnp.asarray(5))) == pytest.approx(0.5)
    assert kit.value_at(0.3, jnp.asarray(5)) == 0.3
    # A size-1 array is a scalar (Optax would broadcast it into the updates' shapes).
    assert kit.learning_rate_at(jnp.array([1e-3]), jnp.asarray(0)).shape == ()
    with pytest.raises(ValueError, match=r"learning_rate must be a scalar or a schedule, got shape \(2,\)"):
        kit.learning_rate_at(jnp.array([1e-3, 2e-3]), jnp.asarray(0))


def test_cast_like_keeps_none_leaves_and_reference_dtypes():
    tree = {"a": jnp.ones(2, jnp.float32), "b": None}
    reference = {"a": jnp.ones(2, jnp.bfloat16), "b": None}
    out = kit.cast_like(tree, reference)
    assert out["a"].dtype == jnp.bfloat16 and out["b"] is None


def test_cast_promoted_gives_the_dtype_of_optax_arithmetic():
    # bf16 gradient with a float32 moment: JAX promotes to float32, as Optax's Python-float arithmetic does.
    out = kit.cast_promoted({"u": jnp.ones(2, jnp.float32)}, {"u": jnp.ones(2, jnp.bfloat16)}, {"u": jnp.ones(2)})
    assert out["u"].dtype == jnp.float32
    out = kit.cast_promoted({"u": jnp.ones(2)}, {"u": jnp.ones(2, jnp.bfloat16)})
    assert out["u"].dtype == jnp.bfloat16


def test_widen_only_widens_narrow_floats():
    out = kit.widen({"h": jnp.ones(2, jnp.float16), "i": jnp.ones(2, jnp.int32), "f": jnp.ones(2)})
    assert [out[k].dtype for k in "hif"] == [jnp.float32, jnp.int32, jnp.float32]
    # The reason it exists: 1e-8 underflows to 0 in float16, not in float32.
    assert float(jnp.float16(1e-8)) == 0.0 and float(kit.widen(jnp.ones((), jnp.float16))) * 1e-8 > 0


def test_own_copy_gives_new_buffers_with_equal_values():
    params = {"w": jnp.arange(3.0)}
    copied = kit.own_copy(params)
    np.testing.assert_array_equal(copied["w"], params["w"])
    assert copied["w"].unsafe_buffer_pointer() != params["w"].unsafe_buffer_pointer()


@jax.tree_util.register_pytree_with_keys_class
class _Variable:
    """Stands for one array, with metadata, as ``flax.nnx.Variable`` does (the core does not depend on Flax)."""

    def __init__(self, value, tag="param"):
        self.value, self.tag = value, tag

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)

    def tree_flatten_with_keys(self):
        return ((jax.tree_util.GetAttrKey("value"), self.value),), self.tag

    @classmethod
    def tree_unflatten(cls, tag, children):
        return cls(children[0], tag)


def test_wraps_one_array_only_for_single_array_nodes_with_shape_and_dtype():
    assert kit.wraps_one_array(_Variable(jnp.ones(3)))
    for other in (jnp.ones(3), np.ones(3), 1.0, None, {"w": jnp.ones(3)}, [jnp.ones(3)],
                  jax.ShapeDtypeStruct((3,), jnp.float32), _Variable({"a": jnp.ones(3), "b": jnp.ones(2)})):
        assert not kit.wraps_one_array(other), other


def test_map_params_unwraps_variables_and_lets_a_structured_state_replace_them():
    params = {"w": _Variable(jnp.ones((2, 3)), tag="kernel"), "b": jnp.zeros(3)}
    seen = []

    def per_param(p):
        seen.append(isinstance(p, jax.Array))
        return [jnp.sum(p, axis=1), jnp.sum(p, axis=0)] if p.ndim == 2 else jnp.zeros_like(p)

    state = kit.map_params(per_param, params)
    assert seen == [True, True]  # the variable was unwrapped for fn
    # A structured result replaces the wrapper: a client writing it back path by path keeps the list.
    assert isinstance(state["w"], list) and [v.tolist() for v in state["w"]] == [[3.0, 3.0], [2.0, 2.0, 2.0]]
    # An array result keeps the wrapper and its metadata, as jax.tree.map would give.
    wrapped = kit.map_params(jnp.zeros_like, params)
    assert isinstance(wrapped["w"], _Variable) and wrapped["w"].tag == "kernel"
    assert jax.tree.structure(wrapped) == jax.tree.structure(jax.tree.map(jnp.zeros_like, params))
    # An array of another shape replaces it: the variable's metadata (Flax's sharding) names the param's axes.
    scalars = kit.map_params(lambda p: jnp.zeros([], p.dtype), params)
    assert isinstance(scalars["w"], jax.Array) and scalars["w"].shape == ()
    stacked = kit.map_params(lambda p: jnp.broadcast_to(p, (4,) + p.shape), params)
    assert isinstance(stacked["w"], jax.Array) and stacked["w"].shape == (4, 2, 3)
    # Without wrappers it is jax.tree.map (or tree_map_with_path).
    plain = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    assert jax.tree.structure(kit.map_params(per_param, plain)) == jax.tree.structure(jax.tree.map(per_param, plain))
    paths = kit.map_params(lambda path, p: jax.tree_util.keystr(path), params, with_path=True)
    assert paths["b"] == "['b']" and paths["w"] == "['w']"  # the path ends at the wrapper


def test_sharding_helpers_leave_arrays_without_typed_sharding_alone():
    """On one device (or auto mesh axes) the split is not in the type: nothing to gather or reshard.
    The mesh cases run in tests/integration/test_explicit_sharding_steps.py (8 fake devices)."""
    x, y = jnp.arange(3.0), jnp.ones(3)
    assert optcore.numerics.typed_sharding(x) is None
    assert kit.whole(x) is x and kit.reshard_like(x, y) is x
    a, b = jnp.array([1 + 2j, 3 - 1j]), jnp.array([2 - 1j, 1j])
    np.testing.assert_allclose(optcore.numerics.vdot(a, b), np.vdot(np.asarray(a), np.asarray(b)), rtol=1e-6)


def test_zero_count_is_a_scalar_int32():
    count = kit.zero_count()
    assert count.shape == () and count.dtype == jnp.int32 and int(count) == 0


def test_safe_ratio_has_no_nan_value_or_gradient_at_zero():
    assert float(kit.safe_ratio(jnp.asarray(6.0), jnp.asarray(3.0), 7.0)) == 2.0
    assert float(kit.safe_ratio(jnp.asarray(0.0), jnp.asarray(0.0), 7.0)) == 7.0
    grad = jax.grad(lambda d: kit.safe_ratio(jnp.asarray(1.0), d, 0.0))(jnp.asarray(0.0))
    assert jnp.isfinite(grad)


def test_require_params_names_what_is_wrong():
    with pytest.raises(ValueError, match="my_opt: .*params"):
        kit.require_params(None, "my_opt")
    with pytest.raises(ValueError, match=r"\['b'\]"):
        kit.require_params({"a": jnp.ones(2), "b": jnp.ones(3)}, "my_opt", {"a": jnp.ones(2), "b": jnp.ones(4)})
    kit.require_params({"a": jnp.ones(2)}, "my_opt", {"a": jnp.ones(2)})


@pytest.mark.parametrize(
    "check, good, bad, message",
    [
        (kit.check_beta, 0.999, 1.0, r"b must be in \[0.0, 1.0\), got 1.0"),
        (kit.check_decay, 1.0, 1.5, r"b must be in \[0.0, 1.0\], got 1.5"),
        (kit.check_positive, 1e-8, 0.0, r"b must be in \(0.0, inf\), got 0.0"),
        (kit.check_non_negative, 0.0, -1.0, r"b must be in \[0.0, inf\), got -1.0"),
    ],
)
def test_hyperparameter_checks(check, good, bad, message):
    check("b", good)
    with pytest.raises(ValueError, match=message):
        check("b", bad)
    # Traced values and schedules are accepted as they are (inject_hyperparams, jit).
    check("b", lambda count: bad)
    jax.jit(lambda x: check("b", x) or x)(jnp.asarray(bad))


def test_check_one_of_names_the_argument_and_its_choices():
    kit.check_one_of("mode", "hard", ("hard", "smooth"))
    kit.check_one_of("handler", None, (None, "promote"))
    with pytest.raises(ValueError, match=r"^mode must be one of \('hard', 'smooth'\), got 'soft'\.$"):
        kit.check_one_of("mode", "soft", ("hard", "smooth"))
    with pytest.raises(ValueError, match=r"bits must be one of \(4, 8\), got True"):
        kit.check_one_of("bits", True, (4, 8))  # True == 1, not 4 or 8
    # The core's own choice arguments fail through it, with the same message.
    with pytest.raises(ValueError, match=r"mode must be one of \('hard', 'smooth', 'refined'\), got 'soft'"):
        optcore.scale_by_lion(mode="soft")
    with pytest.raises(ValueError, match=r"variant must be one of \('sps', 'sps\+'\), got 'sps-'"):
        optcore.scale_by_polyak(variant="sps-")
    with pytest.raises(ValueError, match=r"mixed_dtype_handler must be one of \(None, 'promote', 'highest', 'lowest'\)"):
        optcore.tree.dtype({"a": jnp.ones(2)}, mixed_dtype_handler="widest")


def test_check_integer_takes_python_and_numpy_integers_and_names_an_injected_array():
    kit.check_integer("memory_size", 10, 1)
    kit.check_integer("memory_size", np.int64(1), 1)
    kit.check_integer("min_size", 0, 0)
    with pytest.raises(ValueError, match=r"^memory_size must be an integer of at least 1, got 0\.$"):
        kit.check_integer("memory_size", 0, 1)
    for bad in (2.0, True, "3", None):
        with pytest.raises(TypeError, match=r"^memory_size must be an integer of at least 1, got .*\.$"):
            kit.check_integer("memory_size", bad, 1)
    # An array (what an inject_hyperparams wrapper not told the argument is static passes) gets the way out.
    with pytest.raises(TypeError, match=r"got Array\(10, .*inject_hyperparams.*add 'memory_size' to static_args"):
        kit.check_integer("memory_size", jnp.asarray(10), 1)
    # The core's sizes and counts fail through it.
    with pytest.raises(ValueError, match="memory_size must be an integer of at least 1, got 0"):
        optcore.scale_by_lbfgs(memory_size=0)
    with pytest.raises(TypeError, match="max_linesearch_steps must be an integer of at least 1, got 2.5"):
        optcore.scale_by_zoom_linesearch(2.5)
    with pytest.raises(ValueError, match="max_backtracking_steps must be an integer of at least 0, got -1"):
        optcore.scale_by_backtracking_linesearch(max_backtracking_steps=-1)
    optcore.scale_by_backtracking_linesearch(max_backtracking_steps=0)
    with pytest.raises(ValueError, match="p must be an integer of at least 1, got 0"):
        optcore.matrix_inverse_pth_root(jnp.eye(2), 0)


def test_check_not_schedule_refuses_a_callable_and_names_the_way_out():
    kit.check_not_schedule("weight_decay", 1e-4, who="prodigy")
    kit.check_not_schedule("weight_decay", jnp.asarray(1e-4), who="prodigy")  # as inject_hyperparams passes it
    with pytest.raises(TypeError, match=r"^prodigy takes weight_decay as a number \(or a scalar array\), not a "
                       r"schedule\. To change it over the steps, inject it: "
                       r"optcore\.inject_hyperparams\(prodigy\)\(weight_decay=schedule, \.\.\.\)\.$"):
        kit.check_not_schedule("weight_decay", optcore.linear_schedule(1e-4, 0.0, 10), who="prodigy")


class _MomentumState(NamedTuple):
    count: jax.Array
    mu: optcore.Updates


def _debiased_momentum(decay=0.9, mu_dtype=None):
    """The transformation of the module docstring, written with the kit only."""
    kit.check_beta("decay", decay)
    mu_dtype = kit.dtype_or_none(mu_dtype)

    def init_fn(params):
        return _MomentumState(kit.zero_count(), jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params))

    def update_fn(updates, state, params=None):
        count = optcore.safe_increment(state.count)
        b = kit.f32(kit.value_at(decay, state.count))
        mu = jax.tree.map(lambda m, g: b * m + (1 - b) * g, state.mu, updates)
        debiased = jax.tree.map(lambda m: m / (1 - b**count), mu)
        return kit.cast_promoted(debiased, updates, state.mu), _MomentumState(count, kit.cast_like(mu, state.mu))

    return optcore.GradientTransformation(init_fn, update_fn)


def test_a_transformation_built_with_the_kit_matches_its_equation_and_injects_bit_identically():
    grads = [jnp.asarray([1.0, -2.0]), jnp.asarray([3.0, 0.5])]
    mu, expected = np.zeros(2, np.float32), []
    for t, g in enumerate(grads, start=1):
        mu = np.float32(0.9) * mu + (np.float32(1) - np.float32(0.9)) * np.asarray(g)
        expected.append(mu / (np.float32(1) - np.float32(0.9) ** t))
    plain = _debiased_momentum(0.9)
    injected = optcore.inject_hyperparams(_debiased_momentum)(decay=0.9)
    states = [plain.init(grads[0]), injected.init(grads[0])]
    for g, want in zip(grads, expected):
        (u_plain, states[0]), (u_injected, states[1]) = (
            jax.jit(opt.update)(g, s) for opt, s in zip((plain, injected), states)
        )
        np.testing.assert_allclose(u_plain, want, rtol=1e-6)
        np.testing.assert_array_equal(u_plain, u_injected)
    # bf16 params with a float32 moment: float32 updates, the moment stays float32.
    bf16 = jnp.ones(2, jnp.bfloat16)
    opt = _debiased_momentum(0.9, mu_dtype=jnp.float32)
    updates, state = opt.update(bf16, opt.init(bf16))
    assert updates.dtype == jnp.float32 and state.mu.dtype == jnp.float32
    with pytest.raises(ValueError, match=r"decay must be in \[0.0, 1.0\)"):
        _debiased_momentum(1.0)


def test_static_args_is_read_by_inject_hyperparams_through_wrappers():
    import functools

    @kit.static_args("rank")
    def factory(learning_rate, rank=2):
        return optcore.scale(-learning_rate * rank)

    @functools.wraps(factory)
    def wrapper(*args, **kwargs):  # a decorator of a third party (functools.wraps copies the declaration)
        return factory(*args, **kwargs)

    assert kit.declared_static_args(wrapper) == frozenset({"rank"})
    assert kit.declared_static_args(lambda learning_rate: None) is None
    state = optcore.inject_hyperparams(wrapper)(0.5, rank=3).init(jnp.ones(2))
    assert set(state.hyperparams) == {"learning_rate"}


def test_every_registered_transformation_declares_its_int_and_mask_arguments():
    """No factory of ours leaves inject_hyperparams to trace a size, a seed or a mask.

    Walks the registry (plugins included): an int-valued default or a
    mask/key/seed argument of an optimizer or transformation factory must be
    declared with optcore.kit.static_args, or the factory breaks under
    inject_hyperparams (Optax issue 412).
    """
    import inspect

    undeclared = {}
    for row in optcore.available():
        if row.kind not in ("optimizer", "transform", "wrapper"):
            continue
        factory = optcore.get(row.name)
        if isinstance(factory, type) or not callable(factory):
            continue
        declared = kit.declared_static_args(factory) or frozenset()
        needs = {
            p.name
            for p in inspect.signature(factory).parameters.values()
            if (isinstance(p.default, int) and not isinstance(p.default, bool))
            or p.name in ("key", "seed", "rng", "mask")
            or p.name.endswith("_mask")
        }
        missing = needs - declared
        if missing:
            undeclared[row.name] = sorted(missing)
    assert not undeclared, f"factories that should declare static_args: {undeclared}"


KIT_NAMES = set(kit.__all__)


def test_no_first_party_plugin_reimplements_a_kit_helper():
    """The contrib copies of f32, cast_like, ... are gone; no plugin (nor the example) defines a kit name again."""
    sources = [*(ROOT / "plugins").glob("*/src/**/*.py"), *(ROOT / "examples").glob("*/src/**/*.py")]
    assert sources
    offenders = []
    for path in sorted(sources):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") in KIT_NAMES and node.col_offset == 0:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not offenders, offenders
