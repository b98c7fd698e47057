"""Schedules checked at chosen steps against their closed forms (NumPy / math)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
from optcore import schedules as sch


def values(schedule, steps):
    return np.array([float(schedule(jnp.asarray(step, jnp.int32))) for step in steps])


def test_polynomial_linear_prints_one_to_zero():
    schedule = sch.polynomial_schedule(init_value=1.0, end_value=0.0, power=1, transition_steps=5)
    got = values(schedule, range(7))
    np.testing.assert_allclose(got, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0], atol=1e-7)
    assert [f"{v:.1f}" for v in got[:6]] == ["1.0", "0.8", "0.6", "0.4", "0.2", "0.0"]


def test_polynomial_power_and_begin():
    schedule = sch.polynomial_schedule(2.0, 0.5, power=2, transition_steps=4, transition_begin=3)
    expected = [2.0 if t <= 3 else 1.5 * (1 - min(t - 3, 4) / 4) ** 2 + 0.5 for t in range(10)]
    np.testing.assert_allclose(values(schedule, range(10)), expected, rtol=1e-6)
    assert sch.polynomial_schedule(3.0, 0.0, 1, transition_steps=0)(jnp.asarray(10)) == 3.0


def test_linear_schedule():
    schedule = sch.linear_schedule(0.0, 1.0, transition_steps=10, transition_begin=2)
    np.testing.assert_allclose(values(schedule, [0, 2, 7, 12, 20]), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_constant_schedule():
    assert sch.constant_schedule(0.3)(jnp.asarray(100)) == 0.3


def test_piecewise_constant_changes_after_each_boundary():
    schedule = sch.piecewise_constant_schedule(1.0, {3: 0.5, 6: 0.1})
    # Each scale applies from its boundary on.
    np.testing.assert_allclose(values(schedule, [0, 2, 3, 5, 6, 100]), [1, 1, 0.5, 0.5, 0.05, 0.05], rtol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        sch.piecewise_constant_schedule(1.0, {3: -0.5})


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay(staircase):
    schedule = sch.exponential_decay(2.0, transition_steps=4, decay_rate=0.5, transition_begin=2, staircase=staircase)

    def expected(t):
        if t <= 2:
            return 2.0
        exponent = (t - 2) / 4
        return 2.0 * 0.5 ** (math.floor(exponent) if staircase else exponent)

    steps = [0, 2, 3, 5, 6, 9, 14]
    np.testing.assert_allclose(values(schedule, steps), [expected(t) for t in steps], rtol=1e-6)


def test_exponential_decay_end_value_bounds_both_ways():
    down = sch.exponential_decay(1.0, 1, 0.5, end_value=0.2)
    np.testing.assert_allclose(values(down, [1, 2, 3, 10]), [0.5, 0.25, 0.2, 0.2], rtol=1e-6)
    up = sch.exponential_decay(1.0, 1, 2.0, end_value=3.0)
    np.testing.assert_allclose(values(up, [1, 2, 10]), [2.0, 3.0, 3.0], rtol=1e-6)
    assert sch.exponential_decay(1.0, 0, 0.5)(jnp.asarray(5)) == 1.0


@pytest.mark.parametrize("alpha, exponent", [(0.0, 1.0), (0.1, 2.0)])
def test_cosine_decay(alpha, exponent):
    schedule = sch.cosine_decay_schedule(3.0, decay_steps=8, alpha=alpha, exponent=exponent)

    def expected(t):
        cosine = 0.5 * (1 + math.cos(math.pi * min(t, 8) / 8))
        return 3.0 * ((1 - alpha) * cosine**exponent + alpha)

    steps = [0, 1, 4, 7, 8, 20]
    np.testing.assert_allclose(values(schedule, steps), [expected(t) for t in steps], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="decay_steps"):
        sch.cosine_decay_schedule(1.0, 0)


def test_cosine_decay_takes_step_counts_past_int32():
    # 1e10 decay steps (and a count of 3e9) overflowed as int32 arrays.
    schedule = jax.jit(sch.cosine_decay_schedule(1000.0, decay_steps=int(1e10)))
    np.testing.assert_allclose(schedule(int(1e9)), 1000.0 * 0.5 * (1 + math.cos(math.pi / 10)), rtol=1e-6)
    np.testing.assert_allclose(sch.cosine_decay_schedule(1000.0, int(1e10))(3 * 10**9),
                               1000.0 * 0.5 * (1 + math.cos(0.3 * math.pi)), rtol=1e-6)


def test_join_schedules_boundaries():
    schedule = sch.join_schedules(
        [sch.constant_schedule(1.0), sch.linear_schedule(2.0, 4.0, 2), sch.constant_schedule(9.0)], [3, 7]
    )
    # The second schedule starts at its own step 0 at the boundary.
    np.testing.assert_allclose(values(schedule, [0, 2, 3, 4, 5, 6, 7, 50]), [1, 1, 2, 3, 4, 4, 9, 9])
    with pytest.raises(ValueError, match="one boundary fewer"):
        sch.join_schedules([sch.constant_schedule(1.0)], [3])


def test_warmup_constant():
    schedule = sch.warmup_constant_schedule(0.0, 2.0, warmup_steps=4)
    np.testing.assert_allclose(values(schedule, [0, 1, 3, 4, 100]), [0.0, 0.5, 1.5, 2.0, 2.0], rtol=1e-6)


def test_warmup_cosine_decay():
    schedule = sch.warmup_cosine_decay_schedule(0.1, 1.0, warmup_steps=4, decay_steps=12, end_value=0.2)

    def expected(t):
        if t < 4:
            return 0.1 + 0.9 * t / 4
        cosine = 0.5 * (1 + math.cos(math.pi * min(t - 4, 8) / 8))
        return 0.2 + 0.8 * cosine

    steps = [0, 2, 4, 6, 8, 12, 30]
    np.testing.assert_allclose(values(schedule, steps), [expected(t) for t in steps], rtol=1e-5)
    zero_warmup = sch.warmup_cosine_decay_schedule(0.0, 1.0, 0, 10)
    np.testing.assert_allclose(values(zero_warmup, [0, 5, 10]), [1.0, 0.5, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="decay_steps > warmup_steps"):
        sch.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10)


def test_warmup_exponential_decay():
    schedule = sch.warmup_exponential_decay_schedule(0.0, 1.0, 2, transition_steps=2, decay_rate=0.5, end_value=0.3)
    expected = [0.0, 0.5, 1.0, 0.5**0.5, 0.5, 0.5**1.5, 0.3, 0.3]
    np.testing.assert_allclose(values(schedule, range(8)), expected, rtol=1e-6)


def test_sgdr_restarts():
    cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=6)
    schedule = sch.sgdr_schedule([cycle, dict(cycle, peak_value=0.5)])
    first = values(sch.warmup_cosine_decay_schedule(**cycle), range(6))
    second = values(sch.warmup_cosine_decay_schedule(**dict(cycle, peak_value=0.5)), range(6))
    np.testing.assert_allclose(values(schedule, range(12)), np.concatenate([first, second]), rtol=1e-6)


def _interp(points, kind, t):
    """Reference interpolation through (step, value) points, constant after the last."""
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if s0 <= t < s1:
            fraction = (t - s0) / (s1 - s0)
            if kind == "linear":
                return v0 + fraction * (v1 - v0)
            return v1 + (v0 - v1) * 0.5 * (1 + math.cos(math.pi * fraction))
    return points[-1][1]


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_piecewise_interpolate(kind):
    schedule = sch.piecewise_interpolate_schedule(kind, 2.0, {4: 0.5, 10: 3.0})
    points = [(0, 2.0), (4, 1.0), (10, 3.0)]
    steps = [0, 1, 3, 4, 5, 9, 10, 40]
    np.testing.assert_allclose(values(schedule, steps), [_interp(points, kind, t) for t in steps], rtol=1e-5)
    assert sch.piecewise_interpolate_schedule(kind, 2.0)(jnp.asarray(3)) == 2.0
    with pytest.raises(ValueError, match="interpolate_type"):
        sch.piecewise_interpolate_schedule("cubic", 1.0, {1: 1.0})


def test_linear_onecycle():
    schedule = sch.linear_onecycle_schedule(100, 1.0)
    points = [(0, 0.04), (30, 1.0), (85, 0.04), (100, 0.04 / 1e4)]
    steps = [0, 15, 30, 50, 85, 90, 100, 150]
    np.testing.assert_allclose(values(schedule, steps), [_interp(points, "linear", t) for t in steps], rtol=1e-5)
    with pytest.raises(ValueError, match="pct_start"):
        sch.linear_onecycle_schedule(100, 1.0, pct_start=0.9, pct_final=0.5)
    with pytest.raises(ValueError, match="transition_steps"):
        sch.linear_onecycle_schedule(0, 1.0)


def test_cosine_onecycle():
    schedule = sch.cosine_onecycle_schedule(100, 1.0)
    points = [(0, 0.04), (30, 1.0), (100, 1.0 / (25 * 1e4))]
    steps = [0, 15, 30, 65, 100, 150]
    np.testing.assert_allclose(values(schedule, steps), [_interp(points, "cosine", t) for t in steps], rtol=1e-5)


ALL_SCHEDULES = {
    "constant_schedule": lambda: sch.constant_schedule(0.5),
    "polynomial_schedule": lambda: sch.polynomial_schedule(1.0, 0.1, 2, 10, 2),
    "linear_schedule": lambda: sch.linear_schedule(1.0, 0.0, 10),
    "piecewise_constant_schedule": lambda: sch.piecewise_constant_schedule(1.0, {2: 0.5, 5: 0.1}),
    "exponential_decay": lambda: sch.exponential_decay(1.0, 3, 0.5, 1, True, 0.1),
    "cosine_decay_schedule": lambda: sch.cosine_decay_schedule(1.0, 10, 0.1, 1.5),
    "piecewise_interpolate_schedule": lambda: sch.piecewise_interpolate_schedule("cosine", 1.0, {3: 0.1}),
    "linear_onecycle_schedule": lambda: sch.linear_onecycle_schedule(20, 1.0),
    "cosine_onecycle_schedule": lambda: sch.cosine_onecycle_schedule(20, 1.0),
    "join_schedules": lambda: sch.join_schedules([sch.constant_schedule(1.0), sch.linear_schedule(1.0, 0.0, 5)], [4]),
    "warmup_constant_schedule": lambda: sch.warmup_constant_schedule(0.0, 1.0, 4),
    "warmup_cosine_decay_schedule": lambda: sch.warmup_cosine_decay_schedule(0.0, 1.0, 3, 12, 0.1),
    "warmup_exponential_decay_schedule": lambda: sch.warmup_exponential_decay_schedule(0.0, 1.0, 3, 2, 0.5),
    "sgdr_schedule": lambda: sch.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=6)] * 2),
}


def test_every_exported_schedule_is_covered():
    factories = {name for name in sch.__all__ if name.endswith("_schedule")} | {"exponential_decay", "join_schedules"}
    assert factories == set(ALL_SCHEDULES)


@pytest.mark.parametrize("name", sorted(ALL_SCHEDULES))
def test_schedule_under_jit_with_traced_steps(name):
    schedule = ALL_SCHEDULES[name]()
    steps = np.arange(0, 25, 3)
    eager = values(schedule, steps)
    traced = jax.jit(jax.vmap(lambda t: jnp.asarray(schedule(t), jnp.float32) + 0 * t))(jnp.asarray(steps, jnp.int32))
    # XLA may fuse `a * x + b` into one rounding, hence the small atol.
    np.testing.assert_allclose(np.asarray(traced), eager, rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(eager))
    assert getattr(optcore, name) is getattr(sch, name)


def test_schedules_are_registered():
    registered = {row.name for row in optcore.available("schedule")}
    assert set(ALL_SCHEDULES) <= registered
    assert "StatefulSchedule" not in registered and "Schedule" not in registered


def test_wrapped_schedule_is_a_stateful_schedule():
    wrapped = sch.WrappedSchedule(sch.linear_schedule(1.0, 0.0, 4))
    assert isinstance(wrapped, sch.StatefulSchedule)
    state = wrapped.init()
    assert state == sch.WrappedScheduleState(count=jnp.zeros([], jnp.int32))
    seen = []
    for _ in range(3):
        seen.append(float(wrapped(state)))
        state = wrapped.update(state)
    np.testing.assert_allclose(seen, [1.0, 0.75, 0.5])
    assert not isinstance(optcore.sgd(0.1), sch.StatefulSchedule)
    with pytest.raises(TypeError, match="callable"):
        sch.WrappedSchedule(0.1)
