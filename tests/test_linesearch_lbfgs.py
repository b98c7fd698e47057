"""Line searches and L-BFGS: known optima, Wolfe/Armijo conditions, and a NumPy two-loop recursion."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import optcore

A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
B = np.array([1.0, -1.0, 2.0])


def quad(w):
    return 0.5 * w @ jnp.asarray(A, jnp.float32) @ w - jnp.asarray(B, jnp.float32) @ w


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def _run(opt, f, x0, n):
    value_and_grad = optcore.value_and_grad_from_state(f)

    def step(carry, _):
        x, state = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return (optcore.apply_updates(x, updates), state), value

    (x, state), values = jax.jit(lambda x: jax.lax.scan(step, (x, opt.init(x)), None, length=n))(x0)
    return x, state, values


def test_lbfgs_minimises_a_quadratic_in_a_few_steps():
    x, _, values = _run(optcore.lbfgs(), quad, jnp.zeros(3), 8)
    np.testing.assert_allclose(x, np.linalg.solve(A, B), rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(np.asarray(values)) <= 1e-6)


def test_lbfgs_minimises_rosenbrock():
    x, _, _ = _run(optcore.lbfgs(), rosenbrock, jnp.array([-1.2, 1.0, 0.5, -0.3]), 80)
    np.testing.assert_allclose(x, np.ones(4), atol=1e-3)


def test_lbfgs_fits_a_logistic_regression_to_first_order_optimality():
    """Full-batch L-BFGS on a (ridge-regularised, so strictly convex) logistic regression: the gradient vanishes."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 3)).astype(np.float32)
    labels = (features @ np.array([1.5, -2.0, 0.5]) + 0.3 * rng.normal(size=64) > 0).astype(np.float32)

    def loss(w):
        logits = jnp.asarray(features) @ w
        return jnp.mean(jnp.logaddexp(0.0, logits) - jnp.asarray(labels) * logits) + 1e-2 * jnp.sum(w**2)

    w, _, values = _run(optcore.lbfgs(), loss, jnp.zeros(3), 30)
    assert float(values[-1]) < float(values[0])
    assert float(jnp.linalg.norm(jax.grad(loss)(w))) < 1e-4


def test_lbfgs_with_tree_params_and_memory_wrap():
    f = lambda p: quad(jnp.concatenate([p["a"], p["b"]]))  # noqa: E731
    opt = optcore.lbfgs(memory_size=2)
    x, state, _ = _run(opt, f, {"a": jnp.zeros(2), "b": jnp.zeros(1)}, 25)
    np.testing.assert_allclose(jnp.concatenate([x["a"], x["b"]]), np.linalg.solve(A, B), rtol=1e-4, atol=1e-5)
    assert [type(s).__name__ for s in state] == ["ScaleByLBFGSState", "EmptyState", "ScaleByZoomLinesearchState"]


def _two_loop(g, s_list, y_list, gamma):
    """Nocedal & Wright, Algorithm 7.4, written in NumPy."""
    q = g.copy()
    alphas = []
    for s, y in reversed(list(zip(s_list, y_list))):
        rho = 1.0 / (y @ s)
        alpha = rho * (s @ q)
        q = q - alpha * y
        alphas.append(alpha)
    r = gamma * q
    for (s, y), alpha in zip(zip(s_list, y_list), reversed(alphas)):
        rho = 1.0 / (y @ s)
        r = r + s * (alpha - rho * (y @ r))
    return r


def test_scale_by_lbfgs_matches_numpy_two_loop():
    rng = np.random.default_rng(0)
    memory = 3
    tx = optcore.scale_by_lbfgs(memory_size=memory)
    ws = [rng.normal(size=3) for _ in range(6)]
    gs = [A @ w - B for w in ws]
    state = tx.init(jnp.zeros(3, jnp.float32))
    update = jax.jit(tx.update)
    for k, (w, g) in enumerate(zip(ws, gs)):
        out, state = update(jnp.asarray(g, jnp.float32), state, jnp.asarray(w, jnp.float32))
        if k == 0:
            expected = min(1.0, 1.0 / np.linalg.norm(g)) * g
        else:
            s_list = [ws[j + 1] - ws[j] for j in range(max(0, k - memory), k)]
            y_list = [gs[j + 1] - gs[j] for j in range(max(0, k - memory), k)]
            gamma = (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1])
            expected = _two_loop(g, s_list, y_list, gamma)
        np.testing.assert_allclose(out, expected, rtol=2e-4, atol=1e-5)


