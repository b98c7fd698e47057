"""The estimators: unbiasedness against closed forms, applicability errors, jit/vmap, determinism."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore_stochastic as st
from optcore_stochastic import utils

MEAN = np.array([0.5, -1.0], np.float32)
LOG_SCALE = np.array([-0.5, 0.2], np.float32)
SIGMA2 = np.exp(2.0 * LOG_SCALE.astype(np.float64))
W = np.array([0.7, -0.3], np.float32)
A = np.array([1.5, -0.5], np.float32)


def _linear(x):
    return jnp.dot(W, x)


def _quadratic(x):
    return jnp.sum(A * x**2)


def _exp(x):
    return jnp.exp(jnp.dot(W, x))


def _analytic_gradients(name):
    """d/d(mean) and d/d(log_scale) of E[f(x)], x ~ N(MEAN, diag(SIGMA2)), in closed form."""
    mean, w, a = MEAN.astype(np.float64), W.astype(np.float64), A.astype(np.float64)
    if name == "linear":  # E = w.mu
        return w, np.zeros(2)
    if name == "quadratic":  # E = sum a (mu^2 + s^2); d/dlog s = 2 a s^2
        return 2 * a * mean, 2 * a * SIGMA2
    if name == "exp":  # E = exp(w.mu + sum w^2 s^2 / 2) (lognormal mean)
        expectation = np.exp(w @ mean + 0.5 * np.sum(w**2 * SIGMA2))
        return w * expectation, w**2 * SIGMA2 * expectation
    raise KeyError(name)


FUNCTION_NAMES = ("linear", "quadratic", "exp")


def _selected(x, selector):
    """One of the test functions, picked by a one-hot ``selector`` that is traced under jit,
    so that one compilation serves all three (compiling dominates these tests' time)."""
    return selector[0] * _linear(x) + selector[1] * _quadratic(x) + selector[2] * _exp(x)


# Sample sizes: enough for a few-percent standard error, small enough for a fast test.
ESTIMATORS = {
    "score_function": (st.score_function_jacobians, 20_000),
    "pathwise": (st.pathwise_jacobians, 2_000),
    "measure_valued": (st.measure_valued_jacobians, 4_000),
    "measure_valued_uncoupled": (functools.partial(st.measure_valued_jacobians, coupling=False), 4_000),
}


@pytest.mark.parametrize("estimator_name", sorted(ESTIMATORS))
def test_sample_mean_is_unbiased(estimator_name, within_se):
    """Linear, quadratic and exp functions of a Gaussian, three seeds each."""
    estimator, num_samples = ESTIMATORS[estimator_name]
    params = [jnp.asarray(MEAN), jnp.asarray(LOG_SCALE)]

    @jax.jit
    def run(key, selector):
        return estimator(lambda x: _selected(x, selector), params, utils.multi_normal, key, num_samples)

    for index, name in enumerate(FUNCTION_NAMES):
        selector = jnp.zeros(3).at[index].set(1.0)
        expected = _analytic_gradients(name)
        for seed in range(3):
            jacobians = run(jax.random.key(seed), selector)
            assert isinstance(jacobians, list) and len(jacobians) == 2
            for jac, exp in zip(jacobians, expected):
                assert jac.shape == (num_samples, 2)
                within_se(jac, exp)


def test_measure_valued_accepts_matrix_parameters(within_se):
    mean = jnp.array([[0.3, -0.2], [1.0, 0.1]])
    log_scale = jnp.full((2, 2), -0.3)
    weights = jnp.array([[1.0, 2.0], [-1.0, 0.5]])
    run = jax.jit(lambda key: st.measure_valued_jacobians(lambda x: jnp.sum(weights * x**2), [mean, log_scale], utils.multi_normal, key, 3_000))
    jacobians = run(jax.random.key(0))
    assert [j.shape for j in jacobians] == [(3_000, 2, 2), (3_000, 2, 2)]
    within_se(jacobians[0], 2 * np.asarray(weights) * np.asarray(mean))
    within_se(jacobians[1], 2 * np.asarray(weights) * np.exp(2 * np.asarray(log_scale)))


def test_score_function_works_for_a_discrete_distribution(within_se):
    """Bernoulli(sigmoid(logit)) in d dims with f(x) = sum c x: dE/dlogit = c p (1 - p)."""

    class Bernoulli:
        def __init__(self, logits):
            self.logits = logits

        def sample(self, shape, key):
            p = jax.nn.sigmoid(self.logits)
            return (jax.random.uniform(key, tuple(shape) + self.logits.shape) < p).astype(jnp.int32)

        def log_prob(self, x):
            return jnp.sum(x * jax.nn.log_sigmoid(self.logits) + (1 - x) * jax.nn.log_sigmoid(-self.logits), axis=-1)

    logits = jnp.array([0.3, -1.2, 2.0])
    c = np.array([1.0, -2.0, 0.5])
    run = jax.jit(lambda key: st.score_function_jacobians(lambda x: jnp.dot(jnp.asarray(c), x), [logits], Bernoulli, key, 20_000))
    (jac,) = run(jax.random.key(3))
    p = 1 / (1 + np.exp(-np.asarray(logits, np.float64)))
    within_se(jac, c * p * (1 - p))


ALL_ESTIMATORS = (st.score_function_jacobians, st.pathwise_jacobians, st.measure_valued_jacobians)


@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=lambda e: e.__name__)
def test_deterministic_jit_and_vmap_friendly(estimator):
    """Same key, same samples; jit matches eager; vmap over keys matches one key at a time."""
    params = [jnp.asarray(MEAN), jnp.asarray(LOG_SCALE)]
    single = jax.jit(lambda k: estimator(_exp, params, utils.multi_normal, k, 16))
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(lambda k: estimator(_exp, params, utils.multi_normal, k, 16)))(keys)
    first, again, other = single(keys[0]), single(keys[0]), single(keys[1])
    for i, (f, a, o) in enumerate(zip(first, again, other)):
        np.testing.assert_array_equal(f, a)
        np.testing.assert_allclose(batched[i][0], f, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched[i][1], o, rtol=1e-5, atol=1e-6)
        assert not np.allclose(f, o)


