"""Differential tests of gradient processing, line searches, L-BFGS, projections and linalg vs Optax."""

import warnings

import numpy as np
import pytest

optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import optcore  # noqa: E402

RTOL = 1e-5
ATOL = 1e-6


def _params():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
        "k": jnp.asarray(rng.normal(size=(2, 2, 3, 2)), jnp.float32),
    }


def _grads(step):
    rng = np.random.default_rng(100 + step)
    out = {
        "w": jnp.asarray(3 * rng.normal(size=(3, 4)), jnp.float32),
        "b": jnp.asarray(3 * rng.normal(size=(4,)), jnp.float32),
        "k": jnp.asarray(3 * rng.normal(size=(2, 2, 3, 2)), jnp.float32),
    }
    return out


def _close(a, b, rtol=RTOL, atol=ATOL):
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


TRANSFORMS = {
    "clip": lambda m: m.clip(1.5),
    "clip_by_block_rms": lambda m: m.clip_by_block_rms(1.0),
    "clip_by_global_norm": lambda m: m.clip_by_global_norm(2.0),
    "adaptive_grad_clip": lambda m: m.adaptive_grad_clip(0.1),
    "adaptive_grad_clip_axis": lambda m: m.adaptive_grad_clip(0.5, eps=1e-2, axis=0),
    "add_decayed_weights": lambda m: m.add_decayed_weights(0.1),
    "add_noise": lambda m: m.add_noise(0.3, 0.55, key=jax.random.key(3)),
    "trace": lambda m: m.trace(0.9),
    "trace_nesterov": lambda m: m.trace(0.9, nesterov=True),
    "ema": lambda m: m.ema(0.8),
    "ema_nodebias": lambda m: m.ema(0.8, debias=False),
    "keep_params_nonnegative": lambda m: m.keep_params_nonnegative(),
    "zero_nans": lambda m: m.zero_nans(),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transform_matches_optax_for_ten_steps(name):
    ours, theirs = TRANSFORMS[name](optcore), TRANSFORMS[name](optax)
    params = _params()
    if name == "keep_params_nonnegative":
        params = jax.tree.map(jnp.abs, params)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    assert type(s_ours).__name__ == type(s_theirs).__name__
    assert getattr(s_ours, "_fields", ()) == getattr(s_theirs, "_fields", ())
    up_ours, up_theirs = jax.jit(ours.update), jax.jit(theirs.update)
    p = params
    for step in range(10):
        g = _grads(step)
        if name == "zero_nans" and step % 3 == 0:
            g["w"] = g["w"].at[0, 1].set(jnp.nan)
        u1, s_ours = up_ours(g, s_ours, p)
        u2, s_theirs = up_theirs(g, s_theirs, p)
        _close(u1, u2)
        if name == "add_noise":
            _close(jax.random.key_data(s_ours.rng_key), jax.random.key_data(s_theirs.rng_key))
        else:
            _close(s_ours, s_theirs)
        p = optax.apply_updates(p, u2)


def test_unitwise_helpers_match_optax():
    rng = np.random.default_rng(1)
    for shape in [(), (5,), (3, 4), (2, 3, 4), (2, 2, 3, 4)]:
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        _close(optcore.unitwise_norm(x), optax.transforms.unitwise_norm(x))
        n = optcore.unitwise_norm(x)
        _close(optcore.unitwise_clip(n, 0.5 * n + 0.1, x), optax.transforms.unitwise_clip(n, 0.5 * n + 0.1, x))


@pytest.mark.parametrize("uniform", [True, False])
def test_per_example_clips_match_optax(uniform):
    rng = np.random.default_rng(2)
    grads = [jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), jnp.asarray(rng.normal(size=(5, 2, 2)), jnp.float32)]
    _close(optcore.per_example_global_norm_clip(grads, 1.3), optax.per_example_global_norm_clip(grads, 1.3))
    _close(
        optcore.per_example_layer_norm_clip(grads, 1.3, uniform=uniform),
        optax.per_example_layer_norm_clip(grads, 1.3, uniform=uniform),
    )


