"""Clipping, noise, EMA, weight decay and constraints checked against their equations written in NumPy."""

import warnings

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import optcore

RNG = np.random.default_rng(0)
G = {"w": RNG.normal(size=(3, 4)).astype(np.float32) * 3, "b": RNG.normal(size=(4,)).astype(np.float32)}
P = {"w": RNG.normal(size=(3, 4)).astype(np.float32), "b": RNG.normal(size=(4,)).astype(np.float32)}


def _apply(tx, g=G, p=P, state=None):
    state = tx.init(p) if state is None else state
    return jax.jit(tx.update)(jax.tree.map(jnp.asarray, g), state, jax.tree.map(jnp.asarray, p))


def test_clip():
    out, _ = _apply(optcore.clip(1.0))
    for k in G:
        np.testing.assert_allclose(out[k], np.clip(G[k], -1, 1))


def test_clip_by_block_rms():
    out, _ = _apply(optcore.clip_by_block_rms(0.5))
    for k in G:
        rms = np.sqrt(np.mean(G[k] ** 2))
        np.testing.assert_allclose(out[k], G[k] / max(1.0, rms / 0.5), rtol=1e-6)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_by_global_norm(max_norm):
    out, _ = _apply(optcore.clip_by_global_norm(max_norm))
    norm = np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in G.values()))
    for k in G:
        np.testing.assert_allclose(out[k], G[k] * min(1.0, max_norm / norm), rtol=1e-5)


def test_adaptive_grad_clip_matches_numpy_agc():
    out, _ = _apply(optcore.adaptive_grad_clip(0.1))
    # Matrix [in, out]: units are columns; vector: one unit.
    gw, pw = G["w"], P["w"]
    gn, pn = np.linalg.norm(gw, axis=0, keepdims=True), np.linalg.norm(pw, axis=0, keepdims=True)
    mx = 0.1 * np.maximum(pn, 1e-3)
    np.testing.assert_allclose(out["w"], np.where(gn > mx, gw * mx / gn, gw), rtol=1e-5)
    gb, pb = G["b"], P["b"]
    mx = 0.1 * max(np.linalg.norm(pb), 1e-3)
    np.testing.assert_allclose(out["b"], gb * mx / np.linalg.norm(gb), rtol=1e-5)
    with pytest.raises(ValueError, match="params"):
        optcore.adaptive_grad_clip(0.1).update(G, optcore.EmptyState())