def test_backtracking_accepts_armijo_step():
    opt = optcore.scale_by_backtracking_linesearch(max_backtracking_steps=30, decrease_factor=0.5)
    w = jnp.array([2.0, -1.0, 1.0])
    value, grad = jax.value_and_grad(quad)(w)
    direction = -grad * 10.0  # too long: must backtrack
    updates, state = opt.update(direction, opt.init(w), w, value=value, grad=grad, value_fn=quad)
    eta = float(state.learning_rate)
    assert eta < 1.0
    assert float(quad(w + updates)) <= float(value) + 1e-4 * eta * float(direction @ grad) + 1e-6
    # The previous (twice larger) step violated the condition.
    assert float(quad(w + 2 * updates)) > float(value) + 1e-4 * 2 * eta * float(direction @ grad)
    np.testing.assert_allclose(state.value, quad(w + updates), rtol=1e-6)
    assert state.grad is None


def test_zoom_satisfies_strong_wolfe():
    opt = optcore.scale_by_zoom_linesearch(max_linesearch_steps=30, initial_guess_strategy="one", approx_dec_rtol=None)
    w = jnp.array([-1.2, 1.0])
    value, grad = jax.value_and_grad(rosenbrock)(w)
    updates, state = jax.jit(lambda d, s: opt.update(d, s, w, value=value, grad=grad, value_fn=rosenbrock))(-grad, opt.init(w))
    eta = float(state.learning_rate)
    slope0 = float(-grad @ grad)
    new_grad = jax.grad(rosenbrock)(w + updates)
    assert float(rosenbrock(w + updates)) <= float(value) + 1e-4 * eta * slope0 + 1e-6
    assert abs(float(new_grad @ -grad)) <= 0.9 * abs(slope0) + 1e-6
    np.testing.assert_allclose(state.grad, new_grad, rtol=1e-4, atol=1e-5)
    assert float(state.info.decrease_error) == 0 and float(state.info.curvature_error) == 0


def test_value_and_grad_from_state_recomputes_when_empty():
    opt = optcore.lbfgs()
    w = jnp.array([1.0, 2.0, 3.0])
    value, grad = optcore.value_and_grad_from_state(quad)(w, state=opt.init(w))
    ref_value, ref_grad = jax.value_and_grad(quad)(w)
    np.testing.assert_allclose(value, ref_value)
    np.testing.assert_allclose(grad, ref_grad)
    with pytest.raises(ValueError, match="store_grad"):
        bt = optcore.scale_by_backtracking_linesearch(5)
        optcore.value_and_grad_from_state(quad)(w, state=bt.init(w))


def test_missing_extra_args_and_bad_hyperparameters():
    opt = optcore.scale_by_zoom_linesearch(5)
    w = jnp.ones(2)
    with pytest.raises(TypeError, match="value_fn"):
        opt.update(w, opt.init(w), w)
    with pytest.raises(ValueError, match="NO|params"):
        opt.update(w, opt.init(w), None, value=1.0, grad=w, value_fn=lambda p: 0.0)
    with pytest.raises(ValueError, match="decrease_factor"):
        optcore.scale_by_backtracking_linesearch(5, decrease_factor=1.5)
    with pytest.raises(ValueError, match="initial_guess_strategy"):
        optcore.scale_by_zoom_linesearch(5, initial_guess_strategy="two")
    with pytest.raises(ValueError, match="curv_rtol"):
        optcore.scale_by_zoom_linesearch(5, slope_rtol=0.5, curv_rtol=0.4)
    with pytest.raises(ValueError, match="memory_size"):
        optcore.scale_by_lbfgs(memory_size=0)


def test_value_fn_gets_matching_extra_args():
    def f(w, x, y):
        return jnp.sum((x @ w - y) ** 2)

    x, y = jnp.array([[1.0, 2.0], [3.0, 1.0]]), jnp.array([1.0, 0.0])
    opt = optcore.chain(optcore.sgd(1.0), optcore.scale_by_backtracking_linesearch(20))
    w = jnp.zeros(2)
    state = opt.init(w)
    for _ in range(30):
        value, grad = jax.value_and_grad(f)(w, x, y)
        updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=f, x=x, y=y)
        w = optcore.apply_updates(w, updates)
    np.testing.assert_allclose(w, np.linalg.solve(np.asarray(x), np.asarray(y)), atol=1e-3)