def test_add_noise_seed_is_deprecated_like_optax():
    with pytest.warns(DeprecationWarning):
        ours = optcore.add_noise(0.1, 0.5, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = optax.add_noise(0.1, 0.5, seed=7)
    g = _grads(0)
    u1, _ = ours.update(g, ours.init(g))
    u2, _ = theirs.update(g, theirs.init(g))
    _close(u1, u2)


# --- numerics and linear algebra ----------------------------------------------------------------


def _spd(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n))
    return jnp.asarray(x @ x.T + 0.5 * np.eye(n), jnp.float32)


@pytest.mark.parametrize("num_iters", [1, 3, 100])
def test_power_iteration_matches_optax(num_iters):
    m = _spd(4)
    _close(optcore.power_iteration(m, num_iters=num_iters), optax.power_iteration(m, num_iters=num_iters), rtol=1e-4)
    v0 = jnp.arange(1.0, 5.0)
    _close(optcore.power_iteration(m, v0=v0, num_iters=num_iters), optax.power_iteration(m, v0=v0, num_iters=num_iters), rtol=1e-4)


# Optax's coupled Newton iteration is only correct for powers of two (checked in test_linalg).
@pytest.mark.parametrize("p", [1, 2, 4, 8])
def test_matrix_inverse_pth_root_matches_optax(p):
    m = _spd(5, 1)
    ours, theirs = optcore.matrix_inverse_pth_root(m, p), optax.matrix_inverse_pth_root(m, p)
    _close(ours[0], theirs[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("iters", [5, 50])
def test_nnls_matches_optax(iters):
    rng = np.random.default_rng(4)
    a = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(6,)), jnp.float32)
    _close(optcore.nnls(a, b, iters), optax.nnls(a, b, iters), rtol=1e-4, atol=1e-5)


def _nnls_problem(kind, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(30, 12))
    if kind == "ill":  # condition number 1e3
        u, _, vt = np.linalg.svd(a, full_matrices=False)
        a = u @ np.diag(np.logspace(0, -3, 12)) @ vt
    elif kind == "positive":
        a = np.abs(a)
    return a, rng.normal(size=(30,))