def test_eager_matches_jit():
    params = [jnp.asarray(MEAN), jnp.asarray(LOG_SCALE)]
    eager = st.pathwise_jacobians(_exp, params, utils.multi_normal, jax.random.key(4), 16)
    jitted = jax.jit(lambda k: st.pathwise_jacobians(_exp, params, utils.multi_normal, k, 16))(jax.random.key(4))
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(e, j, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=lambda e: e.__name__)
def test_jacobian_dtype_follows_parameters(estimator):
    params = [jnp.zeros(2, jnp.bfloat16), jnp.zeros(2, jnp.bfloat16)]
    jacobians = jax.jit(lambda k: estimator(lambda x: jnp.sum(x**2), params, utils.multi_normal, k, 8))(jax.random.key(0))
    assert all(j.dtype == jnp.bfloat16 and j.shape == (8, 2) for j in jacobians)


# -- applicability errors ---------------------------------------------------------------


def _laplace(loc, log_scale):
    class Laplace:
        def sample(self, shape, key):
            return loc + jnp.exp(log_scale) * jax.random.laplace(key, tuple(shape) + loc.shape)

        def log_prob(self, x):
            return jnp.sum(-jnp.abs(x - loc) / jnp.exp(log_scale) - log_scale - jnp.log(2.0), axis=-1)

    return Laplace()


def test_measure_valued_rejects_non_gaussian_builder():
    with pytest.raises(ValueError, match="only diagonal Gaussians"):
        st.measure_valued_jacobians(_linear, [jnp.zeros(2), jnp.zeros(2)], _laplace, jax.random.key(0), 8)
    # The other estimators accept it.
    assert st.score_function_jacobians(_linear, [jnp.zeros(2), jnp.zeros(2)], _laplace, jax.random.key(0), 8)[0].shape == (8, 2)
    assert st.pathwise_jacobians(_linear, [jnp.zeros(2), jnp.zeros(2)], _laplace, jax.random.key(0), 8)[0].shape == (8, 2)


