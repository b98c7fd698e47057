"""Projections checked against closed forms and sort-based NumPy algorithms."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from optcore import projections as P


def _np_simplex(v, s=1.0):
    """Projection onto {x >= 0, sum x = s} by bisection on the threshold (independent of sorting)."""
    lo, hi = v.min() - s, v.max()
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.maximum(v - mid, 0).sum() > s:
            lo = mid
        else:
            hi = mid
    return np.maximum(v - (lo + hi) / 2, 0)


def _tree(seed=0):
    rng = np.random.default_rng(seed)
    return {"a": jnp.asarray(rng.normal(size=(3,)), jnp.float32), "b": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_simplex_matches_bisection(scale):
    tree = _tree(1)
    out = jax.jit(P.projection_simplex)(tree, scale)
    np.testing.assert_allclose(_flat(out), _np_simplex(_flat(tree), scale), atol=1e-5)
    assert jax.tree.structure(out) == jax.tree.structure(tree)


def test_l1_ball_and_sphere():
    x = _tree(2)
    flat = _flat(x)
    expected_sphere = np.sign(flat) * _np_simplex(np.abs(flat), 1.0)
    np.testing.assert_allclose(_flat(P.projection_l1_sphere(x, 1.0)), expected_sphere, atol=1e-5)
    np.testing.assert_allclose(_flat(P.projection_l1_ball(x, 1.0)), expected_sphere, atol=1e-5)
    # Inside the ball nothing moves.
    np.testing.assert_allclose(_flat(P.projection_l1_ball(x, 100.0)), flat, atol=1e-6)


def test_l2_ball_sphere_linf_box_hypercube_nonneg():
    x = _tree(3)
    flat = _flat(x)
    norm = np.linalg.norm(flat)
    np.testing.assert_allclose(_flat(P.projection_l2_sphere(x, 2.0)), 2.0 * flat / norm, rtol=1e-5)
    np.testing.assert_allclose(_flat(P.projection_l2_ball(x, 0.5)), 0.5 * flat / norm, rtol=1e-5)
    np.testing.assert_allclose(_flat(P.projection_l2_ball(x, 100.0)), flat, rtol=1e-6)
    np.testing.assert_allclose(_flat(P.projection_linf_ball(x, 0.3)), np.clip(flat, -0.3, 0.3))
    np.testing.assert_allclose(_flat(P.projection_box(x, -0.2, 0.4)), np.clip(flat, -0.2, 0.4))
    lower = jax.tree.map(lambda t: jnp.full_like(t, -0.1), x)
    upper = jax.tree.map(lambda t: jnp.full_like(t, 0.1), x)
    np.testing.assert_allclose(_flat(P.projection_box(x, lower, upper)), np.clip(flat, -0.1, 0.1))
    np.testing.assert_allclose(_flat(P.projection_hypercube(x, 0.7)), np.clip(flat, 0, 0.7))
    np.testing.assert_allclose(_flat(P.projection_non_negative(x)), np.maximum(flat, 0))


def test_l2_sphere_of_zero_is_finite():
    out = P.projection_l2_sphere(jnp.zeros(3), 1.0)
    assert np.all(np.isfinite(np.asarray(out)))


def test_hyperplane_halfspace_vector():
    x, a = _tree(4), _tree(5)
    fx, fa = _flat(x), _flat(a)
    b = 0.3
    plane = fx - (fa @ fx - b) / (fa @ fa) * fa
    out = _flat(P.projection_hyperplane(x, a, b))
    np.testing.assert_allclose(out, plane, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fa @ out, b, atol=1e-5)
    half = fx if fa @ fx <= b else plane
    np.testing.assert_allclose(_flat(P.projection_halfspace(x, a, b)), half, rtol=1e-5, atol=1e-6)
    # A point already in the half-space stays.
    np.testing.assert_allclose(_flat(P.projection_halfspace(x, a, fa @ fx + 1.0)), fx, rtol=1e-6)
    np.testing.assert_allclose(_flat(P.projection_vector(x, a)), (fa @ fx) / (fa @ fa) * fa, rtol=1e-5, atol=1e-6)


def test_projections_are_idempotent_and_jittable():
    x = _tree(6)
    for fn in [P.projection_simplex, P.projection_l1_ball, P.projection_l2_ball, P.projection_linf_ball]:
        once = jax.jit(fn)(x)
        np.testing.assert_allclose(_flat(fn(once)), _flat(once), atol=1e-5)


def test_ball_projections_have_the_identity_gradient_inside_and_at_zero():
    # Inside the ball the projection is x, so its Jacobian is the identity, at x = 0 too
    # (the l2 norm's 0/0 derivative at zero made the l2 ball's gradient NaN there).
    for fn in (P.projection_l2_ball, P.projection_l1_ball, P.projection_linf_ball):
        assert float(jax.grad(fn)(0.0)) == 1.0, fn.__name__
        np.testing.assert_array_equal(jax.jacobian(fn)(jnp.zeros(3)), np.eye(3))
    # Outside, the l2 ball's Jacobian is s/|x| (I - x x^T/|x|^2).
    x = jnp.array([3.0, 4.0])
    want = 0.5 / 5.0 * (np.eye(2) - np.outer(x, x) / 25.0)
    np.testing.assert_allclose(jax.jacobian(lambda v: P.projection_l2_ball(v, 0.5))(x), want, rtol=1e-5, atol=1e-7)


def test_bad_bound_structure_raises():
    with pytest.raises(ValueError, match="bound"):
        P.projection_box(_tree(), jnp.zeros(2), 1.0)


def test_python_float_inputs_and_radii_give_the_closed_forms():
    """Python floats as leaves and as radii (Optax accepts them): each result against its closed form."""
    np.testing.assert_allclose(P.projection_l2_ball({"u": 3.0, "v": 4.0}, 2.5)["u"], 1.5, rtol=1e-6)  # 3 * 2.5/5
    np.testing.assert_allclose(P.projection_l2_sphere(-3.0, 2.0), -2.0, rtol=1e-6)
    x, a = {"u": 1.0, "v": 2.0}, {"u": 1.0, "v": 1.0}
    # <a, x> = 3; onto <a, y> = 1: y = x - (3 - 1)/|a|^2 a = (0, 1).
    plane = P.projection_hyperplane(x, a, 1.0)
    np.testing.assert_allclose([plane["u"], plane["v"]], [0.0, 1.0], atol=1e-6)
    half = P.projection_halfspace(x, a, 5.0)  # already inside: unchanged
    np.testing.assert_allclose([half["u"], half["v"]], [1.0, 2.0])
    line = P.projection_vector(x, {"u": 1.0, "v": 0.0})
    np.testing.assert_allclose([line["u"], line["v"]], [1.0, 0.0])
    np.testing.assert_allclose(P.projection_linf_ball([0.2, -3.0], 0.5), [0.2, -0.5])
    for leaf in jax.tree.leaves((plane, half, line)):
        assert jnp.result_type(leaf) == jnp.float32  # a Python float leaf gives the default float dtype


@pytest.mark.parametrize("scale", [0.5, np.float64(0.5), jnp.float32(0.5)])
def test_radius_dtype_does_not_change_the_leaf_dtype(scale):
    tree = {"low": jnp.array([0.3, -1.2, 2.0], jnp.bfloat16), "full": jnp.array([0.5, 4.0], jnp.float32)}
    for name in ("projection_linf_ball", "projection_hypercube", "projection_l2_ball", "projection_l2_sphere",
                 "projection_l1_ball", "projection_simplex"):
        out = jax.jit(getattr(P, name))(tree, scale)
        assert jax.tree.map(lambda x: x.dtype, out) == jax.tree.map(lambda x: x.dtype, tree), name
    np.testing.assert_allclose(np.asarray(P.projection_linf_ball(tree, scale)["low"], np.float32), [0.3, -0.5, 0.5], rtol=1e-2)