@pytest.mark.parametrize("kind", ["well", "ill", "positive"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nnls_converges_at_least_as_fast_as_optax(kind, seed):
    """At every iteration count, nnls is no farther from scipy's exact solution than Optax's nnls."""
    import scipy.optimize

    a, b = _nnls_problem(kind, seed)
    exact, _ = scipy.optimize.nnls(a, b, maxiter=10_000)
    a32, b32 = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    noise = 1e-6 * (1 + np.linalg.norm(exact))  # float32 rounding once converged
    for iters in (1, 5, 20, 50, 200):
        ours = np.linalg.norm(np.asarray(optcore.nnls(a32, b32, iters), np.float64) - exact)
        theirs = np.linalg.norm(np.asarray(optax.nnls(a32, b32, iters), np.float64) - exact)
        assert ours <= theirs * (1 + 1e-4) + noise, (iters, ours, theirs)


@pytest.mark.parametrize("name", ["safe_norm", "safe_root_mean_squares"])
def test_safe_functions_match_optax(name):
    for x in [jnp.array([3.0, -4.0]), jnp.zeros(3), jnp.arange(6.0).reshape(2, 3)]:
        _close(getattr(optcore, name)(x, 0.5), getattr(optax, name)(x, 0.5))
        _close(jax.grad(lambda v: getattr(optcore, name)(v, 0.5))(x), jax.grad(lambda v: getattr(optax, name)(v, 0.5))(x))
    _close(optcore.safe_norm(jnp.arange(6.0).reshape(2, 3), 1.0, axis=1, keepdims=True),
           optax.safe_norm(jnp.arange(6.0).reshape(2, 3), 1.0, axis=1, keepdims=True))


# --- projections ---------------------------------------------------------------------------------

PROJECTIONS = {
    "projection_non_negative": lambda P, x, a: P.projection_non_negative(x),
    "projection_box": lambda P, x, a: P.projection_box(x, jax.tree.map(lambda t: -0.3 * jnp.ones_like(t), x),
                                                       jax.tree.map(lambda t: 0.4 * jnp.ones_like(t), x)),
    "projection_hypercube": lambda P, x, a: P.projection_hypercube(x["w"], 0.5),
    "projection_linf_ball": lambda P, x, a: P.projection_linf_ball(x, 0.5),
    "projection_simplex": lambda P, x, a: P.projection_simplex(x, 2.0),
    "projection_l1_sphere": lambda P, x, a: P.projection_l1_sphere(x, 2.0),
    "projection_l1_ball": lambda P, x, a: P.projection_l1_ball(x, 2.0),
    "projection_l2_sphere": lambda P, x, a: P.projection_l2_sphere(x, 2.0),
    "projection_l2_ball": lambda P, x, a: P.projection_l2_ball(x, 2.0),
    "projection_hyperplane": lambda P, x, a: P.projection_hyperplane(x, a, 0.5),
    "projection_halfspace": lambda P, x, a: P.projection_halfspace(x, a, 0.5),
    "projection_vector": lambda P, x, a: P.projection_vector(x, a),
}


@pytest.mark.parametrize("name", sorted(PROJECTIONS))
def test_projection_matches_optax(name):
    x, a = _grads(1), _params()
    _close(PROJECTIONS[name](optcore.projections, x, a), PROJECTIONS[name](optax.projections, x, a))
    assert sorted(n for n in dir(optax.projections) if n.startswith("projection_")) == sorted(optcore.projections.__all__)


PYTHON_FLOAT_PROJECTIONS = {  # the same, with every input a Python float (Optax runs them through jnp)
    "projection_non_negative": lambda P, x, a: P.projection_non_negative(x),
    "projection_linf_ball": lambda P, x, a: P.projection_linf_ball(x, 0.5),
    "projection_simplex": lambda P, x, a: P.projection_simplex(x, 2.0),
    "projection_l1_sphere": lambda P, x, a: P.projection_l1_sphere(x, 2.0),
    "projection_l1_ball": lambda P, x, a: P.projection_l1_ball(x, 2.0),
    "projection_l2_sphere": lambda P, x, a: P.projection_l2_sphere(x, 2.0),
    "projection_l2_ball": lambda P, x, a: P.projection_l2_ball(x, 2.0),
    "projection_hyperplane": lambda P, x, a: P.projection_hyperplane(x, a, 0.5),
    "projection_halfspace": lambda P, x, a: P.projection_halfspace(x, a, 0.5),
    "projection_vector": lambda P, x, a: P.projection_vector(x, a),
}


@pytest.mark.parametrize("name", sorted(PYTHON_FLOAT_PROJECTIONS))
@pytest.mark.parametrize("x,a", [(1.7, -0.6), ({"u": 1.5, "v": [-2.0, 0.25]}, {"u": 0.5, "v": [1.0, -1.0]})], ids=["scalar", "tree"])
def test_projection_of_python_floats_matches_optax(name, x, a):
    ours = PYTHON_FLOAT_PROJECTIONS[name](optcore.projections, x, a)
    theirs = PYTHON_FLOAT_PROJECTIONS[name](optax.projections, x, a)
    _close(ours, theirs)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    assert [jnp.result_type(leaf) for leaf in jax.tree.leaves(ours)] == [jnp.result_type(leaf) for leaf in jax.tree.leaves(theirs)]


# --- line searches and L-BFGS --------------------------------------------------------------------


def _quad(w):
    a = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
    return 0.5 * w @ a @ w - jnp.array([1.0, -1.0, 2.0]) @ w


def _rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def _trajectory(lib, opt, f, x0, n=10):
    value_and_grad = lib.value_and_grad_from_state(f)

    def step(carry, _):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return (lib.apply_updates(x, updates), state), (x, updates)

    return jax.jit(lambda x: jax.lax.scan(step, (x, opt.init(x)), None, length=n))(x0)


FIRST_STEPS = 4

LINESEARCH_OPTS = {
    "lbfgs": lambda m: m.lbfgs(),
    "lbfgs_lr": lambda m: m.lbfgs(learning_rate=0.5, linesearch=m.scale_by_backtracking_linesearch(10, store_grad=True)),
    "lbfgs_nosc": lambda m: m.lbfgs(memory_size=3, scale_init_precond=False),
    "sgd_backtracking": lambda m: m.chain(m.sgd(1.0), m.scale_by_backtracking_linesearch(15, store_grad=True)),
    "sgd_zoom_keep": lambda m: m.chain(m.sgd(1.0), m.scale_by_zoom_linesearch(15)),
}


@pytest.mark.parametrize("fn", [_quad, _rosen], ids=["quadratic", "rosenbrock"])
@pytest.mark.parametrize("name", sorted(LINESEARCH_OPTS))
def test_linesearch_and_lbfgs_match_optax_for_ten_steps(name, fn):
    if name == "sgd_backtracking" and fn is _rosen:
        pytest.skip("covered on the quadratic")
    x0 = jnp.array([-1.2, 1.0, 0.5]) if fn is _rosen else jnp.zeros(3)
    # Rosenbrock's curved valley amplifies float32 rounding of the interpolated steps.
    tol = dict(rtol=2e-3, atol=1e-4) if fn is _rosen else dict(rtol=1e-4, atol=1e-5)
    # Near convergence the updates and curvature pairs are differences of nearly equal numbers: an ulp
    # of float32 difference (another CPU's vector width, another fusion) grows up to 10x per step there.
    # So iterates, updates and states are compared tightly over the first FIRST_STEPS steps, and the
    # tenth iterate (both converged to the same point) to a looser tolerance.
    (x1, _), (xs1, us1) = _trajectory(optcore, LINESEARCH_OPTS[name](optcore), fn, x0)
    (x2, _), (xs2, us2) = _trajectory(optax, LINESEARCH_OPTS[name](optax), fn, x0)
    _close(xs1[:FIRST_STEPS + 1], xs2[:FIRST_STEPS + 1], **tol)
    _close(us1[:FIRST_STEPS], us2[:FIRST_STEPS], **tol)
    _close(x1, x2, rtol=1e-2, atol=1e-3)
    (_, s1), _ = _trajectory(optcore, LINESEARCH_OPTS[name](optcore), fn, x0, n=FIRST_STEPS)
    (_, s2), _ = _trajectory(optax, LINESEARCH_OPTS[name](optax), fn, x0, n=FIRST_STEPS)
    assert [type(s).__name__ for s in s1] == [type(s).__name__ for s in s2]
    _close(s1[:-1], s2[:-1], **tol)
    # Once converged (flat objective) both searches fail; the number of tries may differ.
    _close(s1[-1][:3], s2[-1][:3], **tol)
    _close(s1[-1].info[1:], s2[-1].info[1:], **tol)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name,args", [("scale_by_backtracking_linesearch", (15,)), ("scale_by_zoom_linesearch", (15,))])
@pytest.mark.parametrize("value", [0.25, np.float64(0.25)], ids=["float", "np.float64"])
def test_line_searches_with_python_float_values_match_optax(name, args, value, jit):
    """value/grad as Python floats with float32 params (Optax's init needs array params: for Python-float
    params optcore is compared with Optax given the same numbers as float32 arrays)."""
    fn = lambda x: (x - 2.0) ** 2  # noqa: E731
    results = []
    for lib, params in ((optax, jnp.float32(1.5)), (optcore, jnp.float32(1.5)), (optcore, 1.5)):
        ls = getattr(lib, name)(*args)
        go = lambda p, s: ls.update(jnp.float32(1.0), s, p, value=value, grad=-1.0, value_fn=fn)  # noqa: E731
        updates, state = (jax.jit(go) if jit else go)(params, ls.init(params))
        results.append((updates, state.learning_rate, state.value))
    _close(results[1], results[0])
    _close(results[2], results[0])


def _square_norm(w):
    return jnp.dot(w, w)


def _flat(x):
    return jnp.exp(-1 / x**2)


_E1 = jnp.array([1.0, 0.0])
# (zoom kwargs, objective, params, direction): the failure modes of Optax's zoom tests, and a success.
ZOOM_CASES = {
    "uphill": (dict(max_linesearch_steps=18, curv_rtol=0.5), _square_norm, 60 * _E1, _E1),
    "capped": (dict(max_linesearch_steps=10, curv_rtol=0.5, max_learning_rate=10.0), _square_norm, -60 * _E1, _E1),
    "out_of_steps": (dict(max_linesearch_steps=5, curv_rtol=0.5), _square_norm, -60 * _E1, _E1),
    "success": (dict(max_linesearch_steps=30, curv_rtol=0.5), _square_norm, -60 * _E1, _E1),
    "flat": (dict(max_linesearch_steps=30), _flat, jnp.asarray(-0.2), -jax.grad(_flat)(jnp.asarray(-0.2))),
    "log": (dict(max_linesearch_steps=30), jnp.log, jnp.asarray(1.0), jnp.asarray(-2.0)),
    "high_below_low": (dict(max_linesearch_steps=20), lambda x: x**2, jnp.asarray(-1.0), jnp.asarray(1.95)),
}


def _line_search_once(lib, ls, fn, w, u, learning_rate=None):
    state = ls.init(w)
    if learning_rate is not None:
        state = lib.tree.set(state, learning_rate=learning_rate)
    value, grad = jax.value_and_grad(fn)(w)
    return ls.update(u, state, w, value=value, grad=grad, value_fn=fn)


@pytest.mark.parametrize("case", ["capped", "out_of_steps", "success", "high_below_low", "backtracking"])
def test_line_searches_with_a_python_float_learning_rate_in_the_state_match_optax(case):
    """The learning rate set in the state as a Python float (as Optax's tests do with tree.set)."""
    results = []
    for lib in (optcore, optax):
        if case == "backtracking":
            ls, fn, w, u = lib.scale_by_backtracking_linesearch(15, store_grad=True), _quad, jnp.zeros(3), -jax.grad(_quad)(jnp.zeros(3))
        else:
            kwargs, fn, w, u = ZOOM_CASES[case]
            ls = lib.scale_by_zoom_linesearch(**kwargs)
        results.append(_line_search_once(lib, ls, fn, w, u, learning_rate=0.5))
    (ours, our_state), (theirs, their_state) = results
    _close(ours, theirs)
    _close(our_state[:3], their_state[:3])
    _close(our_state.info, their_state.info)


@pytest.mark.parametrize("case", sorted(ZOOM_CASES))
def test_zoom_verbose_flags_match_optax(case, capsys):
    """verbose=True reports the same failure flags (Optax's FLAG_* names, optcore's wording) as Optax."""
    from optax._src import linesearch as optax_linesearch

    kwargs, fn, w, u = ZOOM_CASES[case]
    outputs = []
    for lib in (optcore, optax):
        _line_search_once(lib, lib.scale_by_zoom_linesearch(verbose=True, **kwargs), fn, w, u, learning_rate=1.0)
        jax.effects_barrier()
        outputs.append(capsys.readouterr().out)
    names = [name for name in dir(optax_linesearch) if name.startswith("FLAG_")]
    assert len(names) == 5
    ours = {name for name in names if getattr(optcore.transforms._linesearch, name) in outputs[0]}
    theirs = {name for name in names if getattr(optax_linesearch, name) in outputs[1]}
    assert ours == theirs
    assert (outputs[0] == "") == (outputs[1] == "")


def test_value_and_grad_from_state_errors_match_optax():
    """No line search state: ValueError; two: KeyError (which value to reuse is ambiguous)."""
    w = jnp.array([1.0, 2.0, 3.0])
    for lib in (optcore, optax):
        value_and_grad = lib.value_and_grad_from_state(_quad)
        with pytest.raises(ValueError):
            value_and_grad(w, state=lib.scale_by_adam().init(w))
        two = lib.chain(lib.scale_by_backtracking_linesearch(15), lib.scale_by_backtracking_linesearch(15))
        with pytest.raises(KeyError):
            value_and_grad(w, state=two.init(w))
