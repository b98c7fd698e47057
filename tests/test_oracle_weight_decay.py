"""Weight-decay schedules against Optax 0.2.8, for every registered optimizer.

Optax 0.2.8's ``add_decayed_weights`` reads a schedule at its own step count,
kept in a ``WeightDecaySchedule(count)`` state, so every Optax optimizer whose
decay goes through it takes ``weight_decay=schedule`` (Optax issue 1426 asked
for it). Each registered optimizer with a decay argument and a same-named
Optax factory is built in both libraries with the same schedule and run for
10 jitted steps: the params agree to rtol 1e-5 and the states have the same
NamedTuple names, fields and leaf shapes. Where Optax's own fails on a
schedule (its update rule reads the decay as a number), optcore's refuses it
when built, saying how to inject it instead; tests/test_inject.py checks that
advice for every optimizer.
"""

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

optax = pytest.importorskip("optax")

import optcore  # noqa: E402
import registry_cases  # noqa: E402
from test_oracle_dtypes import is_optax_extra_args, is_optcore_extra_args, optax_factory, run  # noqa: E402
from test_oracle_optimizers import ATOL, RTOL, describe  # noqa: E402

STEPS = 10


def cases():
    out = []
    for case in registry_cases.optimizer_cases():
        theirs = None if case.skip else optax_factory(case.name)
        if theirs is None:
            continue
        ours_parameters = inspect.signature(case.factory).parameters
        theirs_parameters = inspect.signature(theirs).parameters
        for argument in registry_cases.WEIGHT_DECAY_ARGUMENTS:
            if argument in ours_parameters and argument in theirs_parameters:
                out.append(pytest.param(case, theirs, argument, id=f"{case.name}-{argument}"))
    return out


@pytest.mark.parametrize("case,theirs,argument", cases())
def test_weight_decay_schedule_matches_optax(case, theirs, argument):
    params = registry_cases.small_params(case.name)
    kwargs = {**case.kwargs, argument: lambda lib: lib.linear_schedule(0.5, 0.0, 6)}

    def build(factory, lib):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return factory(**{k: v(lib) if callable(v) and k == argument else v for k, v in kwargs.items()})

    try:
        reference = build(theirs, optax)
        theirs_params, _, theirs_state = run(reference, case.name, params, is_optax_extra_args, STEPS)
    except TypeError as optax_error:
        with pytest.raises(TypeError, match=f"takes {argument} as a number .* not a schedule"):
            build(case.factory, optcore)
        pytest.xfail(f"Optax's {case.name} fails on a schedule too: {optax_error}")
    ours_params, _, ours_state = run(build(case.factory, optcore), case.name, params, is_optcore_extra_args, STEPS)
    assert describe(ours_state) == describe(theirs_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL), ours_params, theirs_params)


def test_add_decayed_weights_schedule_matches_optax_inside_masked():
    params = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -1.0])}
    updates = {"w": jnp.full((2, 2), 0.1), "b": jnp.full((2,), -0.2)}
    mask = {"w": True, "b": False}
    ours = optcore.add_decayed_weights(optcore.linear_schedule(0.5, 0.0, 4), mask)
    theirs = optax.add_decayed_weights(optax.linear_schedule(0.5, 0.0, 4), mask)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    for _ in range(5):
        u_ours, s_ours = ours.update(updates, s_ours, params)
        u_theirs, s_theirs = theirs.update(updates, s_theirs, params)
        assert describe(s_ours) == describe(s_theirs)
        for key in params:
            np.testing.assert_allclose(np.asarray(u_ours[key]), np.asarray(u_theirs[key]), rtol=RTOL)
