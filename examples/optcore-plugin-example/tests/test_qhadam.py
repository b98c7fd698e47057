import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
from optcore_plugin_example import qhadam


def numpy_qhadam(grads, lr, b1, b2, nu1, nu2, eps):
    """The update equations of QHAdam (Ma & Yarats 2019, Algorithm 2), in float64."""
    m = v = np.zeros_like(grads[0], dtype=np.float64)
    theta = np.zeros_like(grads[0], dtype=np.float64)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        theta = theta - lr * ((1 - nu1) * g + nu1 * m_hat) / (np.sqrt((1 - nu2) * g * g + nu2 * v_hat) + eps)
    return theta


def run(opt, grads):
    params = jnp.zeros_like(grads[0])
    state = opt.init(params)
    step = jax.jit(opt.update)
    for g in grads:
        updates, state = step(g, state, params)
        params = optcore.apply_updates(params, updates)
    return params


def test_matches_the_equations():
    grads = [np.random.default_rng(i).normal(size=(5,)).astype(np.float32) for i in range(6)]
    got = run(qhadam(0.1, b1=0.9, b2=0.99, nu1=0.7, nu2=0.9), [jnp.asarray(g) for g in grads])
    want = numpy_qhadam(grads, 0.1, 0.9, 0.99, 0.7, 0.9, 1e-8)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_nu_one_is_adam():
    grads = [jnp.asarray(np.random.default_rng(i).normal(size=(4,)), jnp.float32) for i in range(5)]
    got = run(qhadam(0.01, b1=0.9, b2=0.999, nu1=1.0, nu2=1.0), grads)
    want = run(optcore.adam(0.01), grads)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_found_by_name_through_its_entry_point():
    # The registry holds qhadam wrapped so that what it builds remembers the call (optcore.to_config).
    assert inspect.unwrap(optcore.get("qhadam")) is inspect.unwrap(qhadam)
    (row,) = [r for r in optcore.available("optimizer") if r.name == "qhadam"]
    assert row.distribution == "optcore-plugin-example"
    opt = optcore.get("qhadam", learning_rate=0.1)
    x = jnp.array([2.0, -3.0])
    state = opt.init(x)
    for _ in range(100):
        updates, state = opt.update(jax.grad(lambda x: jnp.sum(x**2))(x), state)
        x = optcore.apply_updates(x, updates)
    assert float(jnp.sum(x**2)) < 0.05 * 13.0  # from 13 at the start


def test_its_config_names_this_distribution_and_round_trips():
    opt = optcore.qhadam(0.1, nu1=0.8)
    config = optcore.to_config(opt)
    assert config["@name"] == "qhadam" and config["@provider"]["distribution"] == "optcore-plugin-example"
    assert config["nu1"] == 0.8
    assert optcore.to_config(optcore.from_config(config)) == config


def test_bad_hyperparameter():
    with pytest.raises(ValueError, match="nu1"):
        qhadam(0.1, nu1=1.5)


def scan_steps(opt, steps=40):
    """``steps`` steps on a quadratic in one jitted scan; the params after each step."""
    loss = lambda p: jnp.sum((p - 0.5) ** 2)  # noqa: E731

    def body(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optcore.apply_updates(params, updates)
        return (params, state), params

    def loop():
        params = jnp.linspace(-1.0, 1.5, 5, dtype=jnp.float32)
        return jax.lax.scan(body, (params, opt.init(params)), None, length=steps)[1]

    return np.asarray(jax.jit(loop)())


def test_injected_hyperparams_give_the_same_bits():
    # Not round in binary: hyperparameter arithmetic in Python double precision
    # (e.g. 1 - b1) would round differently from the injected float32 arrays.
    kwargs = dict(learning_rate=0.013, b1=0.83, b2=0.991, nu1=0.73, nu2=0.937, eps=1.3e-8)
    plain = scan_steps(qhadam(**kwargs))
    injected = scan_steps(optcore.inject_hyperparams(qhadam)(**kwargs))
    assert np.all(np.isfinite(plain))
    np.testing.assert_array_equal(plain, injected)


def test_bf16_updates_and_state_keep_their_dtypes():
    opt = qhadam(0.013, b1=0.83, b2=0.991, nu1=0.73, nu2=0.937)
    params = jnp.ones(3, jnp.bfloat16)
    state = opt.init(params)
    updates, new_state = opt.update(jnp.full(3, 0.3, jnp.bfloat16), state, params)
    assert updates.dtype == jnp.bfloat16
    assert [x.dtype for x in jax.tree.leaves(new_state)] == [x.dtype for x in jax.tree.leaves(state)]
