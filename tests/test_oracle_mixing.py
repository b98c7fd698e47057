"""Mixing Optax and optcore objects, in both directions, against the all-Optax numbers (rtol 1e-5).

Rules checked here (see docs/guides/porting.md, "Mixing optcore and Optax objects"):

* optcore's combinators and wrappers take Optax transformations (and any
  object with ``init``/``update``); extra arguments such as ``value=`` reach
  an Optax member whose ``update`` takes them.
* Optax's combinators take optcore transformations, but Optax forwards extra
  arguments only to its own ``GradientTransformationExtraArgs`` class: an
  optcore member that needs ``value=`` inside ``optax.chain`` does not get it,
  and its error says so.
* Every registered optimizer inside ``optax.inject_hyperparams`` trains as
  under ``optcore.inject_hyperparams``, or fails with an error that names the
  way out, or fails as Optax's own optimizer does.
* A negative learning rate or weight decay runs as in Optax; a size-1 array
  learning rate gives Optax's numbers but keeps the params' shapes.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import registry_cases
from optcore import kit

optax = pytest.importorskip("optax")

PARAMS = {"w": jnp.array([[1.0, -2.0, 0.3], [0.5, 3.0, -1.2]]), "b": jnp.array([0.1, -0.3, 0.7]), "s": jnp.array(1.5)}
STEPS = 4


def loss(params):
    """A smooth objective with minimum 0.5 everywhere plus a quartic term (so steps differ)."""
    leaves = jax.tree.leaves(params)
    return sum(jnp.sum((x - 0.5) ** 2 + 0.1 * x**4) for x in leaves)


def labels(params):
    return {"w": "matrix", "b": "vector", "s": "vector"}


def run(opt, params=PARAMS, steps=STEPS, with_value=False, with_linesearch_args=False, grad_scale=1.0):
    """``steps`` jitted steps; returns the list of updates and the final state."""
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        grads = jax.tree.map(lambda g: grad_scale * g, grads)
        extra = {}
        if with_value:
            extra["value"] = value
        if with_linesearch_args:
            extra.update(value=value, grad=grads, value_fn=loss)
        updates, state = opt.update(grads, state, params, **extra)
        return jax.tree.map(lambda p, u: p + u, params, updates), updates, state

    outs = []
    for _ in range(steps):
        params, updates, state = step(params, state)
        outs.append(updates)
    return outs, state


def assert_same_numbers(actual, expected, rtol=1e-5, atol=1e-7):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert jax.tree.structure(a) == jax.tree.structure(e)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(e)):
            assert x.shape == y.shape
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# (name, mixed optimizer, all-Optax optimizer, run keyword arguments)
MIXED = {
    "chain(optax.clip, optcore.adam)": (
        lambda: optcore.chain(optax.clip(1.0), optcore.adam(1e-2)),
        lambda: optax.chain(optax.clip(1.0), optax.adam(1e-2)),
        {},
    ),
    "chain(optcore.clip, optax.adam)": (
        lambda: optcore.chain(optcore.clip(1.0), optax.adam(1e-2)),
        lambda: optax.chain(optax.clip(1.0), optax.adam(1e-2)),
        {},
    ),
    "named_chain with optax members": (
        lambda: optcore.named_chain(("clip", optax.clip_by_global_norm(1.0)), ("opt", optax.adamw(1e-2))),
        lambda: optax.named_chain(("clip", optax.clip_by_global_norm(1.0)), ("opt", optax.adamw(1e-2))),
        {},
    ),
    "MultiSteps(optax.adam)": (
        lambda: optcore.MultiSteps(optax.adam(1e-2), every_k_schedule=2),
        lambda: optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2),
        {},
    ),
    "multi_transform(optax.sgd, optcore.adam)": (
        lambda: optcore.multi_transform({"matrix": optax.sgd(0.1, momentum=0.9), "vector": optcore.adam(1e-2)}, labels),
        lambda: optax.multi_transform({"matrix": optax.sgd(0.1, momentum=0.9), "vector": optax.adam(1e-2)}, labels),
        {},
    ),
    "masked(optax.adam)": (
        lambda: optcore.chain(optcore.masked(optax.adam(1e-2), {"w": True, "b": False, "s": True}), optax.scale(0.5)),
        lambda: optax.chain(optax.masked(optax.adam(1e-2), {"w": True, "b": False, "s": True}), optax.scale(0.5)),
        {},
    ),
    "apply_if_finite(optax.sgd)": (
        lambda: optcore.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=2),
        lambda: optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=2),
        {},
    ),
    "inject_hyperparams(optax.adam)": (
        lambda: optcore.inject_hyperparams(optax.adam)(learning_rate=optax.linear_schedule(1e-2, 1e-3, 3)),
        lambda: optax.inject_hyperparams(optax.adam)(learning_rate=optax.linear_schedule(1e-2, 1e-3, 3)),
        {},
    ),
    "flatten(optax.adam)": (
        lambda: optcore.flatten(optax.adam(1e-2)),
        lambda: optax.flatten(optax.adam(1e-2)),
        {},
    ),
    # Extra arguments reach Optax members through optcore's combinators.
    "chain(optcore.sgd, optax.scale_by_polyak) with value": (
        lambda: optcore.chain(optcore.sgd(1.0), optax.scale_by_polyak(max_learning_rate=0.5)),
        lambda: optax.polyak_sgd(max_learning_rate=0.5),
        {"with_value": True},
    ),
    "masked(optax.contrib.momo) with value": (
        lambda: optcore.masked(optax.contrib.momo(0.1), {"w": True, "b": True, "s": True}),
        lambda: optax.contrib.momo(0.1),
        {"with_value": True},
    ),
    "chain(optax.sgd, optax backtracking line search) with value, grad, value_fn": (
        lambda: optcore.chain(optax.sgd(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=15)),
        lambda: optax.chain(optax.sgd(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=15)),
        {"with_linesearch_args": True},
    ),
    "MultiSteps(optax.contrib.momo) with value": (
        lambda: optcore.MultiSteps(optax.contrib.momo(0.1), every_k_schedule=1),
        lambda: optax.contrib.momo(0.1),
        {"with_value": True},
    ),
    # The other direction: optcore objects inside Optax's combinators.
    "optax.chain(optax.clip, optcore.adam)": (
        lambda: optax.chain(optax.clip(1.0), optcore.adam(1e-2)),
        lambda: optax.chain(optax.clip(1.0), optax.adam(1e-2)),
        {},
    ),
    "optax.multi_transform(optcore.sgd, optax.adam)": (
        lambda: optax.multi_transform({"matrix": optcore.sgd(0.1, momentum=0.9), "vector": optax.adam(1e-2)}, labels),
        lambda: optax.multi_transform({"matrix": optax.sgd(0.1, momentum=0.9), "vector": optax.adam(1e-2)}, labels),
        {},
    ),
    "optax.MultiSteps(optcore.adam)": (
        lambda: optax.MultiSteps(optcore.adam(1e-2), every_k_schedule=2),
        lambda: optax.MultiSteps(optax.adam(1e-2), every_k_schedule=2),
        {},
    ),
    "optax.masked(optcore.adam)": (
        lambda: optax.masked(optcore.adam(1e-2), {"w": True, "b": False, "s": True}),
        lambda: optax.masked(optax.adam(1e-2), {"w": True, "b": False, "s": True}),
        {},
    ),
    # Negative learning rates and weight decays (gradient ascent), as Optax runs them.
    "sgd(-0.1)": (lambda: optcore.sgd(-0.1), lambda: optax.sgd(-0.1), {}),
    "adam(-1e-3)": (lambda: optcore.adam(-1e-3), lambda: optax.adam(-1e-3), {}),
    "adamw(1e-3, weight_decay=-1e-2)": (
        lambda: optcore.adamw(1e-3, weight_decay=-1e-2),
        lambda: optax.adamw(1e-3, weight_decay=-1e-2),
        {},
    ),
    "sgd(-0.1, momentum=0.9) in optax.chain": (
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optcore.sgd(-0.1, momentum=0.9)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(-0.1, momentum=0.9)),
        {},
    ),
}


@pytest.mark.parametrize("name", list(MIXED))
def test_mixed_optimizer_matches_all_optax(name):
    mixed, reference, kwargs = MIXED[name]
    got, _ = run(mixed(), **kwargs)
    want, _ = run(reference(), **kwargs)
    assert_same_numbers(got, want)


def test_optax_states_keep_their_classes_inside_optcore_chain():
    opt = optcore.chain(optax.clip(1.0), optax.adam(1e-2), optcore.scale(1.0))
    _, state = run(opt)
    assert isinstance(state, tuple) and len(state) == 3
    _, reference_state = run(optax.chain(optax.clip(1.0), optax.adam(1e-2)))
    # The Optax members' states are Optax's own NamedTuples, with Optax's numbers.
    assert jax.tree.structure(state[:2]) == jax.tree.structure(tuple(reference_state))
    assert type(state[1][0]) is optax.ScaleByAdamState
    for a, b in zip(jax.tree.leaves(state[:2]), jax.tree.leaves(tuple(reference_state))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)
    # And Optax's tree utilities find them there.
    counts = optax.tree_utils.tree_get_all_with_path(state, "count")
    assert len(counts) == 1 and int(counts[0][1]) == STEPS


def test_lookahead_mixes_both_ways():
    fast_params = optcore.LookaheadParams.init_synced(PARAMS)
    optax_params = optax.LookaheadParams.init_synced(PARAMS)
    reference = optax.lookahead(optax.sgd(0.1), sync_period=2, slow_step_size=0.5)

    def steps(opt, params):
        state = opt.init(params)
        out = []
        for _ in range(STEPS):
            grads = jax.grad(loss)(params.fast)
            updates, state = opt.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            out.append(params)
        return out

    want = steps(reference, optax_params)
    # optcore's lookahead over an Optax fast optimizer, on optcore's and on Optax's LookaheadParams.
    for params in (fast_params, optax_params):
        got = steps(optcore.lookahead(optax.sgd(0.1), sync_period=2, slow_step_size=0.5), params)
        for g, w in zip(got, want):
            assert type(g) is type(params)
            for x, y in zip(jax.tree.leaves(tuple(g)), jax.tree.leaves(tuple(w))):
                np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_optax_chain_drops_extra_args_for_optcore_members():
    """Optax forwards ``value=`` only to its own GradientTransformationExtraArgs class.

    An optcore transformation is a different class, so ``optax.chain`` wraps it
    with ``optax.with_extra_args_support``, which drops the extra arguments:
    optcore's Polyak step, which needs ``value``, then raises. Re-wrapping it
    in Optax's class (or using ``optcore.chain`` as the outer chain) passes them.
    """
    params = PARAMS
    value, grads = jax.value_and_grad(loss)(params)
    dropped = optax.chain(optax.sgd(1.0), optcore.scale_by_polyak(max_learning_rate=0.5))
    with pytest.raises(TypeError, match="value") as info:
        dropped.update(grads, dropped.init(params), params, value=value)
    # The error says who dropped it and what to do; called directly, without Optax, it does not.
    assert "called by Optax" in str(info.value) and "optcore.chain" in str(info.value)
    assert "optax.GradientTransformationExtraArgs(tx.init, tx.update)" in str(info.value)
    ours = optcore.scale_by_polyak(max_learning_rate=0.5)
    with pytest.raises(TypeError, match="missing 1 required keyword argument: 'value'") as info:
        ours.update(grads, ours.init(params), params)
    assert "Optax" not in str(info.value)

    ours = optcore.scale_by_polyak(max_learning_rate=0.5)
    rewrapped = optax.chain(optax.sgd(1.0), optax.GradientTransformationExtraArgs(ours.init, ours.update))
    outer_optcore = optcore.chain(optax.sgd(1.0), optcore.scale_by_polyak(max_learning_rate=0.5))
    reference = optax.polyak_sgd(max_learning_rate=0.5)
    want, _ = reference.update(grads, reference.init(params), params, value=value)
    for opt in (rewrapped, outer_optcore):
        got, _ = opt.update(grads, opt.init(params), params, value=value)
        assert_same_numbers([got], [want])


# Registered optimizers that fail inside optax.inject_hyperparams as Optax 0.2.8's own do (checked below):
# adafactor decides its state's shapes with min_dim_size_to_factor, which Optax injects as an array
# (Optax issue 412); adopt's clip_value_fn is a callable that Optax takes for a schedule.
FAILS_IN_OPTAX_TOO = {"adafactor": lambda: optax.adafactor, "adopt": lambda: optax.contrib.adopt}


def _train_case(opt, case, steps=2):
    """``steps`` jitted steps of ``opt`` on the registry case's params and objective: the final params."""
    step = jax.jit(registry_cases.harness_of(case.name, opt).step)
    params = registry_cases.small_params(case.name)
    state = opt.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


