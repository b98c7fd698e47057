"""``inject_hyperparams(factory)(**kw)`` gives the same bits as ``factory(**kw)`` under jit (Optax issue 583).

Every float hyperparameter is given explicitly, with values that are not
round in binary, so that any hyperparameter arithmetic done in Python double
precision for the constant case (and in float32 for the injected one) shows
up as a difference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import optcore_contrib as cc

STEPS = 40

CASES = {
    "acprop": (
        cc.acprop,
        dict(learning_rate=0.013, b1=0.83, b2=0.991, eps=1.3e-8, eps_root=3.1e-9, weight_decay=0.0013),
    ),
    "ademamix": (
        cc.ademamix,
        dict(
            learning_rate=0.013, b1=0.83, b2=0.991, b3=0.9937, alpha=4.3, eps=1.3e-8, eps_root=3.1e-9,
            weight_decay=0.0013,
        ),
    ),
    "simplified_ademamix": (
        cc.simplified_ademamix,
        dict(learning_rate=0.013, b1=0.83, b2=0.937, alpha=0.73, eps=1.3e-8, eps_root=3.1e-9, weight_decay=0.0013),
    ),
    "madgrad": (cc.madgrad, dict(learning_rate=0.013, momentum=0.83, weight_decay=0.0013, eps=1.3e-6)),
    # momo was bit-identical already; kept as a regression check (it shares helpers with momo_adam).
    "momo": (cc.momo, dict(learning_rate=0.13, beta=0.83, lower_bound=0.07, weight_decay=0.0013)),
    "momo_adam": (
        cc.momo_adam,
        dict(learning_rate=0.013, b1=0.83, b2=0.991, eps=1.3e-8, lower_bound=0.07, weight_decay=0.0013),
    ),
    "sophia": (
        cc.sophia,
        dict(
            learning_rate=0.013, b1=0.83, b2=0.937, eps=1.3e-8, weight_decay=0.0013, gamma=0.83,
            clip_threshold=1.37, update_interval=3,
        ),
    ),
    "dpsgd": (
        cc.dpsgd,
        dict(learning_rate=0.013, l2_norm_clip=0.7, noise_multiplier=0.3, seed=0, momentum=0.83),
    ),
}
PER_EXAMPLE = {"dpsgd"}

# Hyperparameters that are schedules: evaluated, then converted like the floats.
SCHEDULE_CASES = {
    "ademamix": (
        cc.ademamix,
        dict(
            learning_rate=optcore.linear_schedule(0.013, 0.0031, 30),
            b1=0.83, b2=0.991,
            b3=optcore.linear_schedule(0.83, 0.9937, 30),
            alpha=optcore.linear_schedule(0.0, 4.3, 30),
            eps=1.3e-8, eps_root=3.1e-9, weight_decay=0.0013,
        ),
    ),
    "simplified_ademamix": (
        cc.simplified_ademamix,
        dict(
            learning_rate=optcore.linear_schedule(0.013, 0.0031, 30), b1=0.83, b2=0.937,
            alpha=optcore.linear_schedule(0.0, 0.73, 30), eps=1.3e-8, eps_root=3.1e-9, weight_decay=0.0013,
        ),
    ),
    "madgrad": (
        cc.madgrad,
        dict(learning_rate=optcore.linear_schedule(0.013, 0.0031, 30), momentum=0.83, weight_decay=0.0013, eps=1.3e-6),
    ),
    "momo_adam": (
        cc.momo_adam,
        dict(
            learning_rate=optcore.linear_schedule(0.013, 0.0031, 30), b1=0.83, b2=0.991, eps=1.3e-8,
            lower_bound=0.07, weight_decay=0.0013,
        ),
    ),
}


def objective(params):
    return sum(jnp.sum((leaf - 0.5) ** 2) for leaf in jax.tree.leaves(params))


def initial_params():
    return {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3), "s": jnp.full((), 1.5, jnp.float32)}


def run(opt, name):
    """STEPS steps on ``objective`` in one jitted scan; the params after each step."""

    def body(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(objective)(params)
        if name in PER_EXAMPLE:  # per-example gradients: a batch of two
            grads = jax.tree.map(lambda g: jnp.stack([g, 0.7 * g]), grads)
        updates, state = opt.update(grads, state, params, value=value, obj_fn=objective)
        params = optcore.apply_updates(params, updates)
        return (params, state), params

    def loop():
        params = initial_params()
        return jax.lax.scan(body, (params, opt.init(params)), None, length=STEPS)[1]

    return jax.jit(loop)()


def plain_and_injected(factory, kwargs, name):
    plain = run(optcore.with_extra_args_support(factory(**kwargs)), name)
    injected = run(optcore.with_extra_args_support(optcore.inject_hyperparams(factory)(**kwargs)), name)
    assert jax.tree.structure(plain) == jax.tree.structure(injected)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(plain))
    return jax.tree.leaves(plain), jax.tree.leaves(injected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_injected_hyperparams_give_the_same_bits(name):
    factory, kwargs = CASES[name]
    for x, y in zip(*plain_and_injected(factory, kwargs, name)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


@pytest.mark.parametrize("name", sorted(SCHEDULE_CASES))
def test_injected_schedules_still_work(name):
    """Schedules are evaluated, then converted to float32 like the floats.

    Only closeness is asserted: with two or more schedules in one program,
    XLA's CPU backend was seen to contract different multiply-adds into FMAs
    for the plain and the injected program (differences of 1e-7, gone with
    ``--xla_cpu_max_isa=AVX``), which no rewrite of the Python arithmetic
    controls.
    """
    factory, kwargs = SCHEDULE_CASES[name]
    for x, y in zip(*plain_and_injected(factory, kwargs, name)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_updates_and_state_keep_their_dtypes(name):
    """Float32 hyperparameters do not promote bf16 updates or state (a scan needs a fixed carry).

    The plain optimizers here; the injected ones are covered registry-wide by
    ``tests/test_dtypes.py`` and ``tests/test_inject.py``.
    """
    factory, kwargs = CASES[name]
    opt = optcore.with_extra_args_support(factory(**kwargs))
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), initial_params())
    value, grads = jax.value_and_grad(objective)(params)
    if name in PER_EXAMPLE:
        grads = jax.tree.map(lambda g: jnp.stack([g, g]), grads)
    state = opt.init(params)
    updates, new_state = jax.jit(lambda g, s, p: opt.update(g, s, p, value=value, obj_fn=objective))(
        grads, state, params
    )
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    assert [jnp.asarray(x).dtype for x in jax.tree.leaves(new_state)] == [
        jnp.asarray(x).dtype for x in jax.tree.leaves(state)
    ]
