"""Differential tests of the combinators and wrappers against Optax 0.2.8: numbers and state layout."""

import functools

import pytest

optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import optcore  # noqa: E402

PARAMS = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(3.0), "d": jnp.array([[0.5, -1.0]])}}
LABELS = {"a": "x", "b": {"c": "y", "d": "x"}}
MASK = {"a": True, "b": {"c": False, "d": True}}


def layout(tree):
    """The state's structure with NamedTuple class names, independent of the defining module."""
    return str(jax.tree.structure(tree))


def grads_at(t):
    g = jax.tree.map(lambda p: jnp.cos(p * (t + 1)) * (-1.0) ** t, PARAMS)
    if t == 2:  # one non-finite step for the skip/finite wrappers
        g = {**g, "a": jnp.array([jnp.nan, 1.0])}
    return g


def both(lib):
    """Pairs (name, factory(lib)) used by the parametrized differential test."""
    m = lambda: lib.sgd(0.1, momentum=0.9)  # noqa: E731
    return {
        "chain": lambda: lib.chain(lib.trace(0.5), lib.scale(-0.1)),
        "named_chain": lambda: lib.named_chain(("mom", m()), ("s", lib.scale(2.0))),
        "partition": lambda: lib.partition({"x": m(), "y": lib.sgd(0.3)}, LABELS),
        "partition_fn": lambda: lib.partition({"x": m(), "y": lib.sgd(0.3)}, lambda p: LABELS),
        "multi_transform": lambda: lib.multi_transform({"x": m(), "y": lib.set_to_zero()}, LABELS),
        "masked": lambda: lib.masked(m(), MASK),
        "masked_fn": lambda: lib.masked(m(), lambda p: MASK),
        "freeze": lambda: lib.chain(m(), lib.freeze(MASK)),
        "selective_transform": lambda: lib.selective_transform(m(), freeze_mask=MASK),
        "flatten": lambda: lib.flatten(m()),
        "multisteps": lambda: lib.MultiSteps(m(), 2).gradient_transformation(),
        "multisteps_sum_skip": lambda: lib.MultiSteps(
            m(), 2, use_grad_mean=False, should_skip_update_fn=lib.skip_not_finite
        ).gradient_transformation(),
        "multisteps_large": lambda: lib.MultiSteps(
            m(), 3, should_skip_update_fn=functools.partial(lib.skip_large_updates, max_squared_norm=4.0)
        ).gradient_transformation(),
        "apply_every": lambda: lib.apply_every(2),
        "apply_if_finite": lambda: lib.apply_if_finite(m(), 1),
        "conditionally_mask": lambda: lib.conditionally_mask(m(), lambda s: s % 2 == 0),
        "conditionally_transform": lambda: lib.conditionally_transform(m(), lambda s: s % 3 != 1),
        "snapshot": lambda: lib.chain(lib.snapshot("n", lambda u: jnp.sum(u["a"])), m()),
        "measure_with_ema": lambda: lib.measure_with_ema(lambda u: jnp.sum(u["b"]["d"]), 0.8),
    }


NAMES = sorted(both(optcore))
NAN_SAFE = {"multisteps_sum_skip", "multisteps_large", "apply_if_finite"}


@pytest.mark.parametrize("name", NAMES)
def test_same_numbers_and_state_layout_as_optax(name):
    ours, theirs = both(optcore)[name](), both(optax)[name]()
    s_ours, s_theirs = ours.init(PARAMS), theirs.init(PARAMS)
    assert layout(s_ours) == layout(s_theirs)
    update = jax.jit(ours.update)
    for t in range(5):
        g = grads_at(t)
        if name not in NAN_SAFE and t == 2:
            g = grads_at(1)  # the others do not handle non-finite grads, by design
        u_ours, s_ours = update(g, s_ours, PARAMS)
        u_theirs, s_theirs = theirs.update(g, s_theirs, PARAMS)
        assert layout(s_ours) == layout(s_theirs)
        assert layout(u_ours) == layout(u_theirs)
        for a, b in zip(jax.tree.leaves((u_ours, s_ours)), jax.tree.leaves((u_theirs, s_theirs))):
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-6, atol=1e-7)


