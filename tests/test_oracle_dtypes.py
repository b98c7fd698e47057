"""Mixed precision against Optax 0.2.8, for every registered optimizer.

For low-precision params Optax's updates have the dtype that JAX's promotion
of the arrays involved gives (gradients, moments, params), never one forced
back to the params': ``adamw(..., mu_dtype=jnp.float32)`` on bfloat16 params
returns float32 updates, and ``apply_updates`` rounds once, into the params.
An optimizer that casts its update to the params' dtype first rounds twice
and drifts away from Optax (by ~4 bf16 ulps after 50 Adam steps).

Each registered optimizer with a same-named Optax factory is built in both
libraries with the same arguments, with and without ``mu_dtype=float32``
where both take it, and run on float16, bfloat16 and float32 params (a
matrix, a vector and a scalar). The update and state leaves must have Optax's
dtypes at every step, and the params after 50 steps must match Optax's to
within :data:`ULPS` ulps of the params' dtype (see there for why not zero).
"""

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

optax = pytest.importorskip("optax")
import optax.contrib  # noqa: E402

import optcore  # noqa: E402
import registry_cases  # noqa: E402

STEPS = 50
PARAM_DTYPES = {"bf16": jnp.bfloat16, "f16": jnp.float16, "f32": jnp.float32}
# Dtype arguments tried when both factories take them (Optax has no nu_dtype).
DTYPE_ARGUMENTS = ("mu_dtype", "nu_dtype")
# Allowed distance of the params after 50 steps, in ulps of the params' dtype
# at the params' magnitude. optcore does the hyperparameter arithmetic in
# float32 (``1 - b2`` of a float32 ``b2``, so that injected and unwrapped
# optimizers agree bit for bit, tests/test_inject.py) where Optax uses Python
# doubles; a bias correction of ``1 - 0.999**t`` differs in its last float32
# bit, and now and then such a difference lands on a rounding boundary of a
# low-precision result. One ulp covers that; a double rounding (an update cast
# to the params' dtype before apply_updates rounds again) shows as 2-4 ulps.
ULPS = 1
# Optimizers whose numbers depend on a random stream that Optax draws
# differently: only the dtypes are compared.
RANDOM_STREAM = {}


def optax_factory(name):
    """The Optax factory of the same name (top level first, then ``optax.contrib``), or None."""
    for namespace in (optax.contrib, optax):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            factory = getattr(namespace, name, None)
        if callable(factory):
            return factory
    return None


def params_of(name, dtype):
    """A matrix, a vector and a scalar (shape (1,) where the optimizer takes no scalars)."""
    scalar_shape = (1,) if name in registry_cases.NO_SCALAR_PARAMS else ()
    return {
        "w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3).astype(dtype),
        "b": jnp.array([0.25, -0.75, 2.0], jnp.float32).astype(dtype),
        "s": jnp.full(scalar_shape, 1.5, dtype),
    }


def variants(case, theirs):
    """(id, extra kwargs): plain, plus each dtype argument both factories take, set to float32."""
    ours_parameters = inspect.signature(case.factory).parameters
    theirs_parameters = inspect.signature(theirs).parameters
    out = [("plain", {})]
    shared = [arg for arg in DTYPE_ARGUMENTS if arg in ours_parameters and arg in theirs_parameters]
    for arg in shared:
        out.append((f"{arg}=f32", {arg: jnp.float32}))
    return out


def run(opt, name, params, is_extra_args):
    """50 jitted steps; the dtypes of every update and state, and the final params."""

    def one_step(params, state):
        grads = jax.grad(registry_cases.objective)(params)
        gradient = registry_cases.as_gradient(name, grads)
        if is_extra_args(opt):
            updates, state = opt.update(gradient, state, params, **registry_cases.extra_args(params, grads))
        else:
            updates, state = opt.update(gradient, state, params)
        return optcore.apply_updates(params, updates), state, updates

    one_step = jax.jit(one_step)
    state = opt.init(params)
    dtypes = [("init", dtypes_of(state))]
    for i in range(STEPS):
        params, state, updates = one_step(params, state)
        if i in (0, STEPS - 1):
            dtypes.append((f"step {i + 1} updates", dtypes_of(updates)))
            dtypes.append((f"step {i + 1} state", dtypes_of(state)))
    return params, dtypes


def dtypes_of(tree):
    return [
        (jax.tree_util.keystr(path), str(jnp.asarray(leaf).dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def ulp_distance(ours, theirs, dtype):
    """Largest ``|ours - theirs|`` in ulps of ``dtype`` at the larger magnitude."""
    a = np.asarray(ours, np.float64)
    b = np.asarray(theirs, np.float64)
    magnitude = np.maximum(np.maximum(np.abs(a), np.abs(b)), float(jnp.finfo(dtype).smallest_normal))
    ulp = float(jnp.finfo(dtype).eps) * 2.0 ** np.floor(np.log2(magnitude))
    return float(np.max(np.abs(a - b) / ulp))


def cases():
    out = []
    for case in registry_cases.optimizer_cases():
        if case.skip:
            out.append(pytest.param(case, None, "plain", {}, None, id=case.name, marks=pytest.mark.skip(case.skip)))
            continue
        theirs = optax_factory(case.name)
        if theirs is None:
            reason = f"Optax 0.2.8 has no {case.name}"
            out.append(pytest.param(case, None, "plain", {}, None, id=case.name, marks=pytest.mark.skip(reason)))
            continue
        for variant, extra in variants(case, theirs):
            for dtype_id, dtype in PARAM_DTYPES.items():
                out.append(pytest.param(case, theirs, variant, extra, dtype, id=f"{case.name}-{variant}-{dtype_id}"))
    return out


@pytest.mark.parametrize("case, theirs, variant, extra, dtype", cases())
def test_dtypes_and_params_match_optax(case, theirs, variant, extra, dtype):
    params = params_of(case.name, dtype)
    ours = case.build(**extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = theirs(**case.kwargs, **extra)

    ours_params, ours_dtypes = run(ours, case.name, params, lambda o: isinstance(o, optcore.GradientTransformationExtraArgs))
    theirs_params, theirs_dtypes = run(
        reference, case.name, params, lambda o: isinstance(o, optax.GradientTransformationExtraArgs)
    )

    for (when, ours_leaves), (_, theirs_leaves) in zip(ours_dtypes, theirs_dtypes):
        assert [d for _, d in ours_leaves] == [d for _, d in theirs_leaves], (
            f"{when}: optcore {ours_leaves} != optax {theirs_leaves}"
        )
    if case.name in RANDOM_STREAM:
        return
    for key in params:
        distance = ulp_distance(ours_params[key], theirs_params[key], dtype)
        assert distance <= ULPS, (
            f"params[{key!r}] after {STEPS} steps: {distance:.1f} ulps from Optax "
            f"({np.asarray(ours_params[key], np.float32)} != {np.asarray(theirs_params[key], np.float32)})"
        )