@pytest.mark.parametrize(
    "function",
    [
        lambda x: jnp.sum(jnp.round(x)),
        lambda x: jnp.sum(jnp.sign(x) * 2.0),
        lambda x: jnp.argmax(x).astype(jnp.float32),
        lambda x: jnp.sum(jax.lax.stop_gradient(x) ** 2),
        jax.jit(lambda x: jnp.sum(jnp.floor(x))),
    ],
    ids=["round", "sign", "argmax", "stop_gradient", "jitted_floor"],
)
def test_pathwise_rejects_zero_derivative_functions(function):
    with pytest.raises(ValueError, match="zero derivative"):
        st.pathwise_jacobians(function, [jnp.zeros(2), jnp.zeros(2)], utils.multi_normal, jax.random.key(0), 8)
    # score function only evaluates f, so it accepts the same function
    st.score_function_jacobians(function, [jnp.zeros(2), jnp.zeros(2)], utils.multi_normal, jax.random.key(0), 8)


def test_pathwise_rejects_integer_or_boolean_outputs():
    for function in (lambda x: jnp.sum(x > 0), lambda x: jnp.all(x > 0)):
        with pytest.raises(TypeError, match="returns"):
            st.pathwise_jacobians(function, [jnp.zeros(2), jnp.zeros(2)], utils.multi_normal, jax.random.key(0), 8)


def test_pathwise_accepts_a_constant_function():
    jacobians = st.pathwise_jacobians(lambda x: jnp.array(2.0), [jnp.zeros(2), jnp.zeros(2)], utils.multi_normal, jax.random.key(0), 8)
    assert all(np.all(np.asarray(j) == 0) for j in jacobians)


def test_estimators_check_their_arguments():
    params = [jnp.zeros(2), jnp.zeros(2)]
    for estimator in (st.score_function_jacobians, st.pathwise_jacobians, st.measure_valued_jacobians):
        with pytest.raises(ValueError, match="num_samples must be an integer of at least 1, got 0"):
            estimator(_linear, params, utils.multi_normal, jax.random.key(0), 0)
        with pytest.raises(TypeError, match="num_samples must be an integer of at least 1, got 2.0"):
            estimator(_linear, params, utils.multi_normal, jax.random.key(0), 2.0)
        with pytest.raises(ValueError, match="scalar"):
            estimator(lambda x: x, params, utils.multi_normal, jax.random.key(0), 4)
        with pytest.raises(TypeError, match="list or tuple"):
            estimator(_linear, jnp.zeros(2), utils.multi_normal, jax.random.key(0), 4)


def test_multi_normal_samples_and_log_prob():
    dist = utils.multi_normal(jnp.array([1.0, -2.0]), jnp.array([0.0, np.log(3.0)]))
    with_key = dist.sample((5,), key=jax.random.key(1))
    with_seed = dist.sample((5,), seed=jax.random.key(1))
    np.testing.assert_array_equal(with_key, with_seed)
    assert with_key.shape == (5, 2)
    x = np.array([[0.5, 1.0], [2.0, -2.0]])
    scales = np.array([1.0, 3.0])
    expected = np.sum(-0.5 * ((x - np.array([1.0, -2.0])) / scales) ** 2 - np.log(scales) - 0.5 * np.log(2 * np.pi), axis=-1)
    np.testing.assert_allclose(dist.log_prob(jnp.asarray(x)), expected, rtol=1e-6)
    assert [p.shape for p in dist.params] == [(2,), (2,)]
    np.testing.assert_allclose(dist.log_scale, [0.0, np.log(3.0)])
    with pytest.raises(TypeError, match="key"):
        dist.sample((2,))
