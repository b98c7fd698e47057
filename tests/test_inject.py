"""inject_hyperparams: same numbers as the unwrapped optimizer, no recompiles, any optimizer."""

import inspect
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import optcore.kit
from optcore import schedules as sch
from optcore import tree_utils as tu

import registry_cases

PARAMS = {"w": jnp.array([[0.5, -1.0, 0.2], [2.0, 0.1, -0.3]]), "b": jnp.array([0.3, -0.2, 0.0])}


def loss(params):
    return jnp.sum((params["w"] - 0.1) ** 2) + jnp.sum(jnp.sin(3 * params["b"])) + 0.5 * jnp.sum(params["b"] ** 2)


def run(opt, params, steps, jit=False):
    update = jax.jit(opt.update) if jit else opt.update
    state = opt.init(params)
    for _ in range(steps):
        updates, state = update(jax.grad(loss)(params), state, params)
        params = optcore.apply_updates(params, updates)
    return params, state


def run_scanned(opt, params, steps):
    """``steps`` updates in one jitted ``lax.scan``."""

    def body(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return (optcore.apply_updates(params, updates), state), None

    (params, state), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
    return params, state


def _assert_bit_identical(tree_a, tree_b):
    for a, b in zip(jax.tree.leaves(tree_a), jax.tree.leaves(tree_b)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_adam_wrapped_and_unwrapped_are_bit_identical_for_200_steps():
    # Both paths do the same float32 arithmetic on the hyperparameters (Optax
    # differs here: its issues 583 and 1532), so every rounding is the same.
    plain, _ = jax.jit(lambda p: run_scanned(optcore.adam(1e-2), p, 200))(PARAMS)
    injected, state = jax.jit(
        lambda p: run_scanned(optcore.inject_hyperparams(optcore.adam)(learning_rate=1e-2), p, 200)
    )(PARAMS)
    _assert_bit_identical(plain, injected)
    assert int(state.count) == 200
    assert state.hyperparams["learning_rate"].dtype == jnp.float32


def test_adam_wrapped_and_unwrapped_are_bit_identical_eagerly():
    # Op by op, without any compiler rewriting: the arithmetic itself is the same.
    plain, _ = run(optcore.adam(1e-2), PARAMS, 15)
    injected, _ = run(optcore.inject_hyperparams(optcore.adam)(learning_rate=1e-2), PARAMS, 15)
    _assert_bit_identical(plain, injected)


# Every float hyperparameter given, with values that are not round in binary, so
# a compiler that rewrote ``x / c`` into ``x * (1 / c)`` for a constant ``c``
# (but not for an injected one) would change the bits.
_ALL_HYPERPARAMETERS = {
    "adam": dict(learning_rate=0.037, b1=0.83, b2=0.97, eps=1e-3, eps_root=1e-9),
    "adamw": dict(learning_rate=0.037, b1=0.83, b2=0.97, eps=1e-3, eps_root=1e-9, weight_decay=0.013),
    "nadam": dict(learning_rate=0.037, b1=0.83, b2=0.97, eps=1e-3),
    "sgd": dict(learning_rate=0.3, momentum=0.7),
    "rmsprop": dict(learning_rate=0.03, decay=0.77, eps=0.01, momentum=0.3),
    "lion": dict(learning_rate=0.003, b1=0.87, b2=0.93, weight_decay=0.011),
    "adabelief": dict(learning_rate=0.037, b1=0.83, b2=0.97, eps=1e-3, eps_root=1e-9),
}


@pytest.mark.parametrize("name", sorted(_ALL_HYPERPARAMETERS))
def test_every_hyperparameter_injected_gives_the_same_bits_under_jit(name):
    factory, kwargs = getattr(optcore, name), _ALL_HYPERPARAMETERS[name]
    plain, _ = jax.jit(lambda p: run_scanned(factory(**kwargs), p, 50))(PARAMS)
    injected, state = jax.jit(lambda p: run_scanned(optcore.inject_hyperparams(factory)(**kwargs), p, 50))(PARAMS)
    assert set(kwargs) <= set(state.hyperparams)
    _assert_bit_identical(plain, injected)


def test_changing_an_injected_value_never_recompiles():
    opt = optcore.inject_hyperparams(optcore.adam)(learning_rate=0.1)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(None)  # runs only while tracing
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optcore.apply_updates(params, updates), state

    params, state = PARAMS, opt.init(PARAMS)
    seen = []
    for lr in [0.1, 0.05, 0.01, 0.2]:
        state = tu.tree_set(state, learning_rate=jnp.asarray(lr, jnp.float32))
        state = tu.tree_set(state, b1=jnp.asarray(0.8, jnp.float32))
        params, state = step(params, state)
        seen.append(float(tu.tree_get(state, "learning_rate")))
    assert len(traces) == 1
    assert step._cache_size() == 1
    np.testing.assert_allclose(seen, [0.1, 0.05, 0.01, 0.2], rtol=1e-6)


def test_a_changed_learning_rate_is_the_one_used():
    opt = optcore.inject_hyperparams(optcore.sgd)(learning_rate=0.1)
    state = opt.init(PARAMS)
    state = tu.tree_set(state, learning_rate=jnp.asarray(0.5, jnp.float32))
    grads = jax.grad(loss)(PARAMS)
    updates, _ = opt.update(grads, state)
    jax.tree.map(lambda u, g: np.testing.assert_allclose(u, -0.5 * np.asarray(g), rtol=1e-6), updates, grads)


def test_scheduled_hyperparameter_follows_the_schedule():
    schedule = sch.linear_schedule(1.0, 0.0, 4)
    opt = optcore.inject_hyperparams(optcore.sgd)(learning_rate=schedule)
    state = opt.init(PARAMS)
    assert state.hyperparams_states["learning_rate"] == sch.WrappedScheduleState(count=jnp.zeros([], jnp.int32))
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    used = []
    for _ in range(5):
        updates, state = opt.update(grads, state)
        used.append(float(state.hyperparams["learning_rate"]))
        np.testing.assert_allclose(updates["b"], -used[-1] * np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(used, [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-7)
    # Same as the unwrapped optimizer, whose schedule is counted in its own state.
    plain = optcore.sgd(schedule)
    plain_state = plain.init(PARAMS)
    for expected_lr in used:
        plain_updates, plain_state = plain.update(grads, plain_state)
        np.testing.assert_allclose(plain_updates["b"], -expected_lr * np.ones(3), rtol=1e-6, atol=1e-7)


class _LossScaledState(NamedTuple):
    steps: jax.Array


class _ScaleByLoss:
    """A stateful schedule whose value is 0.1 * the loss passed as an extra argument."""

    def init(self):
        return _LossScaledState(jnp.zeros([], jnp.int32))

    def update(self, state, **extra_args):
        return _LossScaledState(state.steps + 1)

    def __call__(self, state, **extra_args):
        return 0.1 * extra_args.get("value", 1.0)


def test_stateful_schedule_receives_extra_args():
    opt = optcore.inject_hyperparams(optcore.sgd)(learning_rate=_ScaleByLoss())
    state = opt.init(PARAMS)
    grads = jax.tree.map(jnp.ones_like, PARAMS)
    updates, state = opt.update(grads, state, value=jnp.asarray(3.0))
    np.testing.assert_allclose(updates["b"], -0.3 * np.ones(3), rtol=1e-6)
    assert int(state.hyperparams_states["learning_rate"].steps) == 1


def test_argument_sorting_static_bool_and_dtype():
    calls = []

    @optcore.kit.static_args("n_steps")
    def factory(learning_rate, n_steps=3, flag=True, mask=None, name="x", weights=np.array([1.0, 2.0])):
        calls.append(dict(learning_rate=learning_rate, n_steps=n_steps, flag=flag, mask=mask, name=name))
        return optcore.scale(-learning_rate)

    state = optcore.inject_hyperparams(factory)(0.5).init({"p": jnp.ones(2, jnp.bfloat16)})
    # n_steps is declared static; flag (bool), mask (None) and name (str) are not numbers.
    assert set(state.hyperparams) == {"learning_rate", "weights"}
    assert calls[-1]["n_steps"] == 3
    # bf16 params still get float32 hyperparameters: the arithmetic of the unwrapped path.
    assert state.hyperparams["learning_rate"].dtype == jnp.float32
    assert state.hyperparams["weights"].dtype == jnp.float32
    # An int given for an argument that is not declared static is a hyperparameter.
    assert "learning_rate" in optcore.inject_hyperparams(factory)(1).init({"p": jnp.ones(2)}).hyperparams
    # A declared static argument stays static whatever it is given as, an integer array included.
    calls.clear()
    state = optcore.inject_hyperparams(factory)(0.5, n_steps=jnp.asarray(4)).init({"p": jnp.ones(2)})
    assert "n_steps" not in state.hyperparams and int(calls[-1]["n_steps"]) == 4
    assert calls[-1]["flag"] is True and calls[-1]["name"] == "x" and calls[-1]["mask"] is None

    f16 = optcore.inject_hyperparams(factory, hyperparam_dtype=jnp.float16)(0.5).init({"p": jnp.ones(2)})
    assert f16.hyperparams["learning_rate"].dtype == jnp.float16

    mask_fn = lambda params: jax.tree.map(lambda _: True, params)  # noqa: E731
    static = optcore.inject_hyperparams(factory, static_args="mask")(0.5, mask=mask_fn)
    state = static.init({"p": jnp.ones(2)})
    assert "mask" not in state.hyperparams and "n_steps" not in state.hyperparams
    assert calls[-1]["mask"] is mask_fn and calls[-1]["n_steps"] == 3
    with pytest.raises(ValueError, match="static_args"):
        optcore.inject_hyperparams(factory, static_args=("not_an_argument",))


def test_an_undeclared_factory_is_wrapped_as_optax_wraps_it():
    """No guessing from names or defaults: every number is injected, every callable given is a schedule."""
    seen = {}

    def factory(learning_rate, memory_size=10, seed=0, mask=None):
        seen.update(memory_size=memory_size, seed=seed, mask=mask)
        return optcore.scale(-learning_rate)

    schedule = lambda count: 0.5 * jnp.ones([])  # noqa: E731
    state = optcore.inject_hyperparams(factory)(0.1, memory_size=5, seed=3, mask=schedule).init({"p": jnp.ones(2)})
    assert set(state.hyperparams) == {"learning_rate", "memory_size", "seed", "mask"}
    assert set(state.hyperparams_states) == {"mask"}
    assert isinstance(seen["memory_size"], jax.Array) and int(seen["memory_size"]) == 5
    # Declaring the same names makes them static, mask included (it is then never called with the count).
    declared = optcore.kit.static_args("memory_size", "seed", "mask")(factory)
    state = optcore.inject_hyperparams(declared)(0.1, memory_size=5, seed=3, mask=schedule).init({"p": jnp.ones(2)})
    assert set(state.hyperparams) == {"learning_rate"} and state.hyperparams_states == {}
    assert seen == {"memory_size": 5, "seed": 3, "mask": schedule}


def test_static_args_must_name_parameters():
    with pytest.raises(TypeError, match=r"\['rank'\].*not parameters of .*learning_rate"):
        optcore.kit.static_args("rank")(lambda learning_rate: None)


def test_bf16_params_keep_their_dtype():
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
    opt = optcore.inject_hyperparams(optcore.adam)(learning_rate=1e-2)
    new_params, state = run(opt, params, 3)
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(new_params))


def test_injected_updates_keep_the_inner_dtype_not_the_gradients():
    # adamw with a float32 mu on bf16 params gives float32 updates (as Optax
    # does): apply_updates rounds them once. Cast back to the gradients' bf16
    # they would be rounded twice and drift from the unwrapped optimizer.
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
    grads = jax.tree.map(lambda x: (0.3 * x + 0.01).astype(jnp.bfloat16), params)
    plain = optcore.adamw(3e-2, mu_dtype=jnp.float32)
    injected = optcore.inject_hyperparams(optcore.adamw)(3e-2, mu_dtype=jnp.float32)
    want, _ = jax.jit(plain.update)(grads, plain.init(params), params)
    got, _ = jax.jit(injected.update)(grads, injected.init(params), params)
    assert [u.dtype for u in jax.tree.leaves(got)] == [jnp.float32] * len(jax.tree.leaves(params))
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_wrapper_looks_like_the_factory():
    wrapped = optcore.inject_hyperparams(optcore.adam)
    assert wrapped.__name__ == "adam"
    assert inspect.signature(wrapped) == inspect.signature(optcore.adam)
    opt = wrapped(learning_rate=0.1)
    assert isinstance(opt, optcore.GradientTransformationExtraArgs)
    with pytest.raises(TypeError):
        wrapped()
    with pytest.raises(TypeError):
        wrapped(learning_rate=0.1, not_an_argument=1)


def test_deprecated_names():
    with pytest.warns(DeprecationWarning, match="inject_hyperparams"):
        wrapped = optcore.inject_stateful_hyperparams(optcore.sgd)
    state = wrapped(learning_rate=0.1).init(PARAMS)
    assert type(state) is optcore.InjectStatefulHyperparamsState
    assert optcore.InjectHyperparamsState._fields == ("count", "hyperparams", "inner_state")
    assert optcore.InjectStatefulHyperparamsState._fields == ("count", "hyperparams", "hyperparams_states", "inner_state")


def _optimizer_names():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broken-plugin warnings are not this test's business
        return sorted(row.name for row in optcore.available("optimizer"))


def run_with_extra_args(opt, params, steps):
    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss, obj_fn=loss)
        return optcore.apply_updates(params, updates), state

    state = opt.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("name", _optimizer_names())
def test_every_registered_optimizer_can_be_injected(name):
    factory = optcore.get(name)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        pytest.skip(f"{name} has no inspectable signature")
    if "learning_rate" not in parameters:
        pytest.skip(f"{name} takes no learning_rate")
    required = [
        p.name
        for p in parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name != "learning_rate"
    ]
    if required:
        pytest.skip(f"{name} needs more arguments: {required}")
    # No static_args: each factory declares its sizes, ranks, seeds and masks (optcore.kit.static_args).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated aliases still work
        opt = optcore.inject_hyperparams(factory)(learning_rate=0.01)
        plain = factory(learning_rate=0.01)
    # Every update gets the extra arguments that line searches and Polyak steps need.
    try:
        injected_params, state = run_with_extra_args(opt, PARAMS, 2)
    except jax.errors.ConcretizationTypeError as err:
        pytest.xfail(f"{name} branches in Python on a hyperparameter value, so it cannot take a traced one: {err}")
    plain_params, _ = run_with_extra_args(optcore.with_extra_args_support(plain), PARAMS, 2)
    np.testing.assert_allclose(state.hyperparams["learning_rate"], 0.01, rtol=1e-6)
    assert int(state.count) == 2
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), injected_params, plain_params)


