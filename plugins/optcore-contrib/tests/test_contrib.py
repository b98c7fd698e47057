"""optcore_contrib against independent NumPy references, convex problems and the registry."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import optcore_contrib as cc

G = np.array([[0.5, -1.0, 2.0], [0.1, 0.3, -0.7]], np.float32)  # two steps of gradients
X0 = np.array([1.0, -2.0, 0.5], np.float32)


def _steps(opt, grads=G, params=X0, **extra):
    state = opt.init(jnp.asarray(params))
    p = jnp.asarray(params)
    out = []
    for g in grads:
        u, state = opt.update(jnp.asarray(g), state, p, **extra)
        p = p + u
        out.append(np.asarray(u))
    return out, state


def test_adopt_matches_numpy_equations():
    b1, b2, eps, lr = 0.9, 0.99, 1e-6, 0.1
    grads = np.concatenate([G, G[::-1] * 2])
    updates, _ = _steps(cc.adopt(lr, b1, b2, eps), grads)
    m, v = np.zeros(3), grads[0] ** 2
    np.testing.assert_allclose(updates[0], 0.0)
    for t, g in enumerate(grads[1:], start=1):
        normalised = np.clip(g / np.maximum(np.sqrt(v), eps), -(t**0.25), t**0.25)
        m = b1 * m + (1 - b1) * normalised
        v = b2 * v + (1 - b2) * g**2
        np.testing.assert_allclose(updates[t], -lr * m, rtol=1e-5)


def test_ademamix_matches_numpy_equations():
    b1, b2, b3, alpha, eps = 0.9, 0.999, 0.99, 5.0, 1e-8
    updates, state = _steps(cc.scale_by_ademamix(b1, b2, b3, alpha, eps))
    m1 = m2 = nu = np.zeros(3)
    for t, g in enumerate(G, start=1):
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b3 * m2 + (1 - b3) * g
        nu = b2 * nu + (1 - b2) * g**2
        expected = (m1 / (1 - b1**t) + alpha * m2) / (np.sqrt(nu / (1 - b2**t)) + eps)
        np.testing.assert_allclose(updates[t - 1], expected, rtol=1e-4)  # float32 1 - b2**t
    assert int(state.count) == int(state.count_m2) == 2


def test_simplified_ademamix_matches_numpy_equations():
    b1, b2, alpha, eps = 0.99, 0.95, 2.0, 1e-8
    updates, _ = _steps(cc.scale_by_simplified_ademamix(b1, b2, alpha, eps))
    m = n = np.zeros(3)
    for t, g in enumerate(G, start=1):
        m = b1 * m + g
        n = b2 * n + (1 - b2) * g**2
        np.testing.assert_allclose(updates[t - 1], (alpha * g + m) / (np.sqrt(n / (1 - b2**t)) + eps), rtol=1e-5)


def test_madgrad_matches_numpy_equations():
    lr, momentum, eps = 0.1, 0.9, 1e-6
    updates, _ = _steps(cc.madgrad(lr, momentum, eps=eps))
    x, s, v = X0.astype(np.float64), np.zeros(3), np.zeros(3)
    for k, g in enumerate(G):
        lamb = (lr + eps) * np.sqrt(k + 1)
        s, v = s + lamb * g, v + lamb * g**2
        z = X0 - s / (np.cbrt(v) + eps)
        new_x = momentum * x + (1 - momentum) * z
        np.testing.assert_allclose(updates[k], new_x - x, rtol=1e-4, atol=1e-7)
        x = new_x


def test_dog_and_dowg_match_numpy_equations():
    r_eps = 1e-6 * (1 + np.linalg.norm(X0))
    updates, _ = _steps(cc.dog())
    x, r_bar, g_sum = X0.astype(np.float64), r_eps, 0.0
    for t, g in enumerate(G):
        r_bar = max(r_bar, np.linalg.norm(x - X0))
        g_sum += np.sum(g**2)
        np.testing.assert_allclose(updates[t], -r_bar / np.sqrt(g_sum + 1e-8) * g, rtol=1e-5)
        x = x + updates[t]
    updates, _ = _steps(cc.dowg(eps=1e-4))
    x, r2, v = X0.astype(np.float64), 1e-4, 0.0
    for t, g in enumerate(G):
        r2 = max(r2, np.sum((x - X0) ** 2))
        v += r2 * np.sum(g**2)
        np.testing.assert_allclose(updates[t], -r2 / (np.sqrt(v) + 1e-4) * g, rtol=1e-5)
        x = x + updates[t]


def test_cocob_matches_numpy_equations():
    alpha, eps = 100.0, 1e-8
    updates, _ = _steps(cc.cocob(alpha=alpha, eps=eps))
    x, theta, big_l, big_g, reward = X0.astype(np.float64), np.zeros(3), np.full(3, eps), np.zeros(3), np.zeros(3)
    for t, g in enumerate(G):
        big_l = np.maximum(big_l, np.abs(g))
        big_g = big_g + np.abs(g)
        reward = np.maximum(reward - g * (x - X0), 0)
        theta = theta - g
        new_x = X0 + theta / (big_l * np.maximum(big_g + big_l, alpha * big_l)) * (big_l + reward)
        np.testing.assert_allclose(updates[t], new_x - x, rtol=1e-4, atol=1e-7)
        x = new_x


def test_momo_first_step_is_the_polyak_step():
    # f(x) = |x|^2: the Polyak step f / |g|^2 = 1/4 halves x (as the paper's example).
    x = jnp.array([1.0, 2.0, 3.0])
    opt = cc.momo()
    value, grad = jax.value_and_grad(lambda p: jnp.sum(p**2))(x)
    updates, _ = opt.update(grad, opt.init(x), x, value=value)
    np.testing.assert_allclose(x + updates, x / 2, rtol=1e-6)


def test_schedule_free_sgd_matches_numpy_equations():
    lr, b1 = 0.1, 0.9
    updates, state = _steps(cc.schedule_free_sgd(lr, b1=b1))
    y, z, x, weight_sum = X0.astype(np.float64), X0.astype(np.float64), X0.astype(np.float64), 0.0
    for t, g in enumerate(G):
        z = z - lr * g
        weight_sum += lr**2
        c = lr**2 / weight_sum
        x = (1 - c) * x + c * z
        new_y = (1 - b1) * z + b1 * x
        np.testing.assert_allclose(updates[t], new_y - y, rtol=1e-4, atol=1e-6)
        y = new_y
    np.testing.assert_allclose(cc.schedule_free_eval_params(state, jnp.asarray(y, jnp.float32)), x, rtol=1e-5)


def test_schedule_free_eval_params_with_zero_b1_returns_params():
    opt = cc.schedule_free_sgd(0.1, b1=0.0)
    params = jnp.asarray(X0)
    _, state = _steps(opt)
    np.testing.assert_allclose(cc.schedule_free_eval_params(state, params), params)


def test_reduce_on_plateau_drops_after_patience():
    opt = cc.reduce_on_plateau(factor=0.5, patience=2, rtol=0.0, atol=1e-6)
    updates = jnp.ones(2)
    state = opt.init(updates)
    scales = []
    for value in [1.0, 1.0, 1.0, 0.5, 0.6, 0.7]:
        out, state = opt.update(updates, state, value=value)
        scales.append(float(out[0]))
    # best=1; two non-improving values -> halve; 0.5 improves; two more -> halve again.
    assert scales == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_sophia_step_is_clipped_newton_on_a_diagonal_quadratic():
    h = jnp.array([2.0, 50.0])
    loss = lambda p: 0.5 * jnp.sum(h * p**2)  # noqa: E731
    opt = cc.sophia(1.0, b1=0.0, b2=0.0, gamma=1.0, clip_threshold=10.0, update_interval=1, weight_decay=0.0)
    p = jnp.array([1.0, 1.0])
    state = opt.init(p)
    _, state = opt.update(jax.grad(loss)(p), state, p, obj_fn=loss)  # first step fills the Hessian EMA
    updates, _ = opt.update(jax.grad(loss)(p), state, p, obj_fn=loss)
    np.testing.assert_allclose(updates, -p, rtol=1e-5)  # Newton step g / h


def test_hutchinson_is_exact_for_diagonal_hessians():
    h = jnp.array([1.0, 3.0, -2.0])
    est = cc.hutchinson_estimator_diag_hessian(jax.random.PRNGKey(3))
    p = jnp.ones(3)
    diag, _ = est.update(p, est.init(p), p, obj_fn=lambda q: 0.5 * jnp.sum(h * q**2))
    np.testing.assert_allclose(diag, h, rtol=1e-6)


def test_normalize_and_split_real_and_imaginary():
    u, _ = cc.normalize().update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, cc.NormalizeState())
    np.testing.assert_allclose([u["a"][0], u["b"][0]], [0.6, 0.8], rtol=1e-6)
    opt = cc.split_real_and_imaginary(optcore.sgd(0.5))
    p = jnp.array([1.0 + 1.0j])
    out, _ = opt.update(jnp.array([2.0 - 4.0j]), opt.init(p), p)
    np.testing.assert_allclose(out, [-1.0 + 2.0j])


def test_dp_aggregate_without_noise_is_mean_of_clipped():
    per_example = jnp.array([[3.0, 4.0], [0.3, 0.4]])  # norms 5 and 0.5
    agg = cc.differentially_private_aggregate(1.0, 0.0, seed=0)
    u, _ = agg.update(per_example, agg.init(jnp.zeros(2)))
    np.testing.assert_allclose(u, (np.array([0.6, 0.8]) + np.array([0.3, 0.4])) / 2, rtol=1e-6)


def test_sam_returns_to_cached_params_with_adversarial_gradient():
    loss = lambda p: jnp.sum(p**2)  # noqa: E731
    rho, lr = 0.1, 0.2
    opt = cc.sam(optcore.sgd(lr), optcore.chain(cc.normalize(), optcore.sgd(rho)))
    p0 = jnp.array([1.0, 2.0])
    state = opt.init(p0)
    u, state = opt.update(jax.grad(loss)(p0), state, p0)
    adv = p0 + u
    np.testing.assert_allclose(adv, p0 + rho * p0 / jnp.linalg.norm(p0), rtol=1e-6)
    u, state = opt.update(jax.grad(loss)(adv), state, adv)
    np.testing.assert_allclose(adv + u, p0 - lr * 2 * adv, rtol=1e-6)


def test_mechanize_matches_numpy_equations():
    lam, eps, s_init, n, lr = 0.1, 1e-3, 0.1, 2, 0.1
    grads = np.stack([G[0], G[0], 2 * G[0], G[1], -G[0]])  # |h_t| outgrows m_{t-1}: the clip matters
    opt = cc.mechanize(optcore.sgd(lr), weight_decay=lam, eps=eps, s_init=s_init, num_betas=n)
    updates, state = _steps(opt, grads)
    betas = 1 - 0.1 ** np.arange(1, n + 1)
    x, delta = X0.astype(np.float64), np.zeros(3)
    s, r, m, v = np.full(n, s_init / n), np.zeros(n), np.zeros(n), np.zeros(n)
    for t, g in enumerate(grads):
        h = delta @ (g + lam * np.linalg.norm(g) * s.sum() / (np.linalg.norm(x) + eps) * x)
        r = betas * r - s * np.clip(h, -m, m)  # the wealth moves by h clipped to the previous max
        m = np.maximum(betas * m, abs(h) + eps)
        v = betas**2 * v + h**2
        s = (s_init / n * m + np.maximum(r, 0)) / (np.sqrt(v) + eps)
        delta = delta + (-lr * g)
        new_x = X0 + s.sum() * delta
        np.testing.assert_allclose(updates[t], new_x - x, rtol=2e-4, atol=1e-6, err_msg=f"step {t}")
        # Delta is recovered from the params as (x - x0) / (sum(s) + eps).
        x, delta = new_x, (new_x - X0) / (s.sum() + eps)
    np.testing.assert_allclose(state.s, s, rtol=2e-4)


def test_muon_orthogonalises_matrices_and_uses_adam_elsewhere():
    rng = np.random.default_rng(1)
    g = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    tx = cc.scale_by_muon(ns_coeffs=((2.0, -1.5, 0.5),) * 30, nesterov=False)  # a slow, convergent NS
    u, _ = tx.update(g, tx.init(g))
    # The polar factor U V^T of g: all singular values 1.
    np.testing.assert_allclose(np.linalg.svd(np.asarray(u), compute_uv=False), np.ones(4), rtol=1e-3)
    ugv, _, vt = np.linalg.svd(np.asarray(g), full_matrices=False)
    np.testing.assert_allclose(u, ugv @ vt, atol=1e-3)
    opt = cc.muon(0.1)
    params = {"w": jnp.zeros((6, 4)), "b": jnp.zeros(4)}
    out, _ = opt.update({"w": g, "b": jnp.ones(4)}, opt.init(params), params)
    assert np.allclose(out["b"], out["b"][0])  # Adam: sign-like first step on the vector


def _wide_numpy(g):
    """The orientation Newton-Schulz works in (rows <= cols), and the map back."""
    return (g, lambda x: x) if g.shape[0] <= g.shape[1] else (g.T, lambda x: x.T)


def _numpy_unitary_polar_factor(g):
    """U V^H from the SVD G = U S V^H."""
    left, _, vh = np.linalg.svd(g, full_matrices=False)
    return left @ vh


@pytest.mark.parametrize("shape", [(3, 5), (6, 4)])
@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol", "schatten"])
def test_muon_maps_a_complex_matrix_to_its_unitary_polar_factor(preconditioning, shape):
    # Optax issue 1494: with the Hermitian Gram matrix X X^H, Newton-Schulz drives the
    # singular values of a complex G to 1 (it returned NaN with X X^T).
    rng = np.random.default_rng(7)
    g = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    tx = cc.scale_by_muon(((2.0, -1.5, 0.5),) * 30, nesterov=False, preconditioning=preconditioning)
    u, _ = jax.jit(tx.update)(jnp.asarray(g), tx.init(jnp.asarray(g)))
    assert u.dtype == jnp.complex64
    target = g.astype(np.complex128)
    if preconditioning == "aol":  # AOL rescales the rows of the wide X by (sum_j |X X^H|_ij)^(-1/2)
        wide, back = _wide_numpy(target)
        target = back(wide / np.sqrt(np.abs(wide @ wide.conj().T).sum(axis=1, keepdims=True)))
    np.testing.assert_allclose(u, _numpy_unitary_polar_factor(target), atol=1e-3)


def test_adaptive_muon_scales_a_complex_update_by_the_nuclear_norm():
    # <G, U V^H> = sum(conj(G) U V^H) = tr(S): the dual norm is real for complex G too.
    rng = np.random.default_rng(8)
    g = (rng.normal(size=(4, 6)) + 1j * rng.normal(size=(4, 6))).astype(np.complex64)
    tx = cc.scale_by_muon(((2.0, -1.5, 0.5),) * 30, nesterov=False, adaptive=True)
    u, _ = jax.jit(tx.update)(jnp.asarray(g), tx.init(jnp.asarray(g)))
    nuclear = np.linalg.svd(g.astype(np.complex128), compute_uv=False).sum()
    np.testing.assert_allclose(u, nuclear * _numpy_unitary_polar_factor(g.astype(np.complex128)), atol=1e-2)


def test_muon_spreads_prefix_dimension_numbers_over_their_subtrees():
    # A number (or None) for a subtree stands for each of its leaves: the same updates and
    # state (one MaskedNode per leaf) as the tree spelled out leaf by leaf.
    rng = np.random.default_rng(9)
    normal = lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    params = {"w1": {"a": normal((2, 3)), "b": normal((4, 3))}, "w2": {"a": normal((3, 5)), "b": normal((4,))}}
    dn = cc.MuonDimensionNumbers()
    prefix = {"w1": dn, "w2": {"a": dn, "b": None}}
    spelled_out = {"w1": {"a": dn, "b": dn}, "w2": {"a": dn, "b": None}}
    runs = []
    for numbers in (prefix, spelled_out):
        opt = cc.muon(0.1, muon_weight_dimension_numbers=numbers)
        state = opt.init(params)
        updates, state = jax.jit(opt.update)(params, state, params)
        runs.append((updates, state))
        # tree_map_params probes the state layout with leafless stand-in params.
        assert jax.tree.structure(optcore.tree_map_params(opt, lambda p: p, state)) == jax.tree.structure(state)
    (u_prefix, s_prefix), (u_spelled, s_spelled) = runs
    assert jax.tree.structure(s_prefix) == jax.tree.structure(s_spelled)
    for a, b in zip(jax.tree.leaves((u_prefix, s_prefix)), jax.tree.leaves((u_spelled, s_spelled))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="muon_weight_dimension_numbers must be .* prefix"):
        cc.muon(0.1, muon_weight_dimension_numbers={"w1": dn}).init(params)


def test_galore_applies_one_dimension_numbers_to_the_params_with_two_or_more_axes():
    # The vector goes through Adam in full: its first update is g / (|g| + eps).
    rng = np.random.default_rng(10)
    normal = lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    params = {"w": normal((6, 2, 3)), "b": normal((4,))}
    spec = cc.GaLoreDimensionNumbers(0, (1, 2))
    runs = []
    for numbers in (spec, {"w": spec, "b": None}):
        tx = cc.scale_by_galore(rank=2, weight_dimension_numbers=numbers)
        runs.append(jax.jit(tx.update)(params, tx.init(params), params))
    (u_one, s_one), (u_tree, s_tree) = runs
    for a, b in zip(jax.tree.leaves((u_one, s_one)), jax.tree.leaves((u_tree, s_tree))):
        np.testing.assert_array_equal(a, b)
    assert s_one.projector["w"].shape == (6, 2) and s_one.projector["b"].shape == (0, 0)
    g = np.asarray(params["b"])
    np.testing.assert_allclose(u_one["b"], g / (np.abs(g) + 1e-8), rtol=1e-5)


def test_muon_rejects_unknown_preconditioning():
    with pytest.raises(ValueError, match="preconditioning"):
        cc.scale_by_muon(preconditioning="nuclear")


CONVEX = {
    "acprop": (lambda: cc.acprop(0.05), {}),
    "ademamix": (lambda: cc.ademamix(0.05), {}),
    "adopt": (lambda: cc.adopt(0.05), {}),
    "cocob": (lambda: cc.cocob(), {}),
    "dadapt_adamw": (lambda: cc.dadapt_adamw(), {}),
    "dog": (lambda: cc.dog(), {}),
    "dowg": (lambda: cc.dowg(), {}),
    "madgrad": (lambda: cc.madgrad(0.05), {}),
    "mechanize": (lambda: cc.mechanize(optcore.sgd(0.05)), {}),
    "momo": (lambda: cc.momo(), {"value": True}),
    "momo_adam": (lambda: cc.momo_adam(0.1), {"value": True}),
    "muon": (lambda: cc.muon(0.05), {}),
    "prodigy": (lambda: cc.prodigy(), {}),
    "schedule_free_adamw": (lambda: cc.schedule_free_adamw(0.05), {}),
    "schedule_free_sgd": (lambda: cc.schedule_free_sgd(0.1), {}),
    "simplified_ademamix": (lambda: cc.simplified_ademamix(0.005, b1=0.9), {}),
    "sophia": (lambda: cc.sophia(0.05, update_interval=2), {"obj_fn": True}),
}


@pytest.mark.parametrize("name", sorted(CONVEX))
def test_reduces_a_convex_quadratic_under_jit(name):
    build, extra = CONVEX[name]
    target = jnp.array([1.0, -0.5, 2.0])
    loss = lambda p: jnp.sum((p - target) ** 2) + 0.1  # noqa: E731
    opt = build()
    params = jnp.zeros(3)

    def step(carry, _):
        params, state = carry
        value, grad = jax.value_and_grad(loss)(params)
        kwargs = {"value": value} if "value" in extra else {}
        if "obj_fn" in extra:
            kwargs["obj_fn"] = loss
        updates, state = opt.update(grad, state, params, **kwargs)
        return (optcore.apply_updates(params, updates), state), None

    (params, state), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=100))((params, opt.init(params)))
    assert jnp.all(jnp.isfinite(params))
    assert loss(params) < 0.5 * loss(jnp.zeros(3))


@pytest.mark.parametrize("name", ["adopt", "ademamix", "prodigy", "madgrad", "schedule_free_adamw"])
def test_bf16_params_keep_their_dtype(name):
    opt = CONVEX[name][0]()
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    updates, _ = opt.update({"w": jnp.ones(3, jnp.bfloat16)}, opt.init(params), params)
    assert optcore.apply_updates(params, updates)["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda: cc.adopt(0.1, b1=1.5), "b1"),
        (lambda: cc.prodigy(betas=(0.9, 2.0)), "betas"),
        (lambda: cc.dog(init_step=("nope", 1.0)), "init_step"),
        (lambda: cc.madgrad(0.1, momentum=1.0), "momentum"),
        (lambda: cc.reduce_on_plateau(factor=0.0), "factor"),
        (lambda: cc.sophia(0.1, update_interval=0), "update_interval"),
        (lambda: cc.cocob(alpha=0.0), "alpha"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


@pytest.mark.parametrize(
    "make, arg",
    [
        (lambda b: cc.acprop(0.1, b2=b), "b2"),
        (lambda b: cc.ademamix(0.1, b1=b), "b1"),
        (lambda b: cc.ademamix(0.1, b2=b), "b2"),
        (lambda b: cc.simplified_ademamix(0.1, b2=b), "b2"),
        (lambda b: cc.muon(0.1, beta=b), "beta"),
        (lambda b: cc.prodigy(betas=(b, 0.999)), r"betas\[0\]"),
        (lambda b: cc.prodigy(betas=(0.9, b)), r"betas\[1\]"),
        (lambda b: cc.dadapt_adamw(betas=(0.9, b)), r"betas\[1\]"),
        (lambda b: cc.momo_adam(b1=b), "b1"),
        (lambda b: cc.momo_adam(b2=b), "b2"),
        (lambda b: cc.sophia(0.1, b1=b), "b1"),
        (lambda b: cc.schedule_free_adamw(0.1, b2=b), "b2"),
    ],
)
def test_a_bias_corrected_decay_of_one_is_rejected(make, arg):
    """1 - b**t is a divisor: b = 1 divides by zero, so these decays lie in [0, 1) (the kit's check_beta)."""
    with pytest.raises(ValueError, match=rf"{arg} must be in \[0.0, 1.0\), got 1.0"):
        make(1.0)
    make(0.99)  # just below is fine


@pytest.mark.parametrize("make", [lambda: cc.acprop(0.1, b1=1.0), lambda: cc.ademamix(0.1, b3=1.0)])
def test_a_plain_decay_of_one_is_allowed(make):
    """A decay that is never divided by (acprop's b1, AdEMAMix's slow b3) may be 1: the EMA then stays put."""
    opt = make()
    p = {"w": jnp.ones(4096)}
    updates, _ = opt.update({"w": jnp.ones(4096)}, opt.init(p), p)
    assert jnp.all(jnp.isfinite(updates["w"]))


def test_missing_extra_args_raise_clearly():
    p = jnp.ones(2)
    for opt, word in [(cc.momo(), "value"), (cc.sophia(0.1), "obj_fn"), (cc.reduce_on_plateau(), "value")]:
        with pytest.raises(TypeError, match=rf"missing 1 required keyword argument: .{word}."):
            opt.update(p, opt.init(p), p)


def test_registered_and_reachable_through_optcore():
    from optcore.plugins._catalog import FIRST_PARTY

    assert optcore.contrib is cc
    # The state is registered only to serve Optax's deprecated alias optcore.DifferentiallyPrivateAggregateState.
    registered = cc.OPTIMIZERS + cc.TRANSFORMS + cc.WRAPPERS + cc.UTILITIES + ("DifferentiallyPrivateAggregateState",)
    for name in registered:
        assert optcore.get(name) is getattr(cc, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # optcore.dpsgd & co. warn, as in Optax
            assert getattr(optcore, name) is getattr(cc, name)
    entry = next(p for p in FIRST_PARTY if p.distribution == "optcore-contrib")
    assert set(entry.names) == set(registered)
    assert entry.namespaces == ("contrib",)


def test_mechanize_takes_its_weight_decay_as_a_number_and_says_how_to_schedule_it():
    # Mechanic's decay is relative to the gradient and param norms, inside its own rule
    # (Optax's mechanize takes a number too); the optimizers' decay takes schedules.
    with pytest.raises(TypeError, match=r"^mechanize takes weight_decay as a number .*not a schedule\. "
                       r".*optcore\.inject_hyperparams\(mechanize\)\(weight_decay=schedule, \.\.\.\)\.$"):
        cc.mechanize(optcore.adam(0.05), weight_decay=optcore.linear_schedule(1e-2, 0.0, 10))


def test_mechanize_state_donates_and_maps_its_params_copy():
    """mechanize's r, m, v and x0 are buffers of their own (a donated step works), and
    tree_map_params (whose probe has no leaves to read a dtype from) finds x0 and the base state."""
    opt = cc.mechanize(optcore.adam(0.05))
    params = {"w": jnp.asarray(G), "b": jnp.asarray(X0)}
    state = opt.init(params)
    addresses = [x.unsafe_buffer_pointer() for x in jax.tree.leaves((params, state))]
    assert len(set(addresses)) == len(addresses), "a state leaf shares a buffer"

    def step(p, s):
        updates, s = opt.update(jax.tree.map(lambda x: x - 1.0, p), s, p)
        return optcore.apply_updates(p, updates), s

    expected = jax.jit(step)(params, state)
    donated = jax.jit(step, donate_argnums=(0, 1))(params, state)
    for a, b in zip(jax.tree.leaves(donated), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    state = opt.init({"w": jnp.asarray(G), "b": jnp.asarray(X0)})
    mapped = optcore.tree_map_params(opt, lambda x: x + 1.0, state, transform_non_params=lambda v: None)
    np.testing.assert_array_equal(mapped.x0["w"], G + 1.0)
    np.testing.assert_array_equal(mapped.base_optimizer_state[0].mu["b"], np.ones(3))
    assert mapped.r is None and mapped.count is None