def test_lookahead_matches_optax():
    params_o = optax.LookaheadParams.init_synced(PARAMS)
    params_c = optcore.LookaheadParams.init_synced(PARAMS)
    to, tc = optax.lookahead(optax.sgd(0.1, momentum=0.9), 3, 0.5, reset_state=True), optcore.lookahead(
        optcore.sgd(0.1, momentum=0.9), 3, 0.5, reset_state=True
    )
    so, sc = to.init(params_o), tc.init(params_c)
    assert layout(so) == layout(sc)
    for t in range(7):
        g = grads_at(t if t != 2 else 1)
        uo, so = to.update(g, so, params_o)
        uc, sc = jax.jit(tc.update)(g, sc, params_c)
        assert layout(uo) == layout(uc) and layout(so) == layout(sc)
        params_o, params_c = optax.apply_updates(params_o, uo), optcore.apply_updates(params_c, uc)
        for a, b in zip(jax.tree.leaves((params_o, so)), jax.tree.leaves((params_c, sc))):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_monitor_matches_optax_after_first_update():
    """Optax starts with ``measurements={}``; optcore with zeros of the final layout."""
    build = lambda lib: lib.monitor(  # noqa: E731
        {"n": lambda u: jnp.sum(u["a"]), "e": lib.measure_with_ema(lambda u: jnp.sum(u["a"] ** 2), 0.9)}
    )
    to, tc = build(optax), build(optcore)
    so, sc = to.init(PARAMS), tc.init(PARAMS)
    assert layout(so.measure_states) == layout(sc.measure_states)
    for t in range(3):
        g = grads_at(t if t != 2 else 0)
        uo, so = to.update(g, so)
        uc, sc = tc.update(g, sc)
        assert layout(so) == layout(sc)
        for a, b in zip(jax.tree.leaves((uo, so)), jax.tree.leaves((uc, sc))):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_multisteps_methods_match_optax():
    o, c = optax.MultiSteps(optax.sgd(0.1), 2), optcore.MultiSteps(optcore.sgd(0.1), 2)
    so, sc = o.init(PARAMS), c.init(PARAMS)
    for t in range(3):
        _, so = o.update(grads_at(0), so, PARAMS)
        _, sc = c.update(grads_at(0), sc, PARAMS)
        assert bool(o.has_updated(so)) == bool(c.has_updated(sc))
    assert o.inner_opt.init(PARAMS) == c.inner_opt.init(PARAMS)


def test_skip_functions_match_optax():
    g = grads_at(2)
    for fn in ("skip_not_finite",):
        a, b = getattr(optcore, fn)(g, 0, None), getattr(optax, fn)(g, 0, None)
        assert bool(a[0]) == bool(b[0]) and sorted(a[1]) == sorted(b[1])
        assert int(a[1]["num_not_finite"]) == int(b[1]["num_not_finite"])
    g = grads_at(0)
    a = optcore.skip_large_updates(g, 0, None, 1.0)
    b = optax.skip_large_updates(g, 0, None, 1.0)
    assert bool(a[0]) == bool(b[0]) and sorted(a[1]) == sorted(b[1])
    np.testing.assert_allclose(a[1]["norm_squared"], b[1]["norm_squared"], rtol=1e-6)


@pytest.mark.parametrize("size", [None, 2])
def test_microbatching_matches_optax(size):
    mo, mc = optax.microbatching, optcore.microbatching

    def loss(params, x, y):
        return 0.5 * jnp.mean((x @ params - y) ** 2), {"r": x @ params}

    args = (jnp.array([0.2, -0.1]), jnp.arange(8.0).reshape(4, 2) / 8, jnp.array([0.0, 1.0, 2.0, -1.0]))
    for acc in ("SUM", "MEAN"):
        kw = dict(has_aux=True, batch_argnums=(1, 2), microbatch_size=size, metrics_fn=jnp.linalg.norm,
                  transform_fn=lambda g: (g, g**2))
        a = mc.micro_grad(loss, accumulator=getattr(mc.AccumulationType, acc), **kw)(*args)
        b = mo.micro_grad(loss, accumulator=getattr(mo.AccumulationType, acc), **kw)(*args)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=1e-6)
    f = lambda v: (v + 1, jnp.sum(v), jnp.mean(v))  # noqa: E731
    acc = lambda m: (m.AccumulationType.CONCAT, m.AccumulationType.SUM, m.AccumulationType.RUNNING_MEAN)  # noqa: E731
    x = jnp.arange(6.0)
    for real in (None, 2):
        a = mc.microbatch(f, 0, size, accumulator=acc(mc), num_real_microbatches=real)(x)
        b = mo.microbatch(f, 0, size, accumulator=acc(mo), num_real_microbatches=real)(x)
        for p, q in zip(a, b):
            np.testing.assert_allclose(p, q, rtol=1e-6)
    np.testing.assert_array_equal(mc.reshape_batch_axis(x, 3), mo.reshape_batch_axis(x, 3))
    a = mc.micro_vmap(jnp.sin, microbatch_size=size, accumulator=mc.AccumulationType.MEAN)(x)
    b = mo.micro_vmap(jnp.sin, microbatch_size=size, accumulator=mo.AccumulationType.MEAN)(x)
    np.testing.assert_allclose(a, b, rtol=1e-6)
