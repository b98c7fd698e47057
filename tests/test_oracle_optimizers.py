"""Differential tests of every optimizer alias and scaling transform against Optax 0.2.8.

Same hyperparameters, 10 steps on ``{"m": (3, 4), "v": (4,)}``: the params
agree to rtol 1e-5 (float32) and the states have the same NamedTuple names,
field order, nesting and leaf shapes.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

optax = pytest.importorskip("optax")

import optcore  # noqa: E402

STEPS = 10
RTOL = 1e-5
# Hyperparameters enter optcore's arithmetic as float32 arrays (so injected and
# unwrapped optimizers agree bit for bit); Optax computes ``1 - b2`` from Python
# doubles. ``1 - float32(0.999)`` is off by 1.3e-5 relative, which moves Adam-type
# params by up to ~3e-6 after 10 steps at lr 0.1: hence an absolute tolerance
# beside rtol for params of order 1.
ATOL = 1e-5


def _params():
    m = jnp.array(np.linspace(-1.0, 1.2, 12).reshape(3, 4), jnp.float32)
    v = jnp.array([0.5, -0.3, 0.8, -1.1], jnp.float32)
    return {"m": m, "v": v}


def _loss(params):
    # A smooth, non-separable objective so the gradients change every step.
    m, v = params["m"], params["v"]
    target = jnp.arange(12.0).reshape(3, 4) / 10.0
    return 0.5 * jnp.sum((m - target) ** 2 * (1.0 + jnp.abs(v))) + jnp.sum(jnp.log1p(v**2)) + 0.1 * jnp.sum(m @ v)


def describe(tree):
    """The state's shape: NamedTuple names and fields, containers, leaf shapes."""
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return (type(tree).__name__, tuple(zip(tree._fields, (describe(x) for x in tree))))
    if isinstance(tree, (tuple, list)):
        return tuple(describe(x) for x in tree)
    if isinstance(tree, dict):
        return {k: describe(v) for k, v in sorted(tree.items())}
    return np.shape(tree)


def _run(tx, *, extra=False, step_size=None):
    params = _params()
    state = tx.init(params)
    for _ in range(STEPS):
        value, grads = jax.value_and_grad(_loss)(params)
        kwargs = {"value": value} if extra else {}
        updates, state = tx.update(grads, state, params, **kwargs)
        if step_size is not None:
            updates = jax.tree.map(lambda u: step_size * u, updates)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params, state


def _schedule(lib):
    return lib.polynomial_schedule(init_value=0.1, end_value=0.01, power=1, transition_steps=8)


