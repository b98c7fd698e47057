"""MultiSteps, apply_every, apply_if_finite, conditionally_*, lookahead, monitor/snapshot.

Each against an independent reference written in NumPy or a closed form.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore

PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.25)}


def loss(params, x, y):
    pred = x @ params["w"] + params["b"]
    return jnp.mean((pred - y) ** 2)


def batch(seed, n):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, 3)), jnp.float32), jnp.asarray(rng.normal(size=(n,)), jnp.float32)


def leaves_close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), **kw)


@pytest.mark.parametrize("k", [2, 4])
def test_multisteps_equals_one_large_batch(k):
    """k micro-batches of size m through MultiSteps(adam) == adam on the batch of size k*m."""
    m = 3
    big_opt = optcore.adam(0.05)
    multi = optcore.MultiSteps(optcore.adam(0.05), every_k_schedule=k)
    p_big, p_multi = PARAMS, PARAMS
    s_big, s_multi = big_opt.init(PARAMS), multi.init(PARAMS)
    update = jax.jit(multi.update)
    for step in range(2):
        x, y = batch(step, k * m)
        u, s_big = big_opt.update(jax.grad(loss)(p_big, x, y), s_big, p_big)
        p_big = optcore.apply_updates(p_big, u)
        for i in range(k):
            g = jax.grad(loss)(p_multi, x[i * m : (i + 1) * m], y[i * m : (i + 1) * m])
            u, s_multi = update(g, s_multi, p_multi)
            if i < k - 1:  # no step until the k-th micro-batch: params unchanged bit for bit
                new = optcore.apply_updates(p_multi, u)
                jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32)), new, p_multi)
                assert not bool(multi.has_updated(s_multi))
            p_multi = optcore.apply_updates(p_multi, u)
        assert bool(multi.has_updated(s_multi))
        leaves_close(p_multi, p_big, rtol=2e-6, atol=1e-7)
    assert int(s_multi.gradient_step) == 2


def test_multisteps_state_holds_one_accumulator():
    """acc_grads is the only params-sized buffer besides the inner state (Optax issues 472, 320)."""
    multi = optcore.MultiSteps(optcore.sgd(0.1), every_k_schedule=3)
    state = multi.init(PARAMS)
    assert state._fields == ("mini_step", "gradient_step", "inner_opt_state", "acc_grads", "skip_state")
    n_params = sum(x.size for x in jax.tree.leaves(PARAMS))
    outside_inner = [x for f in ("mini_step", "gradient_step", "acc_grads", "skip_state") for x in jax.tree.leaves(getattr(state, f))]
    assert sum(x.size for x in outside_inner) == n_params + 2
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.acc_grads))


def test_multisteps_sum_schedule_skip_and_bf16():
    g = {"w": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array(1.0)}
    # Sum of grads, k from a schedule (k = 2 for the first inner step, then 3).
    multi = optcore.MultiSteps(optcore.sgd(1.0), lambda step: jnp.where(step < 1, 2, 3), use_grad_mean=False)
    s = multi.init(PARAMS)
    emitted = []
    for t in range(5):
        u, s = multi.update(jax.tree.map(lambda x: x * (t + 1), g), s)
        emitted.append(np.asarray(u["w"]))
    np.testing.assert_allclose(emitted[1], -(1 + 2) * np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(emitted[4], -(3 + 4 + 5) * np.array([1.0, 2.0, 3.0]))
    # A NaN micro-batch is skipped: counters and accumulator unchanged.
    multi = optcore.MultiSteps(optcore.sgd(1.0), 2, should_skip_update_fn=optcore.skip_not_finite)
    s = multi.init(PARAMS)
    u, s = multi.update(g, s)
    bad = {"w": jnp.array([jnp.nan, 0.0, 0.0]), "b": jnp.array(0.0)}
    u, s2 = multi.update(bad, s)
    assert int(s2.mini_step) == 1 and int(s2.skip_state["num_not_finite"]) == 1
    leaves_close(s2.acc_grads, s.acc_grads)
    u, s3 = multi.update(g, s2)
    np.testing.assert_allclose(u["w"], -np.array([1.0, 2.0, 3.0]))
    # skip_large_updates with its threshold bound by functools.partial.
    skip = functools.partial(optcore.skip_large_updates, max_squared_norm=10.0)
    should, info = skip(g, 0, None)
    assert bool(should) and float(info["norm_squared"]) == 15.0
    # bf16 params: bf16 updates, f32 accumulator.
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
    multi = optcore.MultiSteps(optcore.sgd(0.5), 1)
    s = multi.init(p16)
    u, s = multi.update(jax.tree.map(lambda x: x.astype(jnp.bfloat16), g), s, p16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s.acc_grads))
    with pytest.raises(ValueError, match="every_k_schedule"):
        optcore.MultiSteps(optcore.sgd(0.1), 0)
    gt = optcore.MultiSteps(optcore.sgd(0.1), 2).gradient_transformation()
    assert isinstance(gt, optcore.GradientTransformationExtraArgs)


def test_apply_every_emits_sum_every_k():
    tx = optcore.apply_every(3)
    s = tx.init(PARAMS)
    g = {"w": jnp.ones(3), "b": jnp.array(2.0)}
    outs = []
    for t in range(6):
        u, s = jax.jit(tx.update)(jax.tree.map(lambda x: x * (t + 1), g), s)
        outs.append(float(u["b"]))
    assert outs == [0.0, 0.0, 2.0 * (1 + 2 + 3), 0.0, 0.0, 2.0 * (4 + 5 + 6)]
    with pytest.raises(ValueError, match="k must"):
        optcore.apply_every(0)


def test_apply_if_finite_is_bit_identical_on_nan_and_counts():
    tx = optcore.apply_if_finite(optcore.adam(0.1), max_consecutive_errors=2)
    params = {"w": jnp.array([0.0, -0.0, 1.5]), "b": jnp.array(-3.0)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    g = {"w": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array(1.0)}
    u, state = update(g, state, params)
    params = optcore.apply_updates(params, u)
    bits = lambda t: [np.asarray(x).view(np.uint32).copy() for x in jax.tree.leaves(t)]  # noqa: E731
    for bad_value in (jnp.nan, jnp.inf):
        bad = {"w": jnp.array([1.0, bad_value, 3.0]), "b": jnp.array(1.0)}
        before_params, before_inner = bits(params), bits(state.inner_state)
        u, state = update(bad, state, params)
        new_params = optcore.apply_updates(params, u)
        for a, b in zip(bits(new_params), before_params):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(bits(state.inner_state), before_inner):
            np.testing.assert_array_equal(a, b)
        assert not bool(state.last_finite)
    assert int(state.notfinite_count) == 2 and int(state.total_notfinite) == 2
    # The third consecutive bad step exceeds max_consecutive_errors and goes through.
    u, state = update(bad, state, params)
    assert not np.all(np.isfinite(np.asarray(u["w"])))
    u, state = update(g, state, params)
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 3 and bool(state.last_finite)
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        optcore.apply_if_finite(optcore.sgd(0.1), -1)


@pytest.mark.parametrize("kind", ["mask", "transform"])
def test_conditionally_mask_and_transform(kind):
    factory = optcore.conditionally_mask if kind == "mask" else optcore.conditionally_transform
    tx = factory(optcore.sgd(0.1, momentum=0.5), lambda step: step % 2 == 1)
    s = tx.init(PARAMS)
    g = {"w": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array(1.0)}
    outs = []
    for _ in range(4):
        u, s = jax.jit(tx.update)(g, s)
        outs.append(float(u["b"]))
    # Inner momentum sees only steps 1 and 3: m = 1, then 1 + 0.5.
    other = 0.0 if kind == "mask" else 1.0
    np.testing.assert_allclose(outs, [other, -0.1, other, -0.15], rtol=1e-6)
    assert int(s.step) == 4
    fields = ("step", "inner_state") if kind == "mask" else ("inner_state", "step")
    assert s._fields == fields
    # The predicate may read the extra args.
    tx = factory(optcore.scale(2.0), lambda step, *, on: on, forward_extra_args=True)
    s = tx.init(PARAMS)
    u, _ = tx.update(g, s, on=jnp.array(True))
    np.testing.assert_allclose(u["b"], 2.0)


def test_lookahead_against_numpy_reference():
    lr, k, alpha = 0.1, 3, 0.5
    tx = optcore.lookahead(optcore.sgd(lr), sync_period=k, slow_step_size=alpha)
    params = optcore.LookaheadParams.init_synced({"w": jnp.array([1.0, -1.0])})
    state = tx.init(params)
    fast = slow = np.array([1.0, -1.0])
    grad = lambda w: 2 * w + 1.0  # noqa: E731
    for t in range(7):
        u, state = jax.jit(tx.update)({"w": grad(params.fast["w"])}, state, params)
        params = optcore.apply_updates(params, u)
        fast = fast - lr * grad(fast)
        if (t + 1) % k == 0:
            slow = slow + alpha * (fast - slow)
            fast = slow.copy()
        np.testing.assert_allclose(params.fast["w"], fast, rtol=1e-6)
        np.testing.assert_allclose(params.slow["w"], slow, rtol=1e-6)
    assert isinstance(state, optcore.LookaheadState) and int(state.steps_since_sync) == 7 % k
    with pytest.raises(ValueError, match="LookaheadParams"):
        tx.init({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match="sync_period"):
        optcore.lookahead(optcore.sgd(0.1), 0, 0.5)


def test_lookahead_reset_state():
    tx = optcore.lookahead(optcore.sgd(0.1, momentum=0.9), 2, 0.5, reset_state=True)
    params = optcore.LookaheadParams.init_synced({"w": jnp.array([1.0])})
    s = tx.init(params)
    _, s = tx.update({"w": jnp.array([1.0])}, s, params)
    assert float(s.fast_state[0].trace["w"][0]) == 1.0
    _, s = tx.update({"w": jnp.array([1.0])}, s, params)
    assert float(s.fast_state[0].trace["w"][0]) == 0.0


def test_snapshot_reads_grad_norm_before_clipping():
    """Optax issue 326: the pre-clip global norm, from the state."""
    tx = optcore.chain(
        optcore.snapshot("grad_norm", optcore.tree_utils.tree_norm),
        optcore.clip_by_global_norm(1.0),
        optcore.sgd(0.1),
    )
    s = tx.init(PARAMS)
    g = {"w": jnp.array([3.0, 0.0, 0.0]), "b": jnp.array(4.0)}
    u, s = jax.jit(tx.update)(g, s)
    assert float(s[0].measurement["grad_norm"]) == pytest.approx(5.0)
    np.testing.assert_allclose(u["b"], -0.1 * 4.0 / 5.0, rtol=1e-6)


def test_monitor_and_measure_with_ema_against_reference():
    decay = 0.9
    tx = optcore.chain(
        optcore.monitor(
            {
                "norm": optcore.tree_utils.tree_norm,
                "clipped": optcore.measure_with_ema(lambda u: optcore.tree_utils.tree_norm(u) > 2.0, decay),
                "raw": optcore.measure_with_ema(optcore.tree_utils.tree_norm, decay, debias=False),
            }
        ),
        optcore.clip_by_global_norm(2.0),
    )
    s0 = tx.init(PARAMS)
    norms = [1.0, 3.0, 2.5, 0.5]

    def step(state, n):
        g = {"w": jnp.array([n, 0.0, 0.0]), "b": jnp.array(0.0)}
        u, state = tx.update(g, state)
        return state, state[0].measurements

    # The state keeps one structure from init on: it can be carried by lax.scan.
    _, measured = jax.lax.scan(step, s0, jnp.array(norms))
    ema_c = ema_r = 0.0
    for t, n in enumerate(norms):
        ema_c = decay * ema_c + (1 - decay) * float(n > 2.0)
        ema_r = decay * ema_r + (1 - decay) * n
        np.testing.assert_allclose(measured["norm"][t], n, rtol=1e-6)
        np.testing.assert_allclose(measured["clipped"][t], ema_c / (1 - decay ** (t + 1)), rtol=1e-5)
        np.testing.assert_allclose(measured["raw"][t], ema_r, rtol=1e-5)
    assert isinstance(s0[0], optcore.MonitorState)
    with pytest.raises(TypeError):
        optcore.monitor({"x": 3})


def test_wrappers_are_registered_as_wrappers():
    kinds = {row.name: row.kind for row in optcore.available()}
    for name in ("MultiSteps", "apply_if_finite", "partition", "lookahead", "monitor", "named_chain", "freeze"):
        assert kinds.get(name) == "wrapper", name


@pytest.mark.parametrize("bad_leaf", ["v00", "v17", "v29", "matrix"])
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_entry_among_many_small_leaves_is_found(bad_leaf, bad_value):
    # Small leaves are checked as one concatenated group (issue 8): a single bad
    # entry in any of them, or in the large leaf, must still be seen and counted.
    grads = {f"v{i:02d}": jnp.full((3 + i,), 0.5, jnp.float32) for i in range(30)}
    grads["matrix"] = jnp.full((150, 120), 0.5, jnp.float32)
    bad = dict(grads)
    bad[bad_leaf] = grads[bad_leaf].reshape(-1).at[1].set(bad_value).reshape(grads[bad_leaf].shape)

    opt = optcore.apply_if_finite(optcore.sgd(0.1), max_consecutive_errors=2)
    state = opt.init(grads)
    _, good_state = jax.jit(opt.update)(grads, state)
    _, bad_state = jax.jit(opt.update)(bad, state)
    assert bool(good_state.last_finite) and int(good_state.notfinite_count) == 0
    assert not bool(bad_state.last_finite) and int(bad_state.notfinite_count) == 1

    skip, info = jax.jit(optcore.skip_not_finite)(bad, jnp.zeros([], jnp.int32), None)
    assert bool(skip) and int(info["num_not_finite"]) == 1
    both_bad = dict(bad, v05=grads["v05"].at[0].set(np.nan)) if bad_leaf != "v05" else bad
    _, info = jax.jit(optcore.skip_not_finite)(both_bad, jnp.zeros([], jnp.int32), None)
    assert int(info["num_not_finite"]) == 2
