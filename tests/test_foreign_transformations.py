"""Every combinator and wrapper takes any object with callable init/update, not only optcore's classes.

The foreign transformations here are a user's own classes: a plain class
(momentum, state a NamedTuple of its own) and one whose ``update`` takes the
extra argument ``value`` by keyword. References are NumPy closed forms.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore

PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.1, -0.3])}
LR, BETA = 0.1, 0.9


def grads_at(t):
    return jax.tree.map(lambda p: jnp.sin(p * (t + 1)) + 0.1 * t, PARAMS)


class MomentumState(NamedTuple):
    trace: dict


class Momentum:
    """A user's transformation: heavy-ball momentum ``m = g + beta m``, state a NamedTuple of its own."""

    def __init__(self, beta):
        self.beta = beta

    def init(self, params):
        return MomentumState(trace=jax.tree.map(jnp.zeros_like, params))

    def update(self, updates, state, params=None):
        trace = jax.tree.map(lambda g, m: g + self.beta * m, updates, state.trace)
        return trace, MomentumState(trace=trace)


class ScaleByValue:
    """A user's transformation that needs ``value`` (keyword-only) and takes no other extra argument."""

    def init(self, params):
        return ()

    def update(self, updates, state, params=None, *, value):
        return jax.tree.map(lambda g: value * g, updates), state


class RecordsExtraArgs:
    """A user's transformation with ``**kwargs``: it receives every extra argument."""

    def init(self, params):
        return jnp.zeros([])

    def update(self, updates, state, params=None, **extra_args):
        return updates, state + extra_args["value"] + extra_args["other"]


def momentum_reference(steps, lr=LR, beta=BETA):
    m = jax.tree.map(lambda p: np.zeros(p.shape), PARAMS)
    outs = []
    for t in range(steps):
        m = jax.tree.map(lambda g, m: np.asarray(g) + beta * m, grads_at(t), m)
        outs.append(jax.tree.map(lambda m: -lr * m, m))
    return outs


def run(tx, steps=3, params=PARAMS, **extra):
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for t in range(steps):
        u, state = update(grads_at(t), state, params, **extra)
        outs.append(u)
    return outs, state


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-7):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


def test_protocol_recognises_any_object_with_init_and_update():
    assert optcore.is_gradient_transformation(Momentum(BETA))
    assert isinstance(Momentum(BETA), optcore.GradientTransformationLike)
    assert optcore.is_gradient_transformation(optcore.sgd(0.1))
    assert not optcore.is_gradient_transformation(Momentum)  # the class, not an instance
    assert not optcore.is_gradient_transformation(optcore.adam)


@pytest.mark.parametrize(
    "build",
    [
        lambda tx: optcore.chain(tx, optcore.scale(-LR)),
        lambda tx: optcore.named_chain(("momentum", tx), ("lr", optcore.scale(-LR))),
        lambda tx: optcore.chain(optcore.partition({"all": tx}, lambda p: jax.tree.map(lambda _: "all", p)),
                                 optcore.scale(-LR)),
        lambda tx: optcore.chain(optcore.masked(tx, lambda p: jax.tree.map(lambda _: True, p)), optcore.scale(-LR)),
        lambda tx: optcore.chain(optcore.apply_if_finite(tx, 3), optcore.scale(-LR)),
        lambda tx: optcore.chain(optcore.flatten(tx), optcore.scale(-LR)),
        lambda tx: optcore.chain(optcore.conditionally_transform(tx, lambda step: step >= 0), optcore.scale(-LR)),
        lambda tx: optcore.MultiSteps(optcore.chain(tx, optcore.scale(-LR)), every_k_schedule=1),
    ],
    ids=["chain", "named_chain", "partition", "masked", "apply_if_finite", "flatten", "conditionally_transform",
         "MultiSteps"],
)
def test_user_class_inside_combinators_matches_closed_form(build):
    outs, state = run(build(Momentum(BETA)))
    for got, want in zip(outs, momentum_reference(3)):
        assert_trees_close(got, want)
    # The user's own state class survives inside ours.
    found = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, MomentumState))
             if isinstance(s, MomentumState)]
    assert len(found) == 1


def test_user_class_state_sits_in_the_chain_tuple():
    opt = optcore.chain(Momentum(BETA), optcore.scale(-LR))
    state = opt.init(PARAMS)
    assert isinstance(state, tuple) and isinstance(state[0], MomentumState)
    assert isinstance(optcore.named_chain(("m", Momentum(BETA))).init(PARAMS)["m"], MomentumState)


def test_keyword_only_extra_argument_reaches_the_member_that_names_it():
    """``value`` reaches ScaleByValue; ``other`` (which it does not take) is not passed to it."""
    opt = optcore.chain(ScaleByValue(), RecordsExtraArgs())
    value = jnp.asarray(3.0)
    outs, state = run(opt, steps=2, value=value, other=jnp.asarray(0.5))
    for t, got in enumerate(outs):
        assert_trees_close(got, jax.tree.map(lambda g: 3.0 * g, grads_at(t)))
    # RecordsExtraArgs (with **kwargs) received both arguments at both steps.
    np.testing.assert_allclose(np.asarray(state[1]), 2 * (3.0 + 0.5))


