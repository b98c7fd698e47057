"""Differential tests against Optax 0.2.8's deprecated optax.second_order."""

import warnings

import pytest

optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from second_order_models import linear_loss, make_linear_problem, make_mlp_problem, mlp_loss  # noqa: E402
import optcore_second_order as ours  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from optax import second_order as theirs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROBLEMS = {
    "linear": (linear_loss, make_linear_problem),
    "mlp": (mlp_loss, make_mlp_problem),
}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_matches_optax(problem):
    loss, make = PROBLEMS[problem]
    params, inputs, targets = make()
    n = jax.flatten_util.ravel_pytree(params)[0].size
    v = jnp.asarray(np.random.default_rng(4).normal(size=n), jnp.float32)

    ours_hvp = ours.hvp(loss, v, params, inputs, targets)
    theirs_hvp = theirs.hvp(loss, v, params, inputs, targets)
    assert jax.tree.structure(ours_hvp) == jax.tree.structure(theirs_hvp)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 ours_hvp, theirs_hvp)

    for chunk_size in (None, 4):
        result = ours.hessian_diag(loss, params, inputs, targets, chunk_size=chunk_size)
        expected = theirs.hessian_diag(loss, params, inputs, targets)
        assert result.shape == expected.shape and result.dtype == expected.dtype
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)

    result = ours.fisher_diag(loss, params, inputs, targets)
    expected = theirs.fisher_diag(loss, params, inputs, targets)
    assert result.shape == expected.shape and result.dtype == expected.dtype
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-9)
