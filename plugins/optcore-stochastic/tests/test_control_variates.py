"""Control variates: closed forms, variance reduction, unbiasedness with every estimator, state."""

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
PARAMS = [jnp.asarray(MEAN), jnp.asarray(LOG_SCALE)]


def _exp(x):
    return jnp.exp(jnp.dot(W, x))


def _exp_gradients():
    mean, w = MEAN.astype(np.float64), W.astype(np.float64)
    expectation = np.exp(w @ mean + 0.5 * np.sum(w**2 * SIGMA2))
    return w * expectation, w**2 * SIGMA2 * expectation


def _offset_quadratic(x):
    """A quadratic with a large constant: the case where baselines help most."""
    return jnp.sum((x - 2.0) ** 2) + 10.0


def test_delta_method_matches_its_taylor_expansion():
    compute_cv, expected_value_cv, update_state = st.control_delta_method(_exp)
    mean, w = MEAN.astype(np.float64), W.astype(np.float64)
    f_mean = np.exp(w @ mean)
    x = np.array([0.1, 0.4])
    centred = x - mean
    taylor = f_mean * (1 + w @ centred + 0.5 * (w @ centred) ** 2)  # grad = w f, hessian = w w^T f
    np.testing.assert_allclose(compute_cv(PARAMS, jnp.asarray(x, jnp.float32), None), taylor, rtol=1e-5)
    np.testing.assert_allclose(expected_value_cv(PARAMS, None), f_mean * (1 + 0.5 * np.sum(SIGMA2 * w**2)), rtol=1e-5)
    assert update_state(PARAMS, jnp.zeros((3, 2)), None) is None


def _moving_average_reference(batch_means, decay, zero_debias, heuristic):
    """The debiased moving average written as a weighted average of the batch means."""
    average, product_of_decays, out = 0.0, 1.0, []
    for step, m in enumerate(batch_means):
        d = min(decay, (1.0 + step) / (10.0 + step)) if heuristic else decay
        average = d * average + (1 - d) * m
        product_of_decays *= d
        out.append(average / (1 - product_of_decays) if zero_debias else average)
    return np.array(out)


@pytest.mark.parametrize("decay", [0.5, 0.9])
@pytest.mark.parametrize("zero_debias", [True, False])
@pytest.mark.parametrize("heuristic", [True, False])
def test_moving_average_state_matches_reference(decay, zero_debias, heuristic):
    _, _, update_state = st.moving_avg_baseline(lambda x: x[0], decay=decay, zero_debias=zero_debias, use_decay_early_training_heuristic=heuristic)
    batch_means = np.random.default_rng(0).normal(3.0, 1.0, size=25)
    update = jax.jit(update_state)
    state, values = (jnp.array(0.0), 0), []
    for m in batch_means:
        samples = jnp.array([[m - 1.0], [m + 1.0]], jnp.float32)  # batch mean m
        state = update(PARAMS, samples, state)
        values.append(float(state[0]))
    assert int(state[1]) == len(batch_means)
    np.testing.assert_allclose(values, _moving_average_reference(batch_means, decay, zero_debias, heuristic), rtol=2e-5, atol=1e-5)


def _variance(jacobians):
    return sum(float(jnp.sum(jnp.var(j, axis=0))) for j in jacobians)


def test_delta_method_and_baseline_reduce_score_function_variance():
    num_samples, key = 4_000, jax.random.key(0)

    @jax.jit
    def plain_and_delta(key):
        plain = st.score_function_jacobians(_offset_quadratic, PARAMS, utils.multi_normal, key, num_samples)
        with_delta, _ = st.control_variates_jacobians(
            _offset_quadratic, st.control_delta_method, st.score_function_jacobians, PARAMS, utils.multi_normal, key, num_samples)
        return plain, with_delta

    plain, with_delta = plain_and_delta(key)
    # The delta method is exact for a quadratic: only the (constant) correction terms remain.
    assert _variance(with_delta) / _variance(plain) < 1e-3

    baseline = functools.partial(st.moving_avg_baseline, decay=0.9)
    step = jax.jit(lambda k, s: st.control_variates_jacobians(
        _offset_quadratic, baseline, st.score_function_jacobians, PARAMS, utils.multi_normal, k, num_samples, s))
    state = (jnp.array(0.0), 0)
    for seed in range(1, 4):  # warm the baseline up on other samples
        _, state = step(jax.random.key(seed), state)
    with_baseline, state = step(key, state)
    # E[f] is about 20 and its spread about 6: removing the mean cuts the variance several-fold.
    assert _variance(with_baseline) / _variance(plain) < 0.3