def test_unitwise_norm_conv_and_bad_rank():
    # 2-d and 3-d convolution kernels (HWIO, DHWIO): one unit per output channel, the last axis.
    for shape in [(2, 2, 3, 5), (2, 2, 2, 3, 4)]:
        x = RNG.normal(size=shape).astype(np.float32)
        expected = np.broadcast_to(np.sqrt(np.sum(x**2, axis=tuple(range(len(shape) - 1)), keepdims=True)), shape)
        np.testing.assert_allclose(optcore.unitwise_norm(jnp.asarray(x)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="axis"):
        optcore.unitwise_norm(jnp.ones((2, 2, 2, 2, 2, 2)))


def test_per_example_clipping():
    g = [RNG.normal(size=(4, 3)).astype(np.float32), RNG.normal(size=(4, 2)).astype(np.float32)]
    norms = np.sqrt(np.sum(g[0] ** 2, 1) + np.sum(g[1] ** 2, 1))
    mult = np.minimum(1.0, 1.5 / norms)
    summed, count = optcore.per_example_global_norm_clip([jnp.asarray(x) for x in g], 1.5)
    for s, x in zip(summed, g):
        np.testing.assert_allclose(s, (mult[:, None] * x).sum(0), rtol=1e-5)
    assert int(count) == int(np.sum(norms > 1.5))
    summed, counts = optcore.per_example_layer_norm_clip([jnp.asarray(x) for x in g], 1.5, uniform=False)
    for s, c, x in zip(summed, counts, g):
        bound = 1.5 * np.sqrt(x[0].size / 5)
        n = np.linalg.norm(x, axis=1)
        np.testing.assert_allclose(s, (np.minimum(1, bound / n)[:, None] * x).sum(0), rtol=1e-5)
        assert int(c) == int(np.sum(n > bound))
    with pytest.raises(ValueError, match="batch"):
        optcore.per_example_global_norm_clip([jnp.ones((2, 3)), jnp.ones((3, 3))], 1.0)
    # Integer gradients are clipped in float32 (cast back to integers, the multipliers truncated to 0).
    ints = [np.array([[0, -1], [3, 4], [5, 6]]), np.array([[0], [5], [-3]])]
    norms = np.sqrt([1.0, 50.0, 70.0])
    summed, count = optcore.per_example_global_norm_clip([jnp.asarray(x) for x in ints], 1.0)
    for s, x in zip(summed, ints):
        assert s.dtype == jnp.float32
        np.testing.assert_allclose(s, (np.minimum(1.0, 1.0 / norms)[:, None] * x).sum(0), rtol=1e-6)
    assert int(count) == 2


def test_add_noise_statistics_and_annealing():
    tx = optcore.add_noise(eta=4.0, gamma=2.0, key=jax.random.key(0))
    zeros = {"x": jnp.zeros(20000)}
    state = tx.init(zeros)
    out1, state = tx.update(zeros, state)
    out2, state = tx.update(zeros, state)
    np.testing.assert_allclose(np.std(out1["x"]), np.sqrt(4.0 / 1**2), rtol=0.03)
    np.testing.assert_allclose(np.std(out2["x"]), np.sqrt(4.0 / 2**2), rtol=0.03)
    assert int(state.count) == 2
    with pytest.warns(DeprecationWarning, match="seed"):
        optcore.add_noise(1.0, 0.5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optcore.add_noise(1.0, 0.5).init(zeros)  # no key: seed 0
    # The key as an int, a 0-d integer array (optax.inject_hyperparams makes one of key=3), a typed key
    # or a legacy uint32 key: the same noise.
    keys = [3, np.int64(3), jnp.asarray(3), jnp.asarray(3, jnp.uint32), jax.random.key(3), jax.random.PRNGKey(3)]
    draws = [optcore.add_noise(1.0, 0.5, key).update(zeros, optcore.add_noise(1.0, 0.5, key).init(zeros))[0]["x"]
             for key in keys]
    for draw in draws[1:]:
        np.testing.assert_array_equal(draw, draws[0])


@pytest.mark.parametrize("debias", [True, False])
def test_ema(debias):
    tx = optcore.ema(0.7, debias=debias)
    grads = [RNG.normal(size=3).astype(np.float32) for _ in range(4)]
    state = tx.init(jnp.zeros(3))
    m = np.zeros(3)
    for t, g in enumerate(grads, start=1):
        out, state = tx.update(jnp.asarray(g), state)
        m = 0.7 * m + 0.3 * g
        np.testing.assert_allclose(out, m / (1 - 0.7**t) if debias else m, rtol=1e-5)
    np.testing.assert_allclose(state.ema, m, rtol=1e-5)


def test_ema_accumulator_dtype_and_bf16_params():
    tx = optcore.ema(0.9, accumulator_dtype=jnp.float32)
    p = jnp.ones(3, jnp.bfloat16)
    out, state = tx.update(p, tx.init(p))
    assert state.ema.dtype == jnp.float32


def test_keep_params_nonnegative_and_zero_nans():
    p = {"a": jnp.array([1.0, 0.5, 2.0])}
    u = {"a": jnp.array([-2.0, 0.1, -1.0])}
    out, _ = optcore.keep_params_nonnegative().update(u, optcore.EmptyState(), p)
    np.testing.assert_allclose(out["a"], [-1.0, 0.1, -1.0])
    with pytest.raises(ValueError, match="params"):
        optcore.keep_params_nonnegative().update(u, optcore.EmptyState())
    tx = optcore.zero_nans()
    g = {"a": jnp.array([1.0, jnp.nan]), "b": jnp.array([2.0])}
    out, state = jax.jit(tx.update)(g, tx.init(g))
    np.testing.assert_allclose(out["a"], [1.0, 0.0])
    assert bool(state.found_nan["a"]) and not bool(state.found_nan["b"])


def test_add_decayed_weights_reads_a_schedule_at_its_step_count():
    # u_t = g + lambda(t) p, with t the step count (0 at the first update), which the state holds.
    schedule = lambda count: 0.5 / (1.0 + count)  # noqa: E731
    tx = optcore.add_decayed_weights(schedule)
    state = tx.init(P)
    assert type(state).__name__ == "WeightDecaySchedule" and state.count.dtype == jnp.int32
    for t in range(3):
        updates, state = _apply(tx, state=state)
        for key in P:
            np.testing.assert_allclose(updates[key], G[key] + 0.5 / (1.0 + t) * P[key], rtol=1e-6)
        assert int(state.count) == t + 1
    # A constant keeps no state; a decay known to be zero adds nothing, so bfloat16 updates stay bfloat16.
    assert optcore.add_decayed_weights(0.1).init(P) == optcore.EmptyState()
    g16 = jax.tree.map(lambda g: jnp.asarray(g, jnp.bfloat16), G)
    updates, _ = _apply(optcore.add_decayed_weights(0.0), g=g16)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    # A schedule of a vector would broadcast into the updates: refused, naming the argument.
    with pytest.raises(ValueError, match="weight_decay: the schedule must return a scalar"):
        _apply(optcore.add_decayed_weights(lambda count: jnp.full(4, 0.1)))


def test_weight_decay_of_novograd_is_a_number_and_the_error_says_how_to_schedule_it():
    # NovoGrad adds the decay inside its own update rule (as Optax's, which fails on a schedule).
    schedule = optcore.linear_schedule(0.1, 0.0, 10)
    for name, build in [("novograd", lambda: optcore.novograd(0.1, weight_decay=schedule)),
                        ("scale_by_novograd", lambda: optcore.scale_by_novograd(weight_decay=schedule))]:
        with pytest.raises(TypeError, match=rf"^{name} takes weight_decay as a number .*not a schedule\. "
                           rf".*optcore\.inject_hyperparams\({name}\)\(weight_decay=schedule, \.\.\.\)\.$"):
            build()


def test_bad_hyperparameters_raise():
    for make, name in [
        (lambda: optcore.clip(-1.0), "max_delta"),
        (lambda: optcore.clip_by_block_rms(0.0), "threshold"),
        (lambda: optcore.clip_by_global_norm(-1.0), "max_norm"),
        (lambda: optcore.adaptive_grad_clip(-0.1), "clipping"),
        (lambda: optcore.add_noise(-1.0, 0.5, key=0), "eta"),
        (lambda: optcore.ema(1.5), "decay"),
    ]:
        with pytest.raises(ValueError, match=name):
            make()


def test_states_are_named_like_optax():
    assert optcore.EmaState._fields == ("count", "ema")
    assert optcore.AddNoiseState._fields == ("count", "rng_key")
    assert optcore.ZeroNansState._fields == ("found_nan",)
    for alias in ["ClipState", "AdaptiveGradClipState", "NonNegativeParamsState", "ClipByGlobalNormState"]:
        assert getattr(optcore, alias) is optcore.EmptyState
