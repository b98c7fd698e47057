"""optcore.testing catches each way an optimizer can break a guarantee.

Each broken optimizer below is momentum SGD with one deliberate fault; the kit
must pass the correct one and fail each broken one on the guarantee it breaks,
with a message naming that guarantee and the optimizer.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import optcore.testing as kit


class MomentumState(NamedTuple):
    momentum: optcore.Updates


def momentum_sgd(learning_rate=0.1, decay=0.9, *, fault=None):
    """m <- decay m + g, u = -lr m; ``fault`` selects one deliberate bug."""
    host_calls = [0]

    def init_fn(params):
        if fault == "shares_params_buffer":
            return MomentumState(params)  # the state *is* the params: donating both donates one buffer twice
        return MomentumState(jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        if fault != "no_path":
            optcore.validate.check_tree_match(updates, state.momentum)
        previous = state.momentum
        if fault == "ignores_state":
            previous = jax.tree.map(jnp.zeros_like, updates)
        momentum = jax.tree.map(lambda m, g: decay * m + g, previous, updates)
        scale = -learning_rate
        if fault == "host_value":
            host_calls[0] += 1  # a Python side effect: jit compiles it once, as a constant
            scale = scale * host_calls[0]
        new_updates = jax.tree.map(lambda m: scale * m, momentum)
        if fault == "changes_dtype":
            new_updates = jax.tree.map(lambda u: u.astype(jnp.float32), new_updates)
            momentum = jax.tree.map(lambda m: m.astype(jnp.float32), momentum)
        return new_updates, MomentumState(momentum)

    return optcore.GradientTransformation(init_fn, update_fn)


def test_a_correct_optimizer_passes_every_check():
    report = kit.check_optimizer(momentum_sgd, 0.1)
    assert report.ok and report.passed == list(kit.CHECKS)


@pytest.mark.parametrize(
    "fault, check, message",
    [
        ("shares_params_buffer", "donation", r"state.momentum\['layer1'\]\['w'\] is the buffer of params"),
        ("host_value", "jit_matches_eager", "jitted vs eager"),
        ("changes_dtype", "dtypes", "updates have dtypes"),
        ("ignores_state", "checkpoint", "the update ignores the state"),
        ("no_path", "path_errors", r"expected a ValueError naming \['layer1'\]\['w'\], got TypeError"),
    ],
)
def test_each_broken_optimizer_fails_its_check(fault, check, message):
    report = kit.check_optimizer(momentum_sgd, 0.1, fault=fault, raise_on_failure=False)
    assert check in report.failed, str(report)
    assert re.search(message, report.failed[check]), report.failed[check]
    with pytest.raises(AssertionError, match=rf"momentum_sgd breaks optcore's guarantees: .*{check}"):
        kit.check_optimizer(momentum_sgd, 0.1, fault=fault, checks=[check])


def test_checks_select_and_unknown_names_fail():
    report = kit.check_optimizer(momentum_sgd, 0.1, fault="host_value", checks=["dtypes"])
    assert report.passed == ["dtypes"] and not report.failed
    with pytest.raises(ValueError, match="unknown"):
        kit.check_optimizer(momentum_sgd, 0.1, checks=["jit"])


def test_apply_if_finite_check_catches_a_step_that_is_not_skipped(monkeypatch):
    """The check fails if a NaN step changes the inner state: shown with an apply_if_finite that only counts."""
    from optcore.testing import _checks

    def counts_but_applies(inner, max_consecutive_errors):
        real = optcore.apply_if_finite(inner, max_consecutive_errors)

        def update_fn(updates, state, params=None, **extra):
            _, counted = real.update(updates, state, params, **extra)
            new_updates, inner_state = optcore.with_extra_args_support(inner).update(
                updates, state.inner_state, params, **extra)
            return new_updates, counted._replace(inner_state=inner_state)

        return optcore.GradientTransformationExtraArgs(real.init, update_fn)

    monkeypatch.setattr(_checks, "apply_if_finite", counts_but_applies)
    report = kit.check_optimizer(momentum_sgd, 0.1, checks=["apply_if_finite"], raise_on_failure=False)
    assert "apply_if_finite" in report.failed and "after a nan gradient" in report.failed["apply_if_finite"]


def test_update_kwargs_reach_the_update():
    """An optimizer needing ``value`` gets the built-in objective's, or the caller's."""
    seen = []

    def needs_value(learning_rate):
        def update_fn(updates, state, params=None, *, value, **extra_args):
            seen.append(value)
            return jax.tree.map(lambda g: -learning_rate * g, updates), state

        return optcore.GradientTransformationExtraArgs(lambda params: optcore.EmptyState(), update_fn)

    kit.check_optimizer(needs_value, 0.1, checks=["jit_matches_eager"])
    np.testing.assert_allclose(float(seen[0]), float(kit.objective(kit.small_params())), rtol=1e-6)
    seen.clear()
    kit.check_optimizer(needs_value, 0.1, checks=["jit_matches_eager"], update_kwargs={"value": 7.0})
    assert seen[0] == 7.0


def test_a_mu_dtype_argument_may_promote_the_updates():
    """adam(mu_dtype=float32) on half-precision params: the state's dtype is the one asked for."""
    report = kit.check_optimizer(optcore.adam, 0.01, mu_dtype=jnp.float32, checks=["dtypes", "scan_carry"])
    assert report.ok


def test_registry_cases_cover_every_registered_optimizer():
    names = {case.name for case in kit.optimizer_cases()}
    assert names == {row.name for row in optcore.available("optimizer")}
    (adam,) = [case for case in kit.optimizer_cases() if case.name == "adam"]
    assert adam.kwargs == {"learning_rate": kit.LEARNING_RATE} and adam.skip is None


def test_a_required_argument_left_unsupplied_is_named_in_the_skip(monkeypatch):
    def needs_radius(learning_rate, radius):
        return optcore.sgd(learning_rate)

    class Row:
        name, distribution = "needs_radius", "someones-plugin"

    monkeypatch.setattr(optcore, "available", lambda kind: [Row()])
    monkeypatch.setattr(optcore, "get", lambda name: needs_radius)
    (case,) = kit.optimizer_cases()
    assert case.skip == "needs_radius needs arguments these tests cannot supply: radius"
    (case,) = kit.optimizer_cases(arguments={"needs_radius": {"radius": 1.0}})
    assert case.skip is None and case.kwargs == {"learning_rate": kit.LEARNING_RATE, "radius": 1.0}
    assert kit.optimizer_cases(distribution="other") == []


@kit.parametrize_registry()
def test_every_registered_optimizer_passes_the_jit_and_dtype_checks(case):
    """The checks the other registry-wide modules do not run through the kit (they cover the rest)."""
    import registry_cases as rc

    (case,) = [c for c in rc.optimizer_cases() if c.name == case.name]  # with the arguments the core knows
    case.check(checks=["jit_matches_eager", "dtypes"])
