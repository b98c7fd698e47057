"""Differential tests of the schedules and inject_hyperparams against Optax 0.2.8."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

optax = pytest.importorskip("optax")

import optcore  # noqa: E402

CYCLE = dict(init_value=0.0, peak_value=1.0, warmup_steps=3, decay_steps=10, end_value=0.1)

CASES = [
    ("constant_schedule", dict(value=0.3)),
    ("polynomial_schedule", dict(init_value=1.0, end_value=0.0, power=1, transition_steps=5)),
    ("polynomial_schedule", dict(init_value=2.0, end_value=0.5, power=2.5, transition_steps=7, transition_begin=3)),
    ("polynomial_schedule", dict(init_value=2.0, end_value=0.5, power=2, transition_steps=0)),
    ("polynomial_schedule", dict(init_value=2.0, end_value=0.5, power=2, transition_steps=4, transition_begin=-2)),
    ("linear_schedule", dict(init_value=0.0, end_value=1.0, transition_steps=10, transition_begin=2)),
    ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={3: 0.5, 8: 0.1, 12: 2.0})),
    ("piecewise_constant_schedule", dict(init_value=1.0)),
    ("exponential_decay", dict(init_value=2.0, transition_steps=4, decay_rate=0.5)),
    ("exponential_decay", dict(init_value=2.0, transition_steps=3, decay_rate=0.7, transition_begin=5, staircase=True)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=2, decay_rate=0.5, end_value=0.2)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=2, decay_rate=1.5, end_value=3.0)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=0, decay_rate=0.5)),
    ("exponential_decay", dict(init_value=1.0, transition_steps=2, decay_rate=0.0)),
    ("cosine_decay_schedule", dict(init_value=3.0, decay_steps=12)),
    ("cosine_decay_schedule", dict(init_value=3.0, decay_steps=12, alpha=0.2, exponent=2.0)),
    ("piecewise_interpolate_schedule", dict(interpolate_type="linear", init_value=2.0, boundaries_and_scales={4: 0.5, 10: 3.0})),
    ("piecewise_interpolate_schedule", dict(interpolate_type="cosine", init_value=2.0, boundaries_and_scales={0: 0.5, 9: 0.1})),
    ("piecewise_interpolate_schedule", dict(interpolate_type="linear", init_value=2.0, boundaries_and_scales={})),
    ("linear_onecycle_schedule", dict(transition_steps=20, peak_value=1.0)),
    ("linear_onecycle_schedule", dict(transition_steps=17, peak_value=0.1, pct_start=0.2, pct_final=0.7, div_factor=10.0, final_div_factor=100.0)),
    ("cosine_onecycle_schedule", dict(transition_steps=20, peak_value=1.0)),
    ("cosine_onecycle_schedule", dict(transition_steps=13, peak_value=0.5, pct_start=0.4, div_factor=5.0, final_div_factor=50.0)),
    ("warmup_constant_schedule", dict(init_value=0.1, peak_value=1.0, warmup_steps=5)),
    ("warmup_cosine_decay_schedule", CYCLE),
    ("warmup_cosine_decay_schedule", dict(CYCLE, warmup_steps=0, exponent=3.0)),
    ("warmup_cosine_decay_schedule", dict(CYCLE, peak_value=0.0)),
    ("warmup_exponential_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=4, transition_steps=3, decay_rate=0.5)),
    ("warmup_exponential_decay_schedule", dict(init_value=0.0, peak_value=1.0, warmup_steps=4, transition_steps=3, decay_rate=0.5, transition_begin=2, staircase=True, end_value=0.3)),
    ("sgdr_schedule", dict(cosine_kwargs=[CYCLE, dict(CYCLE, peak_value=0.5, decay_steps=7)])),
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_schedule_matches_optax(name, kwargs):
    ours = getattr(optcore, name)(**kwargs)
    theirs = getattr(optax, name)(**kwargs)
    steps = jnp.arange(-1, 30, dtype=jnp.int32)[1:]

    def evaluate(schedule):
        return np.asarray(jax.vmap(lambda t: jnp.asarray(schedule(t), jnp.float32) + 0 * t)(steps))

    np.testing.assert_allclose(evaluate(ours), evaluate(theirs), rtol=2e-6, atol=1e-7)


def test_join_schedules_matches_optax():
    parts = [optax.constant_schedule(1.0), optax.linear_schedule(1.0, 3.0, 4), optax.cosine_decay_schedule(3.0, 5)]
    ours = optcore.join_schedules(parts, [2, 6])
    theirs = optax.join_schedules(parts, [2, 6])
    for step in range(15):
        np.testing.assert_allclose(ours(jnp.asarray(step)), theirs(jnp.asarray(step)), rtol=1e-6)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("cosine_decay_schedule", dict(init_value=1.0, decay_steps=0)),
        ("linear_onecycle_schedule", dict(transition_steps=0, peak_value=1.0)),
        ("cosine_onecycle_schedule", dict(transition_steps=-1, peak_value=1.0)),
        ("piecewise_interpolate_schedule", dict(interpolate_type="cubic", init_value=1.0, boundaries_and_scales={1: 2.0})),
        ("piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={1: -2.0})),
    ],
)
def test_both_reject_the_same_bad_hyperparameters(name, kwargs):
    with pytest.raises(ValueError):
        getattr(optax, name)(**kwargs)
    with pytest.raises(ValueError):
        getattr(optcore, name)(**kwargs)


def test_wrapped_schedule_matches_optax():
    fn = optax.linear_schedule(1.0, 0.0, 5)
    ours, theirs = optcore.WrappedSchedule(fn), optax.WrappedSchedule(fn)
    our_state, their_state = ours.init(), theirs.init()
    for _ in range(4):
        np.testing.assert_allclose(ours(our_state), theirs(their_state))
        our_state, their_state = ours.update(our_state), theirs.update(their_state)
    assert type(our_state).__name__ == type(their_state).__name__ and our_state._fields == their_state._fields


PARAMS = {"w": jnp.array([[0.5, -1.0], [2.0, 0.1]]), "b": jnp.array([0.3, -0.2])}


def _grad(params):
    return jax.grad(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(jnp.sin(p["b"])))(params)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("sgd", dict(learning_rate=optax.linear_schedule(0.1, 0.01, 5), momentum=0.9)),
        ("adam", dict(learning_rate=0.01)),
        ("rmsprop", dict(learning_rate=0.01, decay=0.8)),
    ],
)
def test_inject_hyperparams_state_layout_and_trajectory_match_optax(name, kwargs):
    ours = optcore.inject_hyperparams(getattr(optcore, name))(**kwargs)
    theirs = optax.inject_hyperparams(getattr(optax, name))(**kwargs)
    our_state, their_state = ours.init(PARAMS), theirs.init(PARAMS)
    assert type(our_state).__name__ == type(their_state).__name__
    assert our_state._fields == their_state._fields
    assert set(our_state.hyperparams) == set(their_state.hyperparams)
    our_params, their_params = PARAMS, PARAMS
    for _ in range(10):
        our_updates, our_state = ours.update(_grad(our_params), our_state, our_params)
        their_updates, their_state = theirs.update(_grad(their_params), their_state, their_params)
        our_params = optcore.apply_updates(our_params, our_updates)
        their_params = optax.apply_updates(their_params, their_updates)
    # Optax also feeds float32 hyperparameters to the inner optimizer: same arithmetic.
    for key in their_state.hyperparams:
        np.testing.assert_allclose(our_state.hyperparams[key], their_state.hyperparams[key], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), our_params, their_params)
    assert int(our_state.count) == int(their_state.count) == 10
