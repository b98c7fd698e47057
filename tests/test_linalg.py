"""Linear algebra and numerics checked against NumPy / SciPy."""

import numpy as np
import pytest
import scipy.optimize

import jax
import jax.numpy as jnp

import optcore
from optcore import linalg, numerics


def _spd(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n))
    return x @ x.T + 0.5 * np.eye(n)


def test_power_iteration_matches_eigh():
    s = _spd(6)
    eigenvalues, eigenvectors = np.linalg.eigh(s)
    value, vector = jax.jit(lambda m: linalg.power_iteration(m, num_iters=500, error_tolerance=1e-7))(jnp.asarray(s, jnp.float32))
    np.testing.assert_allclose(value, eigenvalues[-1], rtol=1e-4)
    np.testing.assert_allclose(abs(np.dot(np.asarray(vector), eigenvectors[:, -1])), 1.0, atol=1e-4)


def test_power_iteration_with_matvec_on_a_tree():
    s = jnp.asarray(_spd(4, 1), jnp.float32)
    matvec = lambda t: {"x": s @ t["x"]}  # noqa: E731
    value, vector = linalg.power_iteration(matvec, v0={"x": jnp.ones(4)}, num_iters=500, error_tolerance=1e-7)
    np.testing.assert_allclose(value, np.linalg.eigvalsh(np.asarray(s, np.float64))[-1], rtol=1e-4)
    assert set(vector) == {"x"}
    with pytest.raises(ValueError, match="v0"):
        linalg.power_iteration(matvec)


@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_matrix_inverse_pth_root_closed_form(p):
    s = _spd(4, 2)
    eigenvalues, vectors = np.linalg.eigh(s)
    ridge = 1e-6 * eigenvalues[-1]
    expected = vectors @ np.diag((eigenvalues + ridge) ** (-1.0 / p)) @ vectors.T
    root, error = jax.jit(lambda m: linalg.matrix_inverse_pth_root(m, p))(jnp.asarray(s, jnp.float32))
    np.testing.assert_allclose(root, expected, rtol=2e-3, atol=2e-4)
    assert float(error) < 1e-4


