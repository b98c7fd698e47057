"""float64 params under ``jax_enable_x64`` against Optax 0.2.8: float64 arithmetic throughout.

Users who turn on x64 (scientific fits, L-BFGS, small problems solved to high
accuracy) expect float64 params to be optimized in float64. Optax gets that
from its Python-float hyperparameters. optcore's hyperparameters enter as
float32 arrays (so that plain and injected optimizers agree bit for bit), in
float64 when the updates are float64 (``optcore.kit.hyperparameter_dtype``),
and scalar statistics (learning-rate-free estimates, line-search values) are
stored in float64 for float64 params. Before that, every optimizer stopped at
float32 precision here: Adam's params were 1e-6 (relative) from Optax's.

Every registered optimizer with an Optax twin runs 50 jitted steps on float64
params (test_oracle_dtypes' problem): the params agree with Optax's to rtol
1e-10 (float32 arithmetic anywhere shows as 1e-8 or more) and every update and
state leaf has Optax's dtype. The scaling transforms of test_oracle_optimizers
are checked the same way on its problem.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

optax = pytest.importorskip("optax")

import optcore  # noqa: E402
import registry_cases  # noqa: E402
import test_oracle_optimizers as oracle  # noqa: E402
from test_oracle_dtypes import is_optax_extra_args, is_optcore_extra_args, optax_factory, params_of, run  # noqa: E402

RTOL = 1e-10
# Where Optax itself computes in float32 with float64 params, optcore in float64:
# compared at a float32 tolerance, with the reason.
OPTAX_FLOAT32_STEPS = {
    "galore": (1e-5, "Optax 0.2.8 casts the gradient to float32 for its projection SVD"),
    "madgrad": (1e-6, "Optax 0.2.8 takes sqrt(count + 1) of an int32 count, in float32"),
}
# rprop's params differ by design: optcore emits the current step, Optax 0.2.8 the previous one.
PARAMS_DIFFER_BY_DESIGN = {"rprop": "Optax 0.2.8 emits the previous step's update (optcore: the current one)"}


def registry_cases_with_optax():
    out = []
    for case in registry_cases.optimizer_cases():
        theirs = None if case.skip else optax_factory(case.name)
        reason = case.skip or (None if theirs else f"Optax 0.2.8 has no {case.name}")
        marks = [pytest.mark.skip(reason)] if reason else []
        out.append(pytest.param(case, theirs, id=case.name, marks=marks))
    return out


@pytest.mark.parametrize("case, theirs", registry_cases_with_optax())
def test_float64_params_are_optimized_in_float64_as_optax(case, theirs):
    with jax.enable_x64(True):
        params = params_of(case.name, jnp.float64)
        ours = case.build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            reference = theirs(**case.kwargs)
        ours_params, ours_dtypes, _ = run(ours, case.name, params, is_optcore_extra_args)
        theirs_params, theirs_dtypes, _ = run(reference, case.name, params, is_optax_extra_args)

    for (when, ours_leaves), (_, theirs_leaves) in zip(ours_dtypes, theirs_dtypes):
        assert ours_leaves == theirs_leaves, f"{when}: optcore {ours_leaves} != optax {theirs_leaves}"
    if case.name in PARAMS_DIFFER_BY_DESIGN:
        return
    rtol = OPTAX_FLOAT32_STEPS.get(case.name, (RTOL, None))[0]
    for key in params:
        assert ours_params[key].dtype == jnp.float64
        np.testing.assert_allclose(
            np.asarray(ours_params[key]), np.asarray(theirs_params[key]), rtol=rtol, atol=rtol, err_msg=key
        )


# Transforms whose float64 state or result deviates from Optax's on purpose.
TRANSFORM_DEVIATIONS = {
    # Optax's max_dist and grad_sum_of_squares start in param_dtype (float32 by
    # default) and turn float64 at the first step: a lax.scan carry or a donated
    # buffer cannot change dtype, so optcore keeps param_dtype (pass
    # param_dtype=jnp.float64 for float64 distances).
    "scale_by_distance_over_gradients": "state keeps param_dtype",
}


@pytest.mark.parametrize(
    "case_id,name,args,kwargs",
    [c for c in oracle.TRANSFORMS if c[0] not in TRANSFORM_DEVIATIONS],
    ids=[c[0] for c in oracle.TRANSFORMS if c[0] not in TRANSFORM_DEVIATIONS],
)
def test_float64_transforms_match_optax(case_id, name, args, kwargs, monkeypatch):
    float32_params = oracle._params
    monkeypatch.setattr(oracle, "_params", lambda: jax.tree.map(lambda x: x.astype(jnp.float64), float32_params()))
    with jax.enable_x64(True):
        ours_params, ours_state = oracle._run(oracle._build(optcore, name, args, kwargs), step_size=-0.05)
        theirs_params, theirs_state = oracle._run(oracle._build(optax, name, args, kwargs), step_size=-0.05)

    def dtypes(tree):
        return [str(jnp.asarray(leaf).dtype) for leaf in jax.tree.leaves(tree)]

    assert dtypes(ours_state) == dtypes(theirs_state)
    assert oracle.describe(ours_state) == oracle.describe(theirs_state)
    for key in ours_params:
        assert ours_params[key].dtype == jnp.float64
        np.testing.assert_allclose(
            np.asarray(ours_params[key]), np.asarray(theirs_params[key]), rtol=RTOL, atol=RTOL, err_msg=key
        )


def test_injected_hyperparameters_stay_bit_identical_under_x64():
    # inject_hyperparams stores float64 hyperparameters for float64 params, and
    # the plain optimizer computes with float64 ones: the same bits.
    with jax.enable_x64(True):
        params = params_of("adamw", jnp.float64)
        plain = optcore.adamw(1e-2, b1=0.85, weight_decay=1e-3)
        injected = optcore.inject_hyperparams(optcore.adamw)(learning_rate=1e-2, b1=0.85, weight_decay=1e-3)
        assert injected.init(params).hyperparams["b1"].dtype == jnp.float64
        plain_params, _, _ = run(plain, "adamw", params, lambda o: False)
        injected_params, _, _ = run(injected, "adamw", params, lambda o: False)
    for key in params:
        np.testing.assert_array_equal(np.asarray(plain_params[key]), np.asarray(injected_params[key]))