def test_moving_average_accepts_none_as_the_initial_state():
    compute_cv, expected_value_cv, update_state = st.moving_avg_baseline(lambda x: x[0])
    assert float(compute_cv(PARAMS, jnp.zeros(2), None)) == 0.0 == float(expected_value_cv(PARAMS, None))
    value, step = update_state(PARAMS, jnp.array([[2.0, 0.0], [4.0, 0.0]]), None)
    assert float(value) == pytest.approx(3.0) and step == 1  # debiased: the first batch mean exactly


def test_baseline_has_no_effect_on_pathwise_and_measure_valued():
    state = (jnp.array(5.0), 3)
    for estimator in (st.pathwise_jacobians, st.measure_valued_jacobians):

        @jax.jit
        def both(key, state):
            plain = estimator(_exp, PARAMS, utils.multi_normal, key, 32)
            corrected, new_state = st.control_variates_jacobians(
                _exp, st.moving_avg_baseline, estimator, PARAMS, utils.multi_normal, key, 32, state)
            return plain, corrected, new_state

        plain, corrected, new_state = both(jax.random.key(1), state)
        for p, c in zip(plain, corrected):
            np.testing.assert_allclose(c, p, rtol=1e-5, atol=1e-6)
        assert int(new_state[1]) == 4


ESTIMATORS = {
    "score_function": st.score_function_jacobians,
    "pathwise": st.pathwise_jacobians,
    "measure_valued": st.measure_valued_jacobians,
}


@pytest.mark.parametrize(
    "estimator_name, estimate_coefficients",
    [("score_function", False), ("pathwise", False), ("measure_valued", False), ("score_function", True)],
    ids=["score_function", "pathwise", "measure_valued", "score_function-estimated_c"],
)
def test_delta_corrected_estimators_are_unbiased(estimator_name, estimate_coefficients, within_se):
    """exp is not quadratic, so the delta method is not exact and the correction terms matter.

    The correction includes a mean over the batch, so the spread of the per-sample
    Jacobians does not measure the whole error: the standard error comes from 16
    independent runs (vmapped over keys) instead.
    """
    estimator = ESTIMATORS[estimator_name]

    def batch_gradient(key):
        jacobians, _ = st.control_variates_jacobians(
            _exp, st.control_delta_method, estimator, PARAMS, utils.multi_normal, key, 500,
            estimate_cv_coeffs=estimate_coefficients, estimate_cv_coeffs_num_samples=100)
        return [jnp.mean(j, axis=0) for j in jacobians]

    run_means = jax.jit(jax.vmap(batch_gradient))(jax.random.split(jax.random.key(2), 16))
    for means, expected in zip(run_means, _exp_gradients()):
        within_se(means, expected)


def test_estimated_coefficients():
    @jax.jit
    def coefficients(key):
        # The delta method reproduces a quadratic exactly: the best coefficient is 1.
        exact = st.estimate_control_variate_coefficients(
            _offset_quadratic, st.control_delta_method, st.score_function_jacobians, PARAMS, utils.multi_normal, key, 200)
        # A baseline contributes nothing to pathwise Jacobians: its coefficient is 0 (eps avoids 0/0).
        useless = st.estimate_control_variate_coefficients(
            _exp, st.moving_avg_baseline, st.pathwise_jacobians, PARAMS, utils.multi_normal, key, 50, (jnp.array(1.0), 1))
        return exact, useless

    exact, useless = coefficients(jax.random.key(0))
    np.testing.assert_allclose(exact, [1.0, 1.0], atol=1e-3)
    np.testing.assert_allclose(useless, [0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="eps"):
        st.estimate_control_variate_coefficients(
            _exp, st.control_delta_method, st.score_function_jacobians, PARAMS, utils.multi_normal, jax.random.key(0), 50, eps=-1.0)


def test_moving_average_rejects_bad_decay():
    with pytest.raises(ValueError, match="decay"):
        st.moving_avg_baseline(_exp, decay=1.5)
    with pytest.raises(ValueError, match="decay"):
        st.moving_avg_baseline(_exp, decay=1.0, use_decay_early_training_heuristic=False)