def _line_quadratic(x):
    return (x - 2.0) ** 2  # along d = +1 from x = 1.5: f(1.5 + t) = (t - 0.5)^2, exact minimiser t* = 0.5


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("params", [1.5, {"w": 1.5}, np.float64(1.5)], ids=["float", "dict", "np.float64"])
def test_line_searches_take_python_float_params_and_values(params, jit):
    """Python floats for params, update, value and grad (the state is built from them too)."""
    as_tree = lambda v: {"w": v} if isinstance(params, dict) else v  # noqa: E731
    fn = (lambda p: _line_quadratic(p["w"])) if isinstance(params, dict) else _line_quadratic
    for ls in (optcore.scale_by_backtracking_linesearch(15), optcore.scale_by_zoom_linesearch(15)):
        go = lambda p, s: ls.update(as_tree(1.0), s, p, value=0.25, grad=as_tree(-1.0), value_fn=fn)  # noqa: E731
        updates, state = (jax.jit(go) if jit else go)(params, ls.init(params))
        t = float(state.learning_rate)
        step = float(jax.tree.leaves(updates)[0])
        assert step == pytest.approx(t)  # the update is t * d with d = 1
        # Armijo (sufficient decrease, slope g.d = -1, slope_rtol 1e-4): (t - 0.5)^2 <= 0.25 - 1e-4 t
        assert (t - 0.5) ** 2 <= 0.25 - 1e-4 * t + 1e-6
        assert float(state.value) == pytest.approx((t - 0.5) ** 2, abs=1e-6)
        if "Zoom" in type(state).__name__:  # strong Wolfe on a quadratic: the exact minimiser
            assert t == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "make,learning_rate,expected",
    [
        # "keep" starts from the stored 0.5, the exact minimiser of (t - 0.5)^2: accepted at once.
        (lambda: optcore.scale_by_zoom_linesearch(15), 0.5, 0.5),
        # From 1: f(1) = 0.25 is no decrease, so it zooms into [0, 1]; the quadratic fit is exact.
        (lambda: optcore.scale_by_zoom_linesearch(15), 1, 0.5),
        # Starts from min(1.5 * 0.5, 1) = 0.75, which meets Armijo: (0.25)^2 <= 0.25 - 1e-4 * 0.75.
        (lambda: optcore.scale_by_backtracking_linesearch(15), 0.5, 0.75),
        # Starts from min(1.5 * 1, 1) = 1, which misses Armijo (0.25 > 0.25 - 1e-4); then 0.8 meets it.
        (lambda: optcore.scale_by_backtracking_linesearch(15), 1, 0.8),
    ],
    ids=["zoom-0.5", "zoom-int-1", "backtracking-0.5", "backtracking-int-1"],
)
def test_line_searches_take_a_python_float_learning_rate_in_the_state(make, learning_rate, expected, jit):
    """A learning rate set in the state as a Python number (with tree.set, as Optax's tests do) is used."""
    ls = make()
    state = optcore.tree.set(ls.init(jnp.float32(1.5)), learning_rate=learning_rate)
    assert type(state.learning_rate) is type(learning_rate)
    go = lambda s: ls.update(jnp.float32(1.0), s, jnp.float32(1.5), value=0.25, grad=-1.0, value_fn=_line_quadratic)  # noqa: E731
    updates, state = (jax.jit(go) if jit else go)(state)
    assert float(state.learning_rate) == pytest.approx(expected, rel=1e-6)
    assert float(updates) == pytest.approx(expected, rel=1e-6)
    assert float(state.value) == pytest.approx((expected - 0.5) ** 2, abs=1e-7)
    # The new state has array leaves of the default dtype, so it can go around a lax loop.
    assert state.learning_rate.dtype == jnp.float32 and state.value.dtype == jnp.float32


def _square_norm(w):
    return jnp.dot(w, w)


