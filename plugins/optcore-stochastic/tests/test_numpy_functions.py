"""Estimators given NumPy functions, as Optax-era code does (``function=np.sum``).

Optax calls ``function`` on JAX arrays and tracers, so NumPy functions that
delegate to the array's own methods (``np.sum``, ``np.mean``) work there.
NumPy's functions cannot be weakly referenced, which JAX's shape evaluation
and tracing caches need; handing ``np.sum`` itself to ``jax.eval_shape``
raised ``TypeError: cannot create weak reference`` and, on some JAX versions,
crashed the interpreter. The crash reproduction runs in a subprocess so that a
regression fails this test instead of killing the test run.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore_stochastic as st
from optcore_stochastic import utils

MEAN = np.array([0.5, -1.0], np.float32)
LOG_SCALE = np.array([-0.5, 0.2], np.float32)
SIGMA2 = np.exp(2.0 * LOG_SCALE.astype(np.float64))

ESTIMATORS = {
    "score_function_jacobians": 20_000,
    "pathwise_jacobians": 2_000,
    "measure_valued_jacobians": 4_000,
}

# Run in a child interpreter: the estimator given each NumPy function and its
# jax.numpy twin, with the same key; every per-sample Jacobian is saved.
_COMPARISON_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    import optcore_stochastic as st
    from optcore_stochastic import utils
    estimator_name, num_samples, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    estimator = getattr(st, estimator_name)
    params = [jnp.array(%r, jnp.float32), jnp.array(%r, jnp.float32)]
    pairs = {
        "np.sum": (np.sum, jnp.sum),
        "np.mean": (np.mean, jnp.mean),
        # np.sum on a tracer delegates to the tracer's own sum; x * x is JAX arithmetic.
        "np.sum(x*x)": (lambda x: np.sum(x * x), lambda x: jnp.sum(x * x)),
    }
    saved = {}
    for name, (numpy_function, jax_function) in pairs.items():
        for library, function in (("numpy", numpy_function), ("jax", jax_function)):
            jacobians = estimator(function, params, utils.multi_normal, jax.random.key(3), num_samples)
            for index, jacobian in enumerate(jacobians):
                saved[f"{name}|{library}|{index}"] = np.asarray(jacobian)
    np.savez(out_path, **saved)
    """
    % (MEAN.tolist(), LOG_SCALE.tolist())
)

CLOSED_FORMS = {
    # E[sum x] = sum mu: d/dmu = 1, d/dlog(sigma) = 0.
    "np.sum": (np.ones(2), np.zeros(2)),
    # E[mean x] = mean mu: d/dmu = 1/2, d/dlog(sigma) = 0.
    "np.mean": (np.full(2, 0.5), np.zeros(2)),
    # E[sum x^2] = sum mu^2 + sigma^2: d/dmu = 2 mu, d/dlog(sigma) = 2 sigma^2.
    "np.sum(x*x)": (2.0 * MEAN.astype(np.float64), 2.0 * SIGMA2),
}


@pytest.mark.parametrize("estimator_name", sorted(ESTIMATORS))
def test_numpy_function_matches_jax_function_and_closed_form(estimator_name, tmp_path, within_se):
    out_path = tmp_path / "jacobians.npz"
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    result = subprocess.run(
        [sys.executable, "-c", _COMPARISON_SCRIPT, estimator_name, str(ESTIMATORS[estimator_name]), str(out_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, f"exit status {result.returncode} (negative: killed by a signal):\n{result.stderr[-3000:]}"
    saved = np.load(out_path)
    for name, closed_form in CLOSED_FORMS.items():
        for index, expected in enumerate(closed_form):
            from_numpy, from_jax = saved[f"{name}|numpy|{index}"], saved[f"{name}|jax|{index}"]
            np.testing.assert_allclose(from_numpy, from_jax, rtol=1e-6, atol=1e-6, err_msg=name)
            within_se(from_numpy, expected)


def test_numpy_ufunc_gets_jax_error_not_a_crash():
    # A NumPy ufunc converts its argument to an ndarray, which a tracer refuses
    # (as it does in Optax): the user sees JAX's explanation, not a weakref error.
    params = [jnp.zeros(2), jnp.zeros(2)]
    for estimator in (st.score_function_jacobians, st.pathwise_jacobians, st.measure_valued_jacobians):
        with pytest.raises(jax.errors.TracerArrayConversionError):
            estimator(lambda x: np.sum(np.square(x)), params, utils.multi_normal, jax.random.key(0), 4)


class _UserGaussian:
    """A user's own distribution class, with the sample/log_prob protocol."""

    def __init__(self, loc, log_scale):
        self.loc, self.log_scale = loc, log_scale

    def sample(self, shape, seed):
        return self.loc + jnp.exp(self.log_scale) * jax.random.normal(seed, tuple(shape) + self.loc.shape)

    def log_prob(self, x):
        return jnp.sum(-0.5 * ((x - self.loc) / jnp.exp(self.log_scale)) ** 2 - self.log_scale, axis=-1)


class _UserStudentT:
    """A user's class whose constructor does not take (mean, log_scale)."""

    def __init__(self, df):
        self.df = df


@pytest.mark.parametrize("user_class", [_UserGaussian, _UserStudentT])
def test_measure_valued_rejects_user_distribution_class_with_documented_error(user_class):
    params = [jnp.zeros(2), jnp.zeros(2)]
    with pytest.raises(ValueError, match="only diagonal Gaussians"):
        st.measure_valued_jacobians(jnp.sum, params, user_class, jax.random.key(0), 8)
    with pytest.raises(ValueError, match="only diagonal Gaussians"):
        st.measure_valued_jacobians(jnp.sum, params, lambda m, s: user_class(m, s), jax.random.key(0), 8)


def test_measure_valued_accepts_wrappers_of_multi_normal():
    params = [jnp.asarray(MEAN), jnp.asarray(LOG_SCALE)]
    direct = st.measure_valued_jacobians(jnp.sum, params, utils.multi_normal, jax.random.key(0), 16)
    for builder in (utils.MultiNormalDiagFromLogScale, lambda m, s: utils.multi_normal(m, s)):
        wrapped = st.measure_valued_jacobians(jnp.sum, params, builder, jax.random.key(0), 16)
        for a, b in zip(direct, wrapped):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
