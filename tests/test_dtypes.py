"""Float32 array hyperparameters change no dtype, for every registered optimizer.

A hyperparameter given as a Python float never promotes (JAX treats it as
weakly typed); one given as a float32 array (``jnp.asarray(lr, jnp.float32)``,
a value from ``inject_hyperparams`` or a schedule) would turn bfloat16
arithmetic into float32. Each optimizer must give the same update and state
dtypes either way: a state whose dtype changes after one step breaks a
``lax.scan`` carry and a donated buffer, and float32 updates for a bf16 model
are not what the optimizer gives with floats.

Each registered optimizer is built twice (every float argument, given or
default, as a Python float, then as a float32 array) and stepped once on
float16 and bfloat16 params, plain and with each of ``mu_dtype`` /
``nu_dtype`` it takes set to float32.
"""

import inspect
import warnings

import jax
import jax.numpy as jnp
import pytest
import registry_cases as rc

import optcore

PARAM_DTYPES = {"bf16": jnp.bfloat16, "f16": jnp.float16}
DTYPE_ARGUMENTS = ("mu_dtype", "nu_dtype")


def float_arguments(case):
    """Every argument whose value (given or default) is a Python float."""
    arguments = {}
    for name, parameter in inspect.signature(case.factory).parameters.items():
        value = case.kwargs.get(name, parameter.default)
        if isinstance(value, float):
            arguments[name] = value
    return arguments


def variants(case):
    parameters = inspect.signature(case.factory).parameters
    return [("plain", {})] + [(f"{arg}=f32", {arg: jnp.float32}) for arg in DTYPE_ARGUMENTS if arg in parameters]


def cases():
    out = []
    for param in rc.case_params(rc.optimizer_cases()):
        case = param.values[0]
        if case.skip:
            out.append(pytest.param(case, {}, None, id=case.name, marks=param.marks))
            continue
        for variant, extra in variants(case):
            for dtype_id, dtype in PARAM_DTYPES.items():
                out.append(pytest.param(case, extra, dtype, id=f"{case.name}-{variant}-{dtype_id}"))
    return out


def dtypes_after_one_step(opt, name, params):
    grads = rc.objective_grad(params)
    state = opt.init(params)
    updates, new_state = jax.jit(lambda g, s, p: rc.update(opt, name, g, s, p))(grads, state, params)
    dtypes = lambda tree: [str(jnp.asarray(x).dtype) for x in jax.tree.leaves(tree)]  # noqa: E731
    return {"init state": dtypes(state), "updates": dtypes(updates), "state after a step": dtypes(new_state)}


@pytest.mark.parametrize("case, extra, dtype", cases())
def test_float32_array_hyperparameters_keep_dtypes(case, extra, dtype):
    floats = float_arguments(case)
    if not floats:
        pytest.skip(f"{case.name} takes no float hyperparameter")
    arrays = {name: jnp.asarray(value, jnp.float32) for name, value in floats.items()}
    params = rc.small_params(case.name, dtype=dtype)
    with_floats = dtypes_after_one_step(case.build(**extra, **floats), case.name, params)
    with_arrays = dtypes_after_one_step(case.build(**extra, **arrays), case.name, params)
    for what in with_floats:
        assert with_arrays[what] == with_floats[what], (
            f"{what}: float32 array hyperparameters {sorted(arrays)} give {with_arrays[what]}, "
            f"Python floats give {with_floats[what]}"
        )
    # The state keeps its dtypes through a step (a scan carry), whatever the hyperparameters.
    assert with_floats["state after a step"] == with_floats["init state"]


# ---------------------------------------------------------------------------
# Every registered gradient transformation (clip, adaptive_grad_clip, trace,
# ema, scale_by_adopt, ...): the same with float32 array hyperparameters.
# ---------------------------------------------------------------------------

# A value for each required float argument of a transformation.
REQUIRED_VALUE = 0.5


def transform_params():
    out = []
    for row in optcore.available("transform"):
        factory = optcore.get(row.name)
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):
            continue
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        kwargs = {name: REQUIRED_VALUE for name in required}
        for dtype_id, dtype in PARAM_DTYPES.items():
            out.append(pytest.param(row.name, factory, kwargs, dtype, id=f"{row.name}-{dtype_id}"))
    return out


@pytest.mark.parametrize("name, factory, required, dtype", transform_params())
def test_transforms_with_float32_array_hyperparameters_keep_dtypes(name, factory, required, dtype):
    signature = inspect.signature(factory)
    floats = {
        arg: required.get(arg, p.default)
        for arg, p in signature.parameters.items()
        if isinstance(required.get(arg, p.default), float)
    }
    if not floats:
        pytest.skip(f"{name} takes no float hyperparameter")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = factory(**{**required, **floats})
    except (TypeError, ValueError, AttributeError) as err:
        pytest.skip(f"{name} is not built from float arguments alone: {err}")
    if not isinstance(plain, optcore.GradientTransformation):
        pytest.skip(f"{name} does not return a gradient transformation")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_arrays = factory(**{**required, **{arg: jnp.asarray(v, jnp.float32) for arg, v in floats.items()}})
    # A matrix and a vector: some transformations (sm3, muon) take no scalars.
    params = {
        "w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3).astype(dtype),
        "b": jnp.array([0.25, -0.75, 2.0], dtype),
    }
    try:
        expected = dtypes_after_one_step(optcore.with_extra_args_support(plain), name, params)
    except (TypeError, ValueError, AttributeError) as err:
        pytest.skip(f"{name} built with {REQUIRED_VALUE} for its required arguments does not step: {err}")
    got = dtypes_after_one_step(optcore.with_extra_args_support(with_arrays), name, params)
    assert got == expected, f"float32 array hyperparameters {sorted(floats)}: {got} != {expected} (Python floats)"
