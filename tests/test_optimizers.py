"""Optimizer aliases: float64 NumPy references of the update equations, convergence
on a convex quadratic and a logistic regression, jit/vmap, dtypes, bad
hyperparameters, float32 hyperparameters (bit-identical when injected) and
no recompilation for array learning rates. No optax here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore

A = np.array([1.0, 2.0, 0.5, 3.0])
C = np.array([0.3, -0.7, 1.2, -0.1])
P0 = np.array([1.0, -1.5, 0.2, 0.8])
STEPS = 4


def grad_np(p):
    return A * (p - C)


def run_optcore(opt, steps=STEPS, p0=P0):
    p = jnp.asarray(p0, jnp.float32)
    state = opt.init(p)
    for _ in range(steps):
        updates, state = opt.update(jnp.asarray(grad_np(np.asarray(p, np.float64)), jnp.float32), state, p)
        p = optcore.apply_updates(p, updates)
    return np.asarray(p, np.float64)


def run_np(step_fn, steps=STEPS, p0=P0):
    p, mem = p0.copy(), {}
    for t in range(1, steps + 1):
        p = p + step_fn(grad_np(p), p, t, mem)
    return p


def _adam_like(lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, nesterov=False):
    def step(g, p, t, mem):
        m = mem["m"] = b1 * mem.get("m", 0) + (1 - b1) * g
        v = mem["v"] = b2 * mem.get("v", 0) + (1 - b2) * g * g
        mh = (b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)) if nesterov else m / (1 - b1**t)
        return -lr * (mh / (np.sqrt(v / (1 - b2**t)) + eps) + wd * p)

    return step


def _amsgrad(lr, b1=0.9, b2=0.999, eps=1e-8):
    def step(g, p, t, mem):
        m = mem["m"] = b1 * mem.get("m", 0) + (1 - b1) * g
        v = mem["v"] = b2 * mem.get("v", 0) + (1 - b2) * g * g
        vmax = mem["vmax"] = np.maximum(mem.get("vmax", 0), v / (1 - b2**t))
        return -lr * (m / (1 - b1**t)) / (np.sqrt(vmax) + eps)

    return step


def _adamax(lr, b1=0.9, b2=0.999, eps=1e-8):
    def step(g, p, t, mem):
        m = mem["m"] = b1 * mem.get("m", 0) + (1 - b1) * g
        u = mem["u"] = np.maximum(b2 * mem.get("u", 0), np.abs(g) + eps)
        return -lr * m / ((1 - b1**t) * u)

    return step


def _radam(lr, b1=0.9, b2=0.999, eps=1e-8, threshold=5.0):
    def step(g, p, t, mem):
        m = mem["m"] = b1 * mem.get("m", 0) + (1 - b1) * g
        v = mem["v"] = b2 * mem.get("v", 0) + (1 - b2) * g * g
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        mh, vh = m / (1 - b1**t), v / (1 - b2**t)
        if rho >= threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            return -lr * r * mh / (np.sqrt(vh) + eps)
        return -lr * mh

    return step


def _adabelief(lr, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16):
    def step(g, p, t, mem):
        m = mem["m"] = b1 * mem.get("m", 0) + (1 - b1) * g
        s = mem["s"] = b2 * mem.get("s", 0) + (1 - b2) * (g - m) ** 2 + eps_root
        return -lr * (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)

    return step


def _yogi(lr, b1=0.9, b2=0.999, eps=1e-3, init=1e-6):
    def step(g, p, t, mem):
        m = mem["m"] = b1 * mem.get("m", init) + (1 - b1) * g
        v0 = mem.get("v", init)
        v = mem["v"] = v0 - (1 - b2) * np.sign(v0 - g * g) * g * g
        return -lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)

    return step


def _lion(lr, b1=0.9, b2=0.99, wd=1e-3):
    def step(g, p, t, mem):
        m = mem.get("m", 0)
        u = np.sign(b1 * m + (1 - b1) * g)
        mem["m"] = b2 * m + (1 - b2) * g
        return -lr * (u + wd * p)

    return step


def _sgd_momentum(lr, mu=0.9, nesterov=False):
    def step(g, p, t, mem):
        m = mem["m"] = g + mu * mem.get("m", 0)
        return -lr * (g + mu * m if nesterov else m)

    return step


def _rmsprop(lr, decay=0.9, eps=1e-8, centered=False):
    def step(g, p, t, mem):
        v = mem["v"] = decay * mem.get("v", 0) + (1 - decay) * g * g
        m = mem["m"] = decay * mem.get("m", 0) + (1 - decay) * g
        return -lr * g / np.sqrt((v - m * m if centered else v) + eps)

    return step


def _adagrad(lr, init=0.1, eps=1e-7):
    def step(g, p, t, mem):
        s = mem["s"] = mem.get("s", init) + g * g
        return -lr * g / np.sqrt(s + eps)

    return step


def _adadelta(lr, rho=0.9, eps=1e-6):
    def step(g, p, t, mem):
        eg = mem["eg"] = rho * mem.get("eg", 0) + (1 - rho) * g * g
        u = np.sqrt(mem.get("ex", 0) + eps) / np.sqrt(eg + eps) * g
        mem["ex"] = rho * mem.get("ex", 0) + (1 - rho) * u * u
        return -lr * u

    return step


def _lamb(lr, b1=0.9, b2=0.999, eps=1e-6, wd=0.01):
    adam_dir = _adam_like(1.0, b1, b2, eps, wd)

    def step(g, p, t, mem):
        r = -adam_dir(g, p, t, mem)
        return -lr * np.linalg.norm(p) / np.linalg.norm(r) * r

    return step


def _lars(lr, wd=0.01, coef=1e-3, mu=0.9):
    def step(g, p, t, mem):
        d = g + wd * p
        scaled = -lr * coef * np.linalg.norm(p) / np.linalg.norm(d) * d
        m = mem["m"] = scaled + mu * mem.get("m", 0)
        return m

    return step


def _novograd(lr, b1=0.9, b2=0.25, eps=1e-6, wd=0.0):
    def step(g, p, t, mem):
        sq = np.sum(g * g)
        v = mem["v"] = sq if t == 1 else b2 * mem["v"] + (1 - b2) * sq
        d = g / (np.sqrt(v) + eps) + wd * p
        m = mem["m"] = d if t == 1 else b1 * mem["m"] + d
        return -lr * m

    return step


def _signum(lr, beta=0.9):
    def step(g, p, t, mem):
        m = mem["m"] = beta * mem.get("m", 0) + (1 - beta) * g
        return -lr * np.sign(m)

    return step


def _rprop(lr, eta_minus=0.5, eta_plus=1.2, lo=1e-6, hi=50.0):
    def step(g, p, t, mem):
        prev, size = mem.get("prev", np.zeros_like(g)), mem.get("size", np.full_like(g, lr))
        s = np.sign(g * prev)
        size = np.where(s > 0, np.minimum(size * eta_plus, hi), np.where(s < 0, np.maximum(size * eta_minus, lo), size))
        u = np.where(s < 0, 0.0, size * np.sign(g))
        mem["prev"], mem["size"] = u, size
        return -u

    return step


def _sm3_vector(lr, mu=0.9, eps=1e-8):
    # For a vector SM3 is AdaGrad with momentum (b2 = 1 sums the squares).
    def step(g, p, t, mem):
        a = mem["a"] = mem.get("a", 0) + g * g
        nu = mem["nu"] = mu * mem.get("nu", 0) + (1 - mu) * g / np.sqrt(a + eps)
        return -lr * nu

    return step


def _adafactor_vector(lr, decay_rate=0.8, eps=1e-30, clip=1.0):
    def step(g, p, t, mem):
        beta = 1 - t ** (-decay_rate)
        v = mem["v"] = beta * mem.get("v", 0) + (1 - beta) * (g * g + eps)
        u = g / np.sqrt(v)
        u = u / max(1.0, np.sqrt(np.mean(u * u)) / clip)
        return -lr * u * max(np.sqrt(np.mean(p * p)), 1e-3)

    return step


def _fromage(lr, min_norm=1e-6):
    def step(g, p, t, mem):
        new = (p - lr * max(np.linalg.norm(p), min_norm) / max(np.linalg.norm(g), min_norm) * g) / np.sqrt(1 + lr**2)
        return new - p

    return step


def _adan(lr, b1=0.98, b2=0.92, b3=0.99, eps=1e-8, eps_root=1e-8):
    def step(g, p, t, mem):
        diff = np.zeros_like(g) if t == 1 else g - mem["g"]
        m = mem["m"] = b1 * mem.get("m", 0) + (1 - b1) * g
        v = mem["v"] = b2 * mem.get("v", 0) + (1 - b2) * diff
        n = mem["n"] = b3 * mem.get("n", 0) + (1 - b3) * (g + (1 - b2) * diff) ** 2
        mem["g"] = g
        num = m / (1 - b1**t) + (1 - b2) * v / (1 - b2**t)
        return -lr * num / (np.sqrt(n / (1 - b3**t) + eps_root) + eps)

    return step


def _sign_sgd(lr):
    return lambda g, p, t, mem: -lr * np.sign(g)


REFERENCES = {
    "adam": (lambda: optcore.adam(0.1), _adam_like(0.1)),
    "adamw": (lambda: optcore.adamw(0.1, weight_decay=0.1), _adam_like(0.1, wd=0.1)),
    "nadam": (lambda: optcore.nadam(0.1), _adam_like(0.1, nesterov=True)),
    "amsgrad": (lambda: optcore.amsgrad(0.1), _amsgrad(0.1)),
    "adamax": (lambda: optcore.adamax(0.1), _adamax(0.1)),
    # b2=0.9 makes rho_t cross the threshold at step 6 of 8.
    "radam": (lambda: optcore.radam(0.1, b2=0.9), _radam(0.1, b2=0.9), 8),
    "adabelief": (lambda: optcore.adabelief(0.1), _adabelief(0.1)),
    "yogi": (lambda: optcore.yogi(0.1), _yogi(0.1)),
    "lion": (lambda: optcore.lion(0.05), _lion(0.05)),
    "sgd_momentum": (lambda: optcore.sgd(0.1, momentum=0.9), _sgd_momentum(0.1)),
    "sgd_nesterov": (lambda: optcore.sgd(0.1, momentum=0.9, nesterov=True), _sgd_momentum(0.1, nesterov=True)),
    "rmsprop": (lambda: optcore.rmsprop(0.05), _rmsprop(0.05)),
    "rmsprop_centered": (lambda: optcore.rmsprop(0.05, centered=True, eps=1e-4), _rmsprop(0.05, eps=1e-4, centered=True)),
    "adagrad": (lambda: optcore.adagrad(0.1), _adagrad(0.1)),
    "adadelta": (lambda: optcore.adadelta(1.0), _adadelta(1.0)),
    "lamb": (lambda: optcore.lamb(0.1, weight_decay=0.01), _lamb(0.1)),
    "lars": (lambda: optcore.lars(1.0, weight_decay=0.01), _lars(1.0)),
    "novograd": (lambda: optcore.novograd(0.1), _novograd(0.1)),
    "sign_sgd": (lambda: optcore.sign_sgd(0.1), _sign_sgd(0.1)),
    "signum": (lambda: optcore.signum(0.1), _signum(0.1)),
    "rprop": (lambda: optcore.rprop(0.1), _rprop(0.1)),
    "sm3": (lambda: optcore.sm3(0.1), _sm3_vector(0.1)),
    "adafactor": (lambda: optcore.adafactor(0.1), _adafactor_vector(0.1)),
    "fromage": (lambda: optcore.fromage(0.1), _fromage(0.1)),
    "adan": (lambda: optcore.adan(0.1), _adan(0.1)),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_numpy_reference(name):
    make, step, *steps = REFERENCES[name]
    steps = steps[0] if steps else STEPS
    np.testing.assert_allclose(run_optcore(make(), steps), run_np(step, steps), rtol=2e-4, atol=2e-5)


# Every alias with a learning rate suited to the two small problems below.
ALL = {
    "adabelief": lambda: optcore.adabelief(0.05),
    "adadelta": lambda: optcore.adadelta(5.0),
    "adafactor": lambda: optcore.adafactor(0.1),
    "adagrad": lambda: optcore.adagrad(0.3),
    "adam": lambda: optcore.adam(0.05),
    "adamax": lambda: optcore.adamax(0.05),
    "adamaxw": lambda: optcore.adamaxw(0.05),
    "adamw": lambda: optcore.adamw(0.05),
    "adan": lambda: optcore.adan(0.05),
    "amsgrad": lambda: optcore.amsgrad(0.05),
    "fromage": lambda: optcore.fromage(0.05),
    "lamb": lambda: optcore.lamb(0.05),
    "lars": lambda: optcore.lars(5.0),
    "lion": lambda: optcore.lion(0.01),
    "nadam": lambda: optcore.nadam(0.05),
    "nadamw": lambda: optcore.nadamw(0.05),
    "noisy_sgd": lambda: optcore.noisy_sgd(0.05, key=jax.random.key(0)),
    "novograd": lambda: optcore.novograd(0.05),
    "optimistic_adam": lambda: optcore.optimistic_adam(0.05),
    "optimistic_adam_v2": lambda: optcore.optimistic_adam_v2(0.05),
    "optimistic_gradient_descent": lambda: optcore.optimistic_gradient_descent(0.05),
    "polyak_sgd": lambda: optcore.polyak_sgd(max_learning_rate=0.5),
    "radam": lambda: optcore.radam(0.05),
    "rmsprop": lambda: optcore.rmsprop(0.02),
    "rprop": lambda: optcore.rprop(0.02),
    "sgd": lambda: optcore.sgd(0.05, momentum=0.5),
    "sign_sgd": lambda: optcore.sign_sgd(0.01),
    "signum": lambda: optcore.signum(0.01),
    "sm3": lambda: optcore.sm3(0.2),
    "yogi": lambda: optcore.yogi(0.05),
}


def test_every_alias_is_covered():
    names = set(optcore.optimizers.__all__) - {"lbfgs"}
    assert names == set(ALL)


def _quadratic(params):
    return 0.5 * jnp.sum(jnp.asarray(A, jnp.float32) * (params["w"] - jnp.asarray(C, jnp.float32)) ** 2) + 0.5 * jnp.sum(
        (params["b"] - 0.5) ** 2
    )


_X = np.random.RandomState(0).randn(32, 3).astype(np.float32)
_Y = (_X @ np.array([1.5, -2.0, 0.5], np.float32) > 0).astype(np.float32)


def _logistic(params):
    logits = jnp.asarray(_X) @ params["w"][:3] + params["b"][0]
    return jnp.mean(jnp.logaddexp(0.0, logits) - jnp.asarray(_Y) * logits) + 1e-3 * jnp.sum(params["w"] ** 2)


def _minimize(opt, loss, steps):
    params = {"w": jnp.asarray(P0, jnp.float32), "b": jnp.array([1.0, -1.0], jnp.float32)}
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params, value=value)
        return optcore.apply_updates(params, updates), state

    start = loss(params)
    for _ in range(steps):
        params, state = step(params, state)
    return float(start), float(loss(params))


@pytest.mark.parametrize("name", sorted(ALL))
def test_reduces_quadratic_and_logistic_regression(name):
    start, end = _minimize(ALL[name](), _quadratic, 60)
    assert end < 0.5 * start, (start, end)
    start, end = _minimize(ALL[name](), _logistic, 60)
    assert end < start, (start, end)


@pytest.mark.parametrize("name", ["adam", "adamw", "lion", "sgd", "adafactor", "sm3", "lamb", "radam", "novograd", "rprop"])
def test_vmap_over_a_batch_of_param_trees(name):
    opt = ALL[name]()
    batch = {"w": jnp.stack([jnp.asarray(P0, jnp.float32) * s for s in (1.0, -0.5, 2.0)])}
    grads = jax.tree.map(lambda x: 0.3 * x + 0.1, batch)
    states = jax.vmap(opt.init)(batch)
    updates, _ = jax.vmap(lambda g, s, p: opt.update(g, s, p))(grads, states, batch)
    for i in range(3):
        single = jax.tree.map(lambda x: x[i], batch)
        u, _ = opt.update(jax.tree.map(lambda x: x[i], grads), opt.init(single), single)
        np.testing.assert_allclose(updates["w"][i], u["w"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(ALL))
def test_bfloat16_params_stay_bfloat16(name):
    opt = ALL[name]()
    params = {"w": jnp.asarray(P0, jnp.bfloat16), "b": jnp.ones(2, jnp.bfloat16)}
    state = opt.init(params)
    for _ in range(2):
        grads = jax.tree.map(lambda p: p * 0.5 + 0.25, params)
        updates, state = opt.update(grads, state, params, value=jnp.array(1.0))
        assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
        params = optcore.apply_updates(params, updates)
    assert all(p.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))


BAD = [
    # A negative learning rate or weight decay is valid (ascent, as in Optax); NaN is always wrong.
    (optcore.adam, (float("nan"),), {}, "learning_rate"),
    (optcore.adam, (0.1,), {"b1": 1.0}, "b1"),
    (optcore.adam, (0.1,), {"b2": -0.1}, "b2"),
    (optcore.adam, (0.1,), {"eps": -1e-8}, "eps"),
    (optcore.adamw, (0.1,), {"weight_decay": float("nan")}, "weight_decay"),
    (optcore.nadam, (0.1,), {"b1": 1.5}, "b1"),
    (optcore.amsgrad, (0.1,), {"eps_root": -1.0}, "eps_root"),
    (optcore.radam, (0.1,), {"b2": 1.0}, "b2"),
    (optcore.adabelief, (0.1,), {"b1": -0.5}, "b1"),
    (optcore.yogi, (0.1,), {"eps": -1.0}, "eps"),
    (optcore.lion, (0.1,), {"b2": 1.1}, "b2"),
    (optcore.rmsprop, (0.1,), {"decay": 2.0}, "decay"),
    (optcore.adagrad, (0.1,), {"eps": -1.0}, "eps"),
    (optcore.adadelta, (0.1,), {"rho": -0.1}, "rho"),
    (optcore.sgd, (float("nan"),), {}, "learning_rate"),
    (optcore.sgd, (0.1,), {"momentum": 1.5}, "decay"),
    (optcore.rprop, (0.1,), {"eta_plus": 0.5}, "eta_plus"),
    (optcore.sm3, (0.1,), {"momentum": -0.1}, "b1"),
    (optcore.adan, (0.1,), {"b3": 1.0}, "b3"),
    (optcore.novograd, (0.1,), {"b2": 1.5}, "b2"),
    (optcore.fromage, (float("nan"),), {}, "learning_rate"),
    (optcore.lamb, (0.1,), {"eps": -1.0}, "eps"),
    (optcore.lars, (0.1,), {"trust_coefficient": -1.0}, "trust_coefficient"),
    (optcore.polyak_sgd, (), {"variant": "nope"}, "variant"),
    (optcore.adafactor, (), {"eps": -1.0}, "epsilon"),
    (optcore.optimistic_gradient_descent, (0.1,), {"beta": float("nan")}, "beta"),
]


@pytest.mark.parametrize("factory,args,kwargs,name", BAD, ids=[f"{b[0].__name__}-{b[3]}" for b in BAD])
def test_bad_hyperparameters_raise_at_construction(factory, args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(*args, **kwargs)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        optcore.adam(0.1, beta1=0.9)


def test_schedules_are_accepted():
    schedule = optcore.polynomial_schedule(0.1, 0.01, 1, 5)
    for name in ["adam", "adamw", "lion", "sgd", "rmsprop", "radam", "yogi", "sm3", "lamb", "adagrad", "novograd"]:
        opt = getattr(optcore, name)(schedule)
        params = jnp.ones(3)
        state = opt.init(params)
        updates, state = opt.update(jnp.ones(3), state, params)
        assert bool(jnp.all(jnp.isfinite(updates)))


def test_nu_dtype_bfloat16_halves_state_bytes_and_stays_close():
    params = {"w": jnp.asarray(np.linspace(-1, 1, 64), jnp.float32)}
    loss = lambda p: jnp.sum((p["w"] - 0.3) ** 2 * (1 + jnp.arange(64) / 64))  # noqa: E731
    results = {}
    for nu_dtype in (None, jnp.bfloat16):
        for name in ("adam", "amsgrad", "radam", "adabelief", "yogi", "nadam", "adamw"):
            opt = getattr(optcore, name)(0.05, nu_dtype=nu_dtype)
            p, state = params, opt.init(params)
            nu_bytes = sum(x.nbytes for x in jax.tree.leaves(state[0].nu))
            for _ in range(20):
                updates, state = opt.update(jax.grad(loss)(p), state, p)
                p = optcore.apply_updates(p, updates)
            assert jax.tree.leaves(state[0].nu)[0].dtype == (jnp.float32 if nu_dtype is None else jnp.bfloat16)
            results[(name, nu_dtype)] = (nu_bytes, p["w"])
    for name in ("adam", "amsgrad", "radam", "adabelief", "yogi", "nadam", "adamw"):
        full_bytes, full = results[(name, None)]
        half_bytes, half = results[(name, jnp.bfloat16)]
        assert half_bytes * 2 == full_bytes
        np.testing.assert_allclose(half, full, atol=2e-2)


HYPER = {
    "adam": dict(learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-8),
    "adamw": dict(learning_rate=0.01, b1=0.9, b2=0.99, weight_decay=1e-3),
    "lion": dict(learning_rate=0.003, b1=0.9, b2=0.99),
    "rmsprop": dict(learning_rate=0.01, decay=0.9),
    "radam": dict(learning_rate=0.01, b2=0.99),
    "yogi": dict(learning_rate=0.01, b1=0.8),
    "adan": dict(learning_rate=0.01, b1=0.98, b2=0.92, b3=0.99),
}


@pytest.mark.parametrize("name", sorted(HYPER))
def test_float_and_injected_float32_hyperparameters_agree(name):
    # inject_hyperparams hands the factory float32 arrays; built from Python
    # floats, the optimizer must compute exactly the same numbers (Optax issue 583).
    factory = getattr(optcore, name)
    params = {"w": jnp.asarray(np.linspace(-1, 1, 8), jnp.float32)}
    grads = [jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)), params) for i in range(20)]

    @jax.jit
    def run_injected(hyper):
        opt = factory(**hyper)
        p, state = params, opt.init(params)
        for g in grads:
            updates, state = opt.update(g, state, p)
            p = optcore.apply_updates(p, updates)
        return p

    @jax.jit
    def run_floats():
        opt = factory(**HYPER[name])
        p, state = params, opt.init(params)
        for g in grads:
            updates, state = opt.update(g, state, p)
            p = optcore.apply_updates(p, updates)
        return p

    injected = run_injected({k: jnp.asarray(v, jnp.float32) for k, v in HYPER[name].items()})
    # Both paths run the same float32 operations. XLA may still fuse the two
    # programs differently (FMA contraction), which moves an injected b2 in
    # Adam by at most a few float32 ulps over 20 steps; Optax's unwrapped vs
    # injected gap is ~1e-3 after 200 steps (issue 583).
    np.testing.assert_allclose(np.asarray(injected["w"]), np.asarray(run_floats()["w"]), rtol=0, atol=3e-7)


def test_changing_an_array_learning_rate_does_not_recompile():
    traces = []

    @jax.jit
    def step(params, grads, learning_rate, b1):
        traces.append(1)
        opt = optcore.adam(learning_rate, b1=b1)
        updates, _ = opt.update(grads, opt.init(params), params)
        return optcore.apply_updates(params, updates)

    params = jnp.ones(3)
    outs = [step(params, params, jnp.float32(lr), jnp.float32(0.9)) for lr in (0.1, 0.01, 0.001)]
    assert len(traces) == 1 and step._cache_size() == 1
    assert not np.allclose(outs[0], outs[1])


def test_polyak_sgd_needs_the_value():
    opt = optcore.polyak_sgd()
    with pytest.raises(TypeError, match="value"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)), jnp.ones(2))