# (id, factory name, args, kwargs); schedules are marked with the string "SCHEDULE".
OPTIMIZERS = [
    # AdaBelief divides by the root of (g - m)^2, which cancels: with eps=1e-16
    # optax's own float32 result is 1e-5 (relative) away from float64 here, so
    # the comparison uses an eps that keeps the problem well conditioned.
    ("adabelief", "adabelief", (0.1,), {"eps": 1e-6}),
    ("adabelief_defaults", "adabelief", (0.01,), {}),
    ("adadelta", "adadelta", (0.5,), {}),
    ("adadelta_wd", "adadelta", (0.5,), {"weight_decay": 0.05}),
    ("adafactor", "adafactor", (), {}),
    ("adafactor_full", "adafactor", (0.1,), {"min_dim_size_to_factor": 2, "momentum": 0.9, "weight_decay_rate": 0.01}),
    ("adafactor_unfactored", "adafactor", (0.05,), {"factored": False, "clipping_threshold": None}),
    ("adagrad", "adagrad", (0.1,), {}),
    ("adam", "adam", (0.1,), {}),
    ("adam_schedule", "adam", ("SCHEDULE",), {"eps_root": 1e-8}),
    ("adam_nesterov", "adam", (0.1,), {"nesterov": True}),
    ("adam_mu_bf16", "adam", (0.1,), {"mu_dtype": jnp.bfloat16}),
    ("adamax", "adamax", (0.1,), {}),
    ("adamaxw", "adamaxw", (0.1,), {"weight_decay": 0.05}),
    ("adamw", "adamw", (0.1,), {"weight_decay": 0.05}),
    ("adamw_mask", "adamw", (0.1,), {"weight_decay": 0.05, "mask": {"m": True, "v": False}}),
    ("adan", "adan", (0.1,), {"weight_decay": 0.01}),
    ("amsgrad", "amsgrad", (0.1,), {}),
    ("amsgrad_nobias", "amsgrad", (0.1,), {"bias_correction_mu": False, "bias_correction_nu": False}),
    ("fromage", "fromage", (0.1,), {}),
    ("lamb", "lamb", (0.1,), {"weight_decay": 0.01}),
    ("lars", "lars", (0.5,), {"weight_decay": 0.01}),
    ("lars_nesterov", "lars", (0.5,), {"nesterov": True, "trust_ratio_mask": {"m": True, "v": False}}),
    ("lion", "lion", (0.01,), {}),
    ("nadam", "nadam", (0.1,), {}),
    ("nadamw", "nadamw", (0.1,), {"weight_decay": 0.05}),
    ("novograd", "novograd", (0.1,), {"weight_decay": 0.01}),
    ("optimistic_adam", "optimistic_adam", (0.1,), {"optimism": 0.05}),
    ("optimistic_adam_v2", "optimistic_adam_v2", (0.1,), {"alpha": 1.0, "beta": 0.5}),
    ("optimistic_gradient_descent", "optimistic_gradient_descent", (0.1,), {"alpha": 1.0, "beta": 0.5}),
    ("radam", "radam", (0.1,), {}),
    ("radam_low_threshold", "radam", (0.1,), {"threshold": 4.5, "nesterov": True}),
    ("rmsprop", "rmsprop", (0.05,), {}),
    ("rmsprop_centered", "rmsprop", (0.05,), {"centered": True, "momentum": 0.5, "nesterov": True}),
    ("rmsprop_bias", "rmsprop", (0.05,), {"bias_correction": True, "eps_in_sqrt": False}),
    ("rmsprop_centered_bias", "rmsprop", (0.05,), {"bias_correction": True, "centered": True, "eps": 0.1}),
    ("sgd", "sgd", (0.1,), {}),
    ("sgd_momentum", "sgd", (0.1,), {"momentum": 0.9}),
    ("sgd_nesterov", "sgd", ("SCHEDULE",), {"momentum": 0.9, "nesterov": True}),
    ("sign_sgd", "sign_sgd", (0.05,), {}),
    ("signum", "signum", (0.05,), {}),
    ("sm3", "sm3", (0.1,), {}),
    ("yogi", "yogi", (0.1,), {}),
]