def _optax_injected_run(factory, case, **inject_options):
    return _train_case(optax.inject_hyperparams(factory, **inject_options)(**case.kwargs), case)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in registry_cases.optimizer_cases() if not c.skip])
def test_every_registered_optimizer_inside_optax_inject_hyperparams(case):
    """``optax.inject_hyperparams(<registered factory>)``, a half-ported program's spelling.

    Optax injects every number not listed in ``static_args`` as an array and
    forwards extra ``update`` arguments only to its own class. Each registered
    optimizer either trains as under ``optcore.inject_hyperparams`` (which reads
    the factory's declared static arguments), or fails with an error that says
    which of those two it met and what to do, or fails as Optax's own does.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        inject_options = {}
        for _ in range(2):
            try:
                got = _optax_injected_run(case.factory, case, **inject_options)
                break
            except Exception as error:  # noqa: BLE001 (every failure must be one of the explained ones)
                message = str(error)
                if case.name in FAILS_IN_OPTAX_TOO:
                    with pytest.raises(Exception):
                        _optax_injected_run(FAILS_IN_OPTAX_TOO[case.name](), case)
                    return
                if "called by Optax" in message:  # an extra argument (value=, obj_fn=) dropped by Optax
                    return
                assert "to static_args" in message and not inject_options, f"{case.name}: {message}"
                # The advice works: the factory's declared static arguments, given to Optax.
                inject_options = {"static_args": tuple(kit.declared_static_args(case.factory))}
        expected = _train_case(optcore.inject_hyperparams(case.factory)(**case.kwargs), case)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, expected)


@pytest.mark.parametrize("wrapper", ["masked", "partition"])
def test_per_example_dpsgd_inside_masked_and_partition_gives_optax_numbers(wrapper):
    """dpsgd's gradients carry a batch axis the params lack; Optax's masked and partition take them."""
    (case,) = [c for c in registry_cases.optimizer_cases() if c.name == "dpsgd"]
    mask = lambda p: jax.tree.map(lambda x: x.ndim > 0, p)  # noqa: E731
    labels = lambda p: jax.tree.map(lambda x: "dp" if x.ndim > 0 else "frozen", p)  # noqa: E731

    def wrap(lib, inner):
        if wrapper == "masked":
            return lib.masked(inner, mask)
        return lib.partition({"dp": inner, "frozen": lib.set_to_zero()}, labels)

    results = [_train_case(wrap(lib, dpsgd(**case.kwargs)), case, steps=3)
               for lib, dpsgd in ((optcore, case.factory), (optax, optax.contrib.dpsgd))]
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), results[0], registry_cases.small_params(case.name))
    assert max(jax.tree.leaves(moved)) > 1e-3, moved  # the batch-axis leaves were really trained
    assert_same_numbers(jax.tree.leaves(results[0]), jax.tree.leaves(results[1]))


def test_size_one_array_learning_rate_gives_optax_numbers_with_the_params_shapes():
    """Optax 0.2.8 broadcasts a (1,) learning rate, so its scalar param's update has shape (1,); ours keeps ()."""
    lr = jnp.array([1e-2])
    got, _ = run(optcore.adam(lr))
    want, _ = run(optax.adam(lr))
    for g, w in zip(got, want):
        assert g["s"].shape == () and w["s"].shape == (1,)  # Optax changes the scalar's shape; optcore does not
        assert g["w"].shape == w["w"].shape == PARAMS["w"].shape
        for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
            np.testing.assert_allclose(np.asarray(x), np.reshape(np.asarray(y), np.shape(x)), rtol=1e-5, atol=1e-7)