def test_a_callable_default_is_not_taken_for_a_schedule():
    def factory(learning_rate, clip_fn=lambda g: jnp.clip(g, -1.0, 1.0)):
        return optcore.chain(optcore.stateless(lambda u, p: jax.tree.map(clip_fn, u)), optcore.scale(-learning_rate))

    opt = optcore.inject_hyperparams(factory)(learning_rate=0.5)
    state = opt.init(PARAMS)
    assert set(state.hyperparams) == {"learning_rate"} and state.hyperparams_states == {}
    updates, _ = opt.update(jax.tree.map(lambda x: 3 * jnp.ones_like(x), PARAMS), state)
    np.testing.assert_allclose(updates["b"], -0.5 * np.ones(3))


def test_callable_mask_stays_static_under_jit():
    """A mask function maps params to booleans; it must not be taken for a schedule of the step."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import optcore

    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    mask = lambda p: {"w": True, "b": False}  # noqa: E731
    wrapped = optcore.inject_hyperparams(optcore.adamw)(learning_rate=0.1, weight_decay=0.5, mask=mask)
    plain = optcore.adamw(0.1, weight_decay=0.5, mask=mask)
    state = wrapped.init(params)
    assert "mask" not in state.hyperparams
    got, _ = jax.jit(wrapped.update)(params, state, params)
    want, _ = plain.update(params, plain.init(params), params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
    np.testing.assert_allclose(got["b"], want["b"], rtol=1e-6)
    assert not np.allclose(got["w"], got["b"][0])  # decay applied to w only


def _bf16_cases():
    return [c for c in registry_cases.optimizer_cases() if c.skip is None]


@pytest.mark.parametrize("case", _bf16_cases(), ids=lambda c: c.name)
def test_injected_optimizer_keeps_bfloat16_updates_and_state(case):
    # float32 hyperparameters must not promote a bf16 model's updates or state:
    # a state whose dtype changes breaks lax.scan carries and donated buffers.
    params = registry_cases.small_params(case.name, dtype=jnp.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = case.build()
        injected = optcore.inject_hyperparams(case.factory)(**case.kwargs)
    grads = registry_cases.objective_grad(params)

    def one_step(opt):
        state = opt.init(params)
        updates, new_state = jax.jit(lambda g, s, p: registry_cases.update(opt, case.name, g, s, p))(grads, state, params)
        return state, updates, new_state

    try:
        inner_before, injected_updates, injected_state = one_step(injected)
    except jax.errors.ConcretizationTypeError:
        pytest.skip(f"{case.name} branches in Python on a hyperparameter value")
    _, plain_updates, plain_state = one_step(plain)
    dtypes = lambda tree: [x.dtype for x in jax.tree.leaves(tree)]  # noqa: E731
    assert dtypes(injected_updates) == dtypes(plain_updates)
    assert dtypes(injected_state.inner_state) == dtypes(inner_before.inner_state) == dtypes(plain_state)


def test_adafactor_injected_without_static_args_jits_on_matrices():
    # Optax issue 412: min_dim_size_to_factor decides the state's shapes, so it
    # must stay a Python int; adafactor declares it static (optcore.kit.static_args).
    params = {"w": jnp.linspace(-1.0, 1.0, 300 * 200).reshape(300, 200), "b": jnp.linspace(0.0, 1.0, 7)}
    injected = optcore.inject_hyperparams(optcore.adafactor)(learning_rate=0.01)
    state = jax.jit(injected.init)(params)
    assert "min_dim_size_to_factor" not in state.hyperparams
    assert "learning_rate" in state.hyperparams
    updates, _ = jax.jit(injected.update)(params, state, params)
    plain = optcore.adafactor(learning_rate=0.01)
    expected, _ = jax.jit(plain.update)(params, plain.init(params), params)
    # Equal up to XLA's choice of fused multiply-adds, which differs between the
    # two programs (1 ulp on one entry on XLA:CPU).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), updates, expected)


def _weight_decay_cases():
    out = []
    for case in registry_cases.optimizer_cases():
        if case.skip is not None:
            continue
        for argument in registry_cases.WEIGHT_DECAY_ARGUMENTS:
            if argument in inspect.signature(case.factory).parameters:
                out.append(pytest.param(case, argument, id=f"{case.name}-{argument}"))
    return out


@pytest.mark.parametrize("case,argument", _weight_decay_cases())
def test_every_weight_decay_schedule_gives_the_injected_numbers(case, argument):
    """A weight-decay schedule is read at the step count, as injecting it would; or refused, saying so.

    The reference is the same schedule injected (``inject_hyperparams``
    evaluates it at its own count and passes the number); a constant decay at
    the schedule's first value must end elsewhere, so a schedule that were
    read once, or ignored, fails.
    """
    schedule = optcore.linear_schedule(0.5, 0.0, 3)  # 0.5, 0.33, 0.17, then 0 from step 3
    params = registry_cases.small_params(case.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        injected = optcore.inject_hyperparams(case.factory)(**{**case.kwargs, argument: schedule})
        try:
            scheduled = case.build(**{argument: schedule})
        except TypeError as err:
            # Its own update rule reads the decay: the message names it and the way out,
            # which must then work.
            assert argument in str(err) and f"optcore.inject_hyperparams({case.name})" in str(err), err
            final, _ = _train(injected, case.name, params, steps=5)
            assert all(np.isfinite(np.asarray(x, np.float32)).all() for x in jax.tree.leaves(final))
            return
        constant = case.build(**{argument: 0.5})
    got, state = _train(scheduled, case.name, params, steps=5)
    want, _ = _train(injected, case.name, params, steps=5)
    unscheduled, _ = _train(constant, case.name, params, steps=5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)

    def moved(final):
        return [np.asarray(f) - np.asarray(p) for f, p in zip(jax.tree.leaves(final), jax.tree.leaves(params))]

    # Compared as displacements: some steps are small (Adadelta's first ones), the decay's share of them is not.
    # DoG and DoWG start from a distance of 1e-6 and barely move in five steps: for them only the
    # comparison with the injected schedule tells.
    if max(np.abs(d).max() for d in moved(unscheduled)) > 1e-5:
        assert any(not np.allclose(a, b, rtol=1e-3, atol=0) for a, b in zip(moved(got), moved(unscheduled)))
    counts = [x for x in jax.tree.leaves(state) if isinstance(x, jax.Array) and x.dtype == jnp.int32 and x.shape == ()]
    assert 5 in [int(c) for c in counts]  # the schedule's step count is carried in the state


def _train(opt, name, params, steps):
    harness = registry_cases.harness_of(name, opt)
    return harness.run(harness.jitted_step, params, opt.init(params), steps)