def _build(lib, name, args, kwargs):
    args = tuple(_schedule(lib) if a == "SCHEDULE" else a for a in args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(lib, name)(*args, **kwargs)


# Cases where optcore is deliberately more precise than Optax; each is also
# checked against a float64 NumPy reference in test_optimizers.py.
LOOSE = {
    # Optax rounds b1 * mu to bfloat16 before adding the float32 gradient term;
    # optcore adds in float32 and rounds the sum once.
    "adam_mu_bf16": 1e-2,
    # Optax mixes rho_inf from the double b2 with b2**t in float32: rho_t is off
    # by ~0.03 (1e-2 on the step, measured against float64); optcore's is 1e-4.
    "radam": 2e-2,
    "radam_low_threshold": 2e-2,
    "scale_by_radam": 2e-2,
}


def _assert_same(ours, theirs, case_id=None):
    (p1, s1), (p2, s2) = ours, theirs
    assert describe(s1) == describe(s2)
    tol = LOOSE.get(case_id, RTOL)
    for key in p1:
        np.testing.assert_allclose(
            np.asarray(p1[key]), np.asarray(p2[key]), rtol=tol, atol=max(ATOL, tol), err_msg=key
        )


@pytest.mark.parametrize("case_id,name,args,kwargs", OPTIMIZERS, ids=[c[0] for c in OPTIMIZERS])
def test_optimizer_matches_optax(case_id, name, args, kwargs):
    _assert_same(_run(_build(optcore, name, args, kwargs)), _run(_build(optax, name, args, kwargs)), case_id)


def test_polyak_sgd_matches_optax():
    kwargs = {"max_learning_rate": 0.5, "scaling": 0.8, "f_min": -1.0, "eps": 1e-3}
    _assert_same(_run(optcore.polyak_sgd(**kwargs), extra=True), _run(optax.polyak_sgd(**kwargs), extra=True))


def test_noisy_sgd_state_and_noise_free_limit_match_optax():
    # Noise streams are implementation details; with eta=0 the paths must agree.
    key = jax.random.key(0)
    ours = _run(optcore.noisy_sgd(0.1, eta=0.0, key=key))
    theirs = _run(optax.noisy_sgd(0.1, eta=0.0, key=key))
    _assert_same(ours, theirs)


TRANSFORMS = [
    ("scale", "scale", (0.5,), {}),
    ("scale_by_adadelta", "scale_by_adadelta", (), {}),
    ("scale_by_adam", "scale_by_adam", (), {"eps_root": 1e-10}),
    ("scale_by_adamax", "scale_by_adamax", (), {}),
    ("scale_by_adan", "scale_by_adan", (), {}),
    ("scale_by_amsgrad", "scale_by_amsgrad", (), {}),
    ("scale_by_belief", "scale_by_belief", (), {"nesterov": True}),
    ("scale_by_distance_over_gradients", "scale_by_distance_over_gradients", (), {"reps_rel": 0.1}),
    ("scale_by_factored_rms", "scale_by_factored_rms", (), {}),
    ("scale_by_factored_rms_factored", "scale_by_factored_rms", (), {"min_dim_size_to_factor": 2, "step_offset": 1}),
    ("scale_by_learning_rate", "scale_by_learning_rate", (0.3,), {}),
    ("scale_by_learning_rate_schedule", "scale_by_learning_rate", ("SCHEDULE",), {"flip_sign": False}),
    ("scale_by_lion", "scale_by_lion", (), {}),
    ("scale_by_lion_smooth", "scale_by_lion", (), {"mode": "smooth", "smooth_beta": 2.0}),
    ("scale_by_lion_refined", "scale_by_lion", (), {"mode": "refined"}),
    ("scale_by_novograd", "scale_by_novograd", (), {"weight_decay": 0.01}),
    ("scale_by_optimistic_gradient", "scale_by_optimistic_gradient", (), {"alpha": 0.7, "beta": 0.4}),
    ("scale_by_param_block_norm", "scale_by_param_block_norm", (), {}),
    ("scale_by_param_block_rms", "scale_by_param_block_rms", (), {}),
    ("scale_by_radam", "scale_by_radam", (), {}),
    ("scale_by_rms", "scale_by_rms", (), {}),
    ("scale_by_rms_bias", "scale_by_rms", (), {"bias_correction": True, "initial_scale": 0.1}),
    ("scale_by_rss", "scale_by_rss", (), {}),
    ("scale_by_schedule", "scale_by_schedule", ("SCHEDULE",), {}),
    ("scale_by_sign", "scale_by_sign", (), {}),
    ("scale_by_sm3", "scale_by_sm3", (), {}),
    ("scale_by_sm3_decay", "scale_by_sm3", (), {"b2": 0.9}),
    ("scale_by_stddev", "scale_by_stddev", (), {}),
    # Centered and bias-corrected, the first step's variance is 0 up to rounding:
    # a real eps keeps it defined.
    ("scale_by_stddev_bias", "scale_by_stddev", (), {"bias_correction": True, "eps": 0.1}),
    ("scale_by_trust_ratio", "scale_by_trust_ratio", (), {"trust_coefficient": 0.5}),
    ("scale_by_yogi", "scale_by_yogi", (), {}),
    ("centralize", "centralize", (), {}),
    ("normalize_by_update_norm", "normalize_by_update_norm", (), {"scale_factor": 2.0}),
]


@pytest.mark.parametrize("case_id,name,args,kwargs", TRANSFORMS, ids=[c[0] for c in TRANSFORMS])
def test_transform_matches_optax(case_id, name, args, kwargs):
    ours = _run(_build(optcore, name, args, kwargs), step_size=-0.05)
    theirs = _run(_build(optax, name, args, kwargs), step_size=-0.05)
    _assert_same(ours, theirs, case_id)


def test_scale_by_polyak_matches_optax():
    kwargs = {"f_min": -0.5, "max_learning_rate": 0.3, "variant": "sps+"}
    ours = _run(optcore.scale_by_polyak(**kwargs), extra=True, step_size=-1.0)
    theirs = _run(optax.scale_by_polyak(**kwargs), extra=True, step_size=-1.0)
    _assert_same(ours, theirs)


def test_factored_rms_on_rank3_leaf_matches_optax():
    params = {"w": jnp.array(np.random.RandomState(0).randn(5, 2, 4), jnp.float32)}
    grads = jax.tree.map(lambda p: jnp.sin(3 * p) + 0.1, params)
    results = []
    for lib in (optcore, optax):
        tx = lib.scale_by_factored_rms(min_dim_size_to_factor=2)
        state = tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, params)
        results.append((updates, state))
    assert describe(results[0][1]) == describe(results[1][1])
    np.testing.assert_allclose(results[0][0]["w"], results[1][0]["w"], rtol=RTOL)


