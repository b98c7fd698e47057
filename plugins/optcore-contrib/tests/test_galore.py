"""GaLore against a NumPy transcription of the paper's equations, closed forms and bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import optcore_contrib as cc

RNG = np.random.default_rng(3)
PARAMS = {
    "w": RNG.normal(size=(5, 3)).astype(np.float32),  # rows >= cols: left projector
    "v": RNG.normal(size=(3, 6)).astype(np.float32),  # rows < cols: right projector
    "b": RNG.normal(size=(3,)).astype(np.float32),  # not a matrix: full-space base update
}
GRADS = [{k: RNG.normal(size=x.shape).astype(np.float32) for k, x in PARAMS.items()} for _ in range(5)]


def _numpy_base(kind):
    """The base optimizer written in NumPy: (init(shape), update(g, state, t) -> (u, state))."""
    if kind == "momentum":  # optcore.sgd(1.0, momentum=0.9): m = g + 0.9 m, u = -m
        return (lambda shape: np.zeros(shape)), (lambda g, m, t: (-(g + 0.9 * m), g + 0.9 * m))
    b1, b2, eps = 0.9, 0.999, 1e-8  # scale_by_adam()

    def update(g, state, t):
        m, v = state
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        return (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps), (m, v)

    return (lambda shape: (np.zeros(shape), np.zeros(shape))), update


def _numpy_galore(kind, rank, gap, scale, grads):
    """Eq. (GaLore): P from the SVD of G every `gap` steps, R = P^T G or G Q, u = scale * P rho(R)."""
    init, update = _numpy_base(kind)
    projector, base_state, out = {}, {}, []
    for t, g in enumerate(grads):
        step = {}
        for name, x in g.items():
            x = x.astype(np.float64)
            if x.ndim != 2:
                step[name], base_state[name] = update(x, base_state.get(name, init(x.shape)), t + 1)
                continue
            m, n = x.shape
            r = min(rank, m, n)
            if t % gap == 0:
                u, _, vt = np.linalg.svd(x, full_matrices=False)
                projector[name] = u[:, :r] if m >= n else vt[:r].T
            p = projector[name]
            low = p.T @ x if m >= n else x @ p
            state = base_state.get(name, init(low.shape))
            normalised, base_state[name] = update(low, state, t + 1)
            step[name] = scale * (p @ normalised if m >= n else normalised @ p.T)
        out.append(step)
    return out


def _run(opt, grads, params=PARAMS):
    params = jax.tree.map(jnp.asarray, params)
    state = opt.init(params)
    update = jax.jit(opt.update)
    out = []
    for g in grads:
        u, state = update(jax.tree.map(jnp.asarray, g), state, params)
        out.append(u)
    return out, state


@pytest.mark.parametrize("kind", ["momentum", "adam"])
def test_scale_by_galore_matches_numpy_equations(kind):
    rank, gap, scale = 2, 2, 0.5
    base = optcore.sgd(1.0, momentum=0.9) if kind == "momentum" else None
    ours, state = _run(cc.scale_by_galore(rank, gap, scale, base), GRADS)
    expected = _numpy_galore(kind, rank, gap, scale, GRADS)
    for step, (a, b) in enumerate(zip(ours, expected)):
        for name in PARAMS:
            # Singular vectors are defined up to sign; P P^T and the base update are
            # odd in P, so the update is sign-free, except for Adam across refreshes,
            # which the shared LAPACK sign convention makes agree as well.
            np.testing.assert_allclose(a[name], b[name], rtol=2e-4, atol=2e-5, err_msg=f"{name} step {step}")
    assert int(state.count) == len(GRADS)
    assert state.projector["w"].shape == (5, 2) and state.projector["v"].shape == (6, 2)
    assert state.projector["b"].shape == (0, 0)


def test_full_rank_galore_with_sgd_is_sgd():
    # With r = min(m, n) and the basis taken from G itself (refreshed every step),
    # P P^T G = G (left) and G Q Q^T = G (right): plain SGD, scaled.
    ours, _ = _run(cc.scale_by_galore(rank=128, update_proj_gap=1, scale=2.0, base_optimizer=optcore.sgd(1.0)), GRADS[:3])
    for u, g in zip(ours, GRADS):
        for name in ("w", "v"):
            np.testing.assert_allclose(u[name], -2.0 * g[name], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(u["b"], -g["b"], rtol=1e-6)  # scale only applies to projected params


def test_projector_is_orthonormal_and_refreshes_every_gap_steps():
    opt = cc.scale_by_galore(rank=2, update_proj_gap=3)
    params = {"w": jnp.zeros((5, 3))}
    state = opt.init(params)
    seen = []
    for g in GRADS:
        _, state = opt.update({"w": jnp.asarray(g["w"])}, state, params)
        p = np.asarray(state.projector["w"])
        np.testing.assert_allclose(p.T @ p, np.eye(2), atol=1e-5)
        seen.append(p)
    np.testing.assert_array_equal(seen[0], seen[2])  # steps 0..2 share the step-0 basis
    assert not np.allclose(seen[2], seen[3])  # refreshed at step 3
    u, _, _ = np.linalg.svd(GRADS[3]["w"], full_matrices=False)
    np.testing.assert_allclose(np.abs(seen[3]), np.abs(u[:, :2]), atol=1e-5)


def test_dimension_numbers_project_a_3d_param_as_a_matrix():
    x = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    numbers = {"t": cc.GaLoreDimensionNumbers(reduction_axis=(0, 2), output_axis=1)}
    opt = cc.scale_by_galore(rank=1, update_proj_gap=5, base_optimizer=optcore.sgd(1.0), weight_dimension_numbers=numbers)
    state = opt.init({"t": jnp.zeros(x.shape)})
    u, state = opt.update({"t": jnp.asarray(x)}, state)
    matrix = np.transpose(x, (0, 2, 1)).reshape(8, 3)  # rows = 2 * 4, cols = 3
    left, _, _ = np.linalg.svd(matrix, full_matrices=False)
    p = left[:, :1]
    expected = -(p @ (p.T @ matrix)).reshape(2, 4, 3).transpose(0, 2, 1)
    np.testing.assert_allclose(u["t"], expected, rtol=1e-4, atol=1e-6)
    assert state.projector["t"].shape == (8, 1)


def test_galore_adds_decoupled_weight_decay_and_learning_rate():
    params = {"w": jnp.asarray(PARAMS["w"])}
    grads = {"w": jnp.asarray(GRADS[0]["w"])}
    inner = cc.scale_by_galore(rank=2, base_optimizer=optcore.sgd(1.0))
    u_inner, _ = inner.update(grads, inner.init(params), params)
    opt = cc.galore(0.1, rank=2, base_optimizer=optcore.sgd(1.0), weight_decay=0.3)
    u, _ = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(u["w"], -0.1 * (u_inner["w"] + 0.3 * params["w"]), rtol=1e-5, atol=1e-7)


def test_galore_reduces_a_matrix_quadratic_under_jit_and_keeps_bf16():
    target = jnp.asarray(RNG.normal(size=(6, 4)), jnp.float32)
    loss = lambda p: jnp.sum((p["w"].astype(jnp.float32) - target) ** 2)  # noqa: E731
    opt = cc.galore(0.1, rank=2, update_proj_gap=5)

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return (optcore.apply_updates(params, updates), state), None

    params = {"w": jnp.zeros((6, 4))}
    (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=60))((params, opt.init(params)))
    assert loss(params) < 0.2 * loss({"w": jnp.zeros((6, 4))})
    bf16 = {"w": jnp.ones((6, 4), jnp.bfloat16), "b": jnp.ones(4, jnp.bfloat16)}
    updates, state = opt.update(bf16, opt.init(bf16), bf16)
    assert updates["w"].dtype == updates["b"].dtype == state[0].projector["w"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "make, error, arg",
    [
        (lambda: cc.scale_by_galore(rank=0), ValueError, "rank"),
        (lambda: cc.scale_by_galore(rank=2.5), TypeError, "rank"),
        (lambda: cc.scale_by_galore(update_proj_gap=0), ValueError, "update_proj_gap"),
        (lambda: cc.galore(0.1, weight_decay=float("nan")), ValueError, "weight_decay"),
        (lambda: cc.galore(0.1, weight_dimension_numbers=cc.GaLoreDimensionNumbers(0, 0)).init(jnp.ones((2, 2))), ValueError, "overlap"),
        (lambda: cc.galore(0.1, weight_dimension_numbers=cc.GaLoreDimensionNumbers(0, 1)).init(jnp.ones((2, 2, 2))), ValueError, "every axis"),
    ],
)
def test_galore_bad_arguments_raise(make, error, arg):
    with pytest.raises(error, match=arg):
        make()


def test_galore_is_registered():
    assert optcore.get("galore") is cc.galore is optcore.contrib.galore
    assert optcore.get("scale_by_galore") is optcore.scale_by_galore is cc.scale_by_galore


def test_transposed_gradient_is_refused_not_reshaped():
    params = {"w": jnp.zeros((2, 3))}
    opt = cc.galore(0.1, rank=1)
    with pytest.raises(ValueError, match=r"\['w'\]: params has shape \(2, 3\), gradient has shape \(3, 2\)"):
        opt.update({"w": jnp.zeros((3, 2))}, opt.init(params), params)
