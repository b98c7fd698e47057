"""Scaling transforms against closed forms written in NumPy (no optax here)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore

RNG = np.random.RandomState(0)
G = RNG.randn(3, 4).astype(np.float32)
P = RNG.randn(3, 4).astype(np.float32)


def _one_step(tx, g=G, p=P, **extra):
    state = tx.init(jnp.asarray(p))
    updates, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, **extra))(jnp.asarray(g), state, jnp.asarray(p))
    return np.asarray(updates, np.float64)


def test_scale_gradient_scales_only_the_backward_pass():
    x = jnp.array([1.0, -2.0])
    f = lambda y: jnp.sum(optcore.scale_gradient(y, 0.25) ** 3)  # noqa: E731
    np.testing.assert_allclose(f(x), np.sum(np.array([1.0, -2.0]) ** 3))
    np.testing.assert_allclose(jax.grad(f)(x), 0.25 * 3 * np.array([1.0, 4.0]))


def test_centralize_removes_row_means_of_matrices_only():
    out = _one_step(optcore.centralize())
    np.testing.assert_allclose(out, G - G.mean(axis=1, keepdims=True), rtol=1e-6, atol=1e-6)
    vec = _one_step(optcore.centralize(), g=G[0], p=P[0])
    np.testing.assert_allclose(vec, G[0], rtol=1e-6)


def test_normalize_by_update_norm():
    out = _one_step(optcore.normalize_by_update_norm(scale_factor=2.0, eps=1e-6))
    np.testing.assert_allclose(out, 2.0 * G / (np.linalg.norm(G) + 1e-6), rtol=1e-5)


def test_trust_ratio_and_param_block_scaling():
    out = _one_step(optcore.scale_by_trust_ratio(trust_coefficient=0.5))
    np.testing.assert_allclose(out, G * 0.5 * np.linalg.norm(P) / np.linalg.norm(G), rtol=1e-5)
    out = _one_step(optcore.scale_by_param_block_norm())
    np.testing.assert_allclose(out, G * np.linalg.norm(P), rtol=1e-5)
    out = _one_step(optcore.scale_by_param_block_rms())
    np.testing.assert_allclose(out, G * np.sqrt(np.mean(P**2)), rtol=1e-5)
    # Complex params scale by the rms of their moduli (adafactor's default; the complex
    # square made the scale complex, and adafactor on complex params did not converge).
    pc = (P + 0.5j * G).astype(np.complex64)
    gc = (G - 0.25j * P).astype(np.complex64)
    tx = optcore.scale_by_param_block_rms()
    out, _ = tx.update(jnp.asarray(gc), tx.init(jnp.asarray(pc)), jnp.asarray(pc))
    np.testing.assert_allclose(out, gc * np.sqrt(np.mean(np.abs(pc) ** 2)), rtol=1e-5)
    with pytest.raises(ValueError, match="params"):
        tx = optcore.scale_by_trust_ratio()
        tx.update(jnp.asarray(G), tx.init(jnp.asarray(P)))


def test_factored_rms_first_step_matches_closed_form():
    eps = 1e-30
    out = _one_step(optcore.scale_by_factored_rms(min_dim_size_to_factor=2, epsilon=eps))
    g2 = G.astype(np.float64) ** 2 + eps
    # First step: decay = 1 - 1**-0.8 = 0, so the statistics are this step's means.
    rows, cols = g2.mean(axis=1), g2.mean(axis=0)
    v_hat = np.outer(rows, cols) / rows.mean()
    np.testing.assert_allclose(out, G / np.sqrt(v_hat), rtol=1e-5)


def test_sm3_matrix_first_step_matches_closed_form():
    out = _one_step(optcore.scale_by_sm3(b1=0.9))
    # First step: accumulators are zero, so a = g**2 and nu = 0.1 * g / |g|.
    np.testing.assert_allclose(out, 0.1 * G / np.sqrt(G.astype(np.float64) ** 2 + 1e-8), rtol=1e-5)


def test_sm3_scalar_param_keeps_a_rank0_accumulator():
    """A scalar param has no axes: its accumulator is a full rank-0 AdaGrad sum (Optax 0.2.8 raises here)."""
    b1, b2, eps = 0.9, 0.5, 1e-8
    tx = optcore.scale_by_sm3(b1=b1, b2=b2, eps=eps)
    state = tx.init(jnp.float32(2.0))
    assert [jnp.shape(v) for v in state.mu] == [()]
    step = jax.jit(tx.update)
    accum, nu = 0.0, 0.0
    for g in [0.5, -1.5, 2.0]:
        out, state = step(jnp.float32(g), state)
        # a_t = (1 - b2) g^2 + b2 a_{t-1};  nu_t = b1 nu_{t-1} + (1 - b1) g / sqrt(a_t + eps)
        accum = (1 - b2) * g**2 + b2 * accum
        nu = b1 * nu + (1 - b1) * g / np.sqrt(accum + eps)
        np.testing.assert_allclose(out, nu, rtol=1e-5)
        assert out.shape == () and state.mu[0].shape == ()


def test_polyak_step_size():
    value = 3.0
    out = _one_step(optcore.scale_by_polyak(f_min=1.0, max_learning_rate=10.0), value=jnp.float32(value))
    np.testing.assert_allclose(out, (value - 1.0) / np.sum(G.astype(np.float64) ** 2) * G, rtol=1e-5)
    capped = _one_step(optcore.scale_by_polyak(max_learning_rate=1e-3), value=jnp.float32(value))
    np.testing.assert_allclose(capped, 1e-3 * G, rtol=1e-5)
    zero = _one_step(optcore.scale_by_polyak(), g=np.zeros_like(G), value=jnp.float32(value))
    np.testing.assert_array_equal(zero, 0.0)


def test_optimistic_gradient_two_steps():
    tx = optcore.scale_by_optimistic_gradient(alpha=0.7, beta=0.4)
    state = tx.init(jnp.zeros(3))
    g1, g2 = jnp.array([1.0, 2.0, -1.0]), jnp.array([0.5, -1.0, 2.0])
    u1, state = tx.update(g1, state)
    u2, _ = tx.update(g2, state)
    np.testing.assert_allclose(u1, 0.7 * g1, rtol=1e-6)
    np.testing.assert_allclose(u2, 1.1 * g2 - 0.4 * g1, rtol=1e-6)


@pytest.mark.parametrize("mode,expected", [("hard", np.sign), ("smooth", lambda c: np.tanh(2.0 * c)), ("refined", lambda c: np.clip(c, -1, 1))])
def test_lion_modes(mode, expected):
    out = _one_step(optcore.scale_by_lion(b1=0.9, mode=mode, smooth_beta=2.0))
    np.testing.assert_allclose(out, expected(0.1 * G.astype(np.float64)), rtol=1e-5, atol=1e-7)


def test_rss_and_rms_and_stddev_first_step():
    np.testing.assert_allclose(_one_step(optcore.scale_by_rss()), G / np.sqrt(0.1 + G.astype(np.float64) ** 2 + 1e-7), rtol=1e-5)
    np.testing.assert_allclose(_one_step(optcore.scale_by_rms()), G / np.sqrt(0.1 * G.astype(np.float64) ** 2 + 1e-8), rtol=1e-5)
    g = G.astype(np.float64)
    np.testing.assert_allclose(
        _one_step(optcore.scale_by_stddev(eps=1e-3)), g / np.sqrt(0.1 * g**2 - (0.1 * g) ** 2 + 1e-3), rtol=1e-5
    )


def test_distance_over_gradients_first_step():
    out = _one_step(optcore.scale_by_distance_over_gradients(reps_rel=0.1))
    r0 = 0.1 * (1 + np.linalg.norm(P))
    np.testing.assert_allclose(out, r0 / np.sqrt(np.sum(G.astype(np.float64) ** 2) + 1e-8) * G, rtol=1e-5)


def test_bad_transform_hyperparameters():
    for make, name in [
        (lambda: optcore.scale_by_lion(mode="soft"), "mode"),
        (lambda: optcore.scale_by_polyak(variant="x"), "variant"),
        (lambda: optcore.scale_by_sm3(b2=1.5), "b2"),
        (lambda: optcore.scale_by_rss(eps=-1.0), "eps"),
        (lambda: optcore.scale_by_adan(b3=-0.1), "b3"),
        (lambda: optcore.normalize_by_update_norm(eps=-1.0), "eps"),
        (lambda: optcore.scale_by_trust_ratio(min_norm=-1.0), "min_norm"),
        (lambda: optcore.scale_by_rprop(float("nan")), "learning_rate"),
    ]:
        with pytest.raises(ValueError, match=name):
            make()
    with pytest.raises(TypeError):
        optcore.scale_by_optimistic_gradient(alpha=lambda step: 1.0)