def test_rprop_state_matches_optax_and_update_is_current_step():
    # Optax 0.2.8 emits the previous step's update (PR 1725); the states agree
    # and optcore's update is the step the state records.
    params = _params()
    ours, theirs = optcore.scale_by_rprop(0.1), optax.scale_by_rprop(0.1)
    s1, s2 = ours.init(params), theirs.init(params)
    for i in range(STEPS):
        grads = jax.tree.map(lambda p: jnp.cos(p * (i + 1)), params)
        u1, s1 = ours.update(grads, s1, params)
        _, s2 = theirs.update(grads, s2, params)
        assert describe(s1) == describe(s2)
        for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
            np.testing.assert_allclose(a, b, rtol=RTOL)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(s1.prev_updates)):
            np.testing.assert_array_equal(a, b)
    opt_ours, opt_theirs = optcore.rprop(0.1), optax.rprop(0.1)
    assert describe(opt_ours.init(params)) == describe(opt_theirs.init(params))


def test_scale_gradient_matches_optax():
    x = jnp.array([1.0, -2.0, 3.0])
    f = lambda lib: jax.grad(lambda y: jnp.sum(jnp.sin(lib.scale_gradient(y, 0.25)) ** 2))(x)  # noqa: E731
    np.testing.assert_allclose(f(optcore), f(optax), rtol=RTOL)
    np.testing.assert_array_equal(optcore.scale_gradient(x, 0.25), x)


@pytest.mark.parametrize("name", ["adam", "adamw", "lion", "sgd", "lamb", "rmsprop", "adafactor", "sm3", "lars"])
def test_alias_signatures_match_optax(name):
    import inspect

    ours = inspect.signature(getattr(optcore, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    for pname, param in theirs.items():
        assert pname in ours, pname
        assert ours[pname].kind == param.kind, pname
        if param.default is not inspect.Parameter.empty:
            assert ours[pname].default == param.default, pname


def test_radam_threshold_below_four_stays_finite_where_optax_gives_nan():
    # rho_t < 4 makes the rectifier's radicand negative; optcore falls back to
    # the momentum step there instead of returning NaN.
    ours = _run(optcore.radam(0.1, threshold=0.5))[0]
    theirs = _run(optax.radam(0.1, threshold=0.5))[0]
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(ours))
    assert not all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(theirs))