def _verbose_zoom(capsys, w, u, fn=_square_norm, **kwargs):
    ls = optcore.scale_by_zoom_linesearch(verbose=True, **kwargs)
    value, grad = jax.value_and_grad(fn)(w)
    _, state = ls.update(u, ls.init(w), w, value=value, grad=grad, value_fn=fn)
    jax.effects_barrier()
    return float(state.learning_rate), capsys.readouterr().out


def test_zoom_verbose_says_why_it_failed(capsys):
    """f(w) = |w|^2 from w = -60 e1 along u = e1: phi(s) = (s - 60)^2, phi'(0) = -120; with curv_rtol = 0.5
    the strong Wolfe steps are |s - 60| <= 30, i.e. s in [30, 90], reached by doubling 1 at the sixth try."""
    ls_module = optcore.transforms._linesearch
    e1 = jnp.array([1.0, 0.0])
    # Capped below the Wolfe interval: the cap, with sufficient decrease only.
    step, out = _verbose_zoom(capsys, -60 * e1, e1, max_linesearch_steps=10, curv_rtol=0.5, max_learning_rate=10.0)
    assert step == 10.0
    assert ls_module.FLAG_INTERVAL_NOT_FOUND in out and ls_module.FLAG_CURVATURE_COND_NOT_SATISFIED in out
    # Out of tries (1, 2, 4, 8, 16): the last, 16, decreases enough.
    step, out = _verbose_zoom(capsys, -60 * e1, e1, max_linesearch_steps=5, curv_rtol=0.5)
    assert step == 16.0
    assert ls_module.FLAG_CURVATURE_COND_NOT_SATISFIED in out and ls_module.FLAG_NOT_A_DESCENT_DIRECTION not in out
    # Enough tries: success, and nothing printed.
    step, out = _verbose_zoom(capsys, -60 * e1, e1, max_linesearch_steps=30, curv_rtol=0.5)
    assert 30.0 <= step <= 90.0 and out == ""
    # Uphill (phi'(0) = +120): no step decreases f, the search shrinks to (almost) nothing.
    step, out = _verbose_zoom(capsys, 60 * e1, e1, max_linesearch_steps=18, curv_rtol=0.5)
    assert step < 1e-5
    assert ls_module.FLAG_NO_STEPSIZE_FOUND in out and ls_module.FLAG_NOT_A_DESCENT_DIRECTION in out
    # A flat function: the interval narrows below stepsize_precision.
    flat = lambda x: jnp.exp(-1 / x**2)  # noqa: E731
    w = jnp.asarray(-0.2)
    _, out = _verbose_zoom(capsys, w, -jax.grad(flat)(w), fn=flat, max_linesearch_steps=30)
    assert ls_module.FLAG_INTERVAL_TOO_SMALL in out


def test_value_and_grad_from_state_needs_exactly_one_line_search():
    w = jnp.array([1.0, 2.0, 3.0])
    value_and_grad = optcore.value_and_grad_from_state(quad)
    with pytest.raises(ValueError, match="no line search state"):
        value_and_grad(w, state=optcore.adam(1e-3).init(w))
    two = optcore.chain(optcore.scale_by_backtracking_linesearch(15), optcore.scale_by_backtracking_linesearch(15))
    with pytest.raises(KeyError, match="2 line search states"):
        value_and_grad(w, state=two.init(w))


def test_zoom_verbose_prints_once_per_search_under_vmap(capsys):
    """Under vmap only the search that failed reports (from w = -1: s = 1 is exact; from w = -60: out of tries)."""
    ls = optcore.scale_by_zoom_linesearch(5, curv_rtol=0.5, verbose=True)

    def search(w):
        value, grad = jax.value_and_grad(_square_norm)(w)
        return ls.update(jnp.array([1.0, 0.0]), ls.init(w), w, value=value, grad=grad, value_fn=_square_norm)[1]

    state = jax.jit(jax.vmap(search))(jnp.array([[-1.0, 0.0], [-60.0, 0.0]]))
    jax.effects_barrier()
    np.testing.assert_allclose(state.learning_rate, [1.0, 16.0])
    out = capsys.readouterr().out
    assert out.count("scale_by_zoom_linesearch:") == 1 and "16.0" in out
    assert out.count(optcore.transforms._linesearch.FLAG_CURVATURE_COND_NOT_SATISFIED) == 1