def test_matrix_inverse_pth_root_rejects_bad_p():
    with pytest.raises(ValueError, match="p must"):
        linalg.matrix_inverse_pth_root(jnp.eye(2), 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_nnls_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(8, 4))
    b = rng.normal(size=(8,))
    expected, _ = scipy.optimize.nnls(a, b)
    out = jax.jit(lambda a, b: linalg.nnls(a, b, 2000))(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert np.all(np.asarray(out) >= 0)


def _nnls_problem(kind, seed):
    """A tall (unique-solution) NNLS problem: well-conditioned, ill-conditioned (cond 1e3) or with A >= 0."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(30, 12))
    if kind == "ill":
        u, _, vt = np.linalg.svd(a, full_matrices=False)
        a = u @ np.diag(np.logspace(0, -3, 12)) @ vt
    elif kind == "positive":
        a = np.abs(a)
    return a, rng.normal(size=(30,))


@pytest.mark.parametrize("kind", ["well", "ill", "positive"])
def test_nnls_default_step_is_the_tightest_cheap_spectral_bound(kind):
    """Default L = min(||A^T A||_F, ||A^T A||_1): a valid bound on lambda_max (so the step 1/L converges)
    and no looser than either norm (the 1-norm alone, used before, slowed nnls down up to 2.5x)."""
    a, b = _nnls_problem(kind, 0)
    gram = a.T @ a
    bound = min(np.linalg.norm(gram, "fro"), np.linalg.norm(gram, 1))
    assert bound >= np.linalg.eigvalsh(gram).max()
    a32, b32 = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    for iters in (1, 5, 20, 50):
        np.testing.assert_allclose(linalg.nnls(a32, b32, iters), linalg.nnls(a32, b32, iters, L=bound), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,iters,rtol", [("well", 200, 1e-5), ("positive", 400, 1e-5), ("ill", 3000, 2e-2)])
def test_nnls_converges_to_scipy(kind, iters, rtol):
    a, b = _nnls_problem(kind, 1)
    expected, _ = scipy.optimize.nnls(a, b, maxiter=10_000)
    out = jax.jit(linalg.nnls, static_argnums=2)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), iters)
    assert np.linalg.norm(np.asarray(out, np.float64) - expected) <= rtol * np.linalg.norm(expected)


def test_nnls_of_a_zero_matrix_is_zero():
    """A = 0: every x >= 0 minimises ||b||; the iteration stays at x = 0 (no 0/0 from L = 0)."""
    out = linalg.nnls(jnp.zeros((4, 3)), jnp.ones(4), 10)
    np.testing.assert_array_equal(out, np.zeros(3))
    np.testing.assert_array_equal(linalg.nnls(jnp.ones((4, 3)), jnp.ones(4), 10, L=0.0) >= 0, True)


def test_nnls_matrix_rhs():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 3))
    b = rng.normal(size=(6, 2))
    out = linalg.nnls(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), 2000)
    for k in range(2):
        np.testing.assert_allclose(out[:, k], scipy.optimize.nnls(a, b[:, k])[0], atol=1e-4)


def test_top_level_exports():
    for name in ["power_iteration", "matrix_inverse_pth_root", "nnls", "safe_norm", "safe_root_mean_squares",
                 "global_norm", "safe_increment", "safe_int32_increment"]:
        assert name in optcore.__all__ and callable(getattr(optcore, name))


def test_safe_increment_saturates():
    big = jnp.array(np.iinfo(np.int32).max, jnp.int32)
    assert int(numerics.safe_increment(big)) == np.iinfo(np.int32).max
    assert int(numerics.safe_int32_increment(jnp.array(3, jnp.int32))) == 4


@pytest.mark.parametrize("count", [True, jnp.array(False), jnp.array(1 + 2j)], ids=str)
def test_safe_increment_rejects_counters_without_an_order(count):
    """bool and complex counters have no largest value to saturate at: a clear ValueError."""
    with pytest.raises(ValueError, match="Cannot safely increment count with dtype (bool|complex64)"):
        numerics.safe_increment(count)


def test_safe_increment_of_unsigned_counters_saturates():
    """uint32's maximum does not fit an int32 comparison (Optax 0.2.8 raises OverflowError here)."""
    top = jnp.array(np.iinfo(np.uint32).max, jnp.uint32)
    assert numerics.safe_increment(top) == top and numerics.safe_increment(top).dtype == jnp.uint32
    assert int(numerics.safe_increment(jnp.array(7, jnp.uint32))) == 8


def test_safe_increment_of_floats_saturates_at_the_largest_float():
    assert float(numerics.safe_increment(2.5)) == 3.5
    top = jnp.array(np.finfo(np.float32).max, jnp.float32)
    assert numerics.safe_increment(top) == top


def test_safe_norm_and_rms_values_and_gradients():
    x = jnp.array([3.0, 4.0])
    np.testing.assert_allclose(numerics.safe_norm(x, 0.1), 5.0)
    np.testing.assert_allclose(numerics.safe_norm(jnp.zeros(2), 0.1), 0.1)
    grad = jax.grad(lambda v: numerics.safe_norm(v, 0.0))(jnp.zeros(2))
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(numerics.safe_root_mean_squares(x, 0.1), np.sqrt(12.5), rtol=1e-6)
    np.testing.assert_allclose(numerics.safe_root_mean_squares(jnp.zeros(2), 0.1), 0.1)
    m = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(numerics.safe_norm(m, 0.0, axis=1), np.linalg.norm(np.arange(6.0).reshape(2, 3), axis=1), rtol=1e-6)


def test_global_norm():
    with pytest.warns(DeprecationWarning):
        value = numerics.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])})
    np.testing.assert_allclose(value, 5.0)