def test_partial_and_jit_wrapped_update_keep_their_signature():
    """``functools.partial``/``jax.jit`` keep the signature, so extra arguments still reach the update."""
    seen = {}

    def update(updates, state, params=None, *, value, scale):
        seen["value"] = value
        return jax.tree.map(lambda g: scale * value * g, updates), state

    wrapped = optcore.GradientTransformation(lambda p: (), jax.jit(functools.partial(update, scale=2.0)))
    opt = optcore.chain(wrapped, optcore.identity())
    u, _ = opt.update(PARAMS, opt.init(PARAMS), None, value=jnp.asarray(0.5), unrelated=1)
    assert_trees_close(u, PARAMS)  # 2 * 0.5 * p


def test_extra_args_reach_wrapped_user_classes_through_wrappers():
    for wrap in (
        lambda tx: optcore.masked(tx, lambda p: jax.tree.map(lambda _: True, p)),
        lambda tx: optcore.apply_if_finite(tx, 3),
        lambda tx: optcore.MultiSteps(tx, every_k_schedule=1),
        lambda tx: optcore.partition({"a": tx}, lambda p: jax.tree.map(lambda _: "a", p)),
        optcore.flatten,
    ):
        opt = wrap(ScaleByValue())
        u, _ = opt.update(grads_at(0), opt.init(PARAMS), PARAMS, value=jnp.asarray(2.0), grad=grads_at(0))
        assert_trees_close(u, jax.tree.map(lambda g: 2.0 * g, grads_at(0)))


def test_user_class_as_monitor_measure_and_lookahead_fast_optimizer():
    class Norm:
        def init(self, params):
            return ()

        def update(self, updates, state, params=None):
            return optcore.tree_utils.tree_norm(updates), state

    opt = optcore.monitor({"norm": Norm()})
    g = grads_at(1)
    _, state = opt.update(g, opt.init(PARAMS), PARAMS)
    expected = np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in jax.tree.leaves(g)))
    np.testing.assert_allclose(np.asarray(state.measurements["norm"]), expected, rtol=1e-6)

    fast = optcore.chain(Momentum(BETA), optcore.scale(-LR))
    opt = optcore.lookahead(fast, sync_period=5, slow_step_size=0.5)
    params = optcore.LookaheadParams.init_synced(PARAMS)
    u, _ = opt.update(grads_at(0), opt.init(params), params)
    assert_trees_close(u.fast, momentum_reference(1)[0])


@pytest.mark.parametrize(
    "obj, message",
    [
        (optcore.adam, r"chain\(\) argument 1 is the function 'adam'.*did you forget to call it \(`adam\(...\)`"),
        (functools.partial(optcore.adam, b1=0.9), r"function 'adam'.*did you forget to call it"),
        (Momentum, r"chain\(\) argument 1 is the class Momentum, not an instance of it; did you forget to call Momentum"),
        (None, r"chain\(\) argument 1 is NoneType, not a gradient transformation: it has no `init`"),
        (type("OnlyInit", (), {"init": lambda self, p: ()})(), r"OnlyInit.*has no `update`"),
        (type("BadInit", (), {"init": 3, "update": lambda *a: a})(), r"BadInit.*its `init` is int, not callable"),
        ((lambda p: (), lambda u, s, p=None: (u, s)), r"tuple, not a gradient transformation: it has no `init`"),
    ],
    ids=["factory", "partial", "class", "None", "no-update", "init-not-callable", "plain-tuple"],
)
def test_non_transformations_get_a_clear_error(obj, message):
    with pytest.raises(TypeError, match=message):
        optcore.chain(optcore.identity(), obj)


@pytest.mark.parametrize(
    "build, who",
    [
        (lambda x: optcore.named_chain(("a", x)), r"named_chain\(\) argument 0 \('a'\)"),
        (lambda x: optcore.partition({"a": x}, {"w": "a"}), r"transforms\['a'\]"),
        (lambda x: optcore.MultiSteps(x, 2), "MultiSteps opt"),
        (lambda x: optcore.masked(x, {"w": True}), "masked inner"),
        (lambda x: optcore.apply_if_finite(x, 2), "apply_if_finite inner"),
        (lambda x: optcore.flatten(x), "flatten inner"),
        (lambda x: optcore.lookahead(x, 2, 0.5), "lookahead fast_optimizer"),
        (lambda x: optcore.conditionally_mask(x, lambda s: True), "conditionally_mask inner"),
        (lambda x: optcore.with_extra_args_support(x), r"with_extra_args_support\(\) argument"),
    ],
    ids=["named_chain", "partition", "MultiSteps", "masked", "apply_if_finite", "flatten", "lookahead",
         "conditionally_mask", "with_extra_args_support"],
)
def test_every_wrapper_names_the_argument_that_is_not_a_transformation(build, who):
    with pytest.raises(TypeError, match=who + r" is the function 'sgd'.*did you forget to call it"):
        build(optcore.sgd)
