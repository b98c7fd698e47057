"""Applicability checks shared by the estimators (private).

The differentiability check is structural, done on the traced program rather
than on numbers, so it costs one trace and no host sync, and works under
``jit`` and ``vmap``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core


def _outputs_depend_on(jaxpr, source_vars) -> bool:
    """Whether any output of ``jaxpr`` is computed from one of ``source_vars``.

    A forward pass over the equations; an equation with nested jaxprs (jit,
    scan, cond, custom rules) is treated as a unit whose outputs all depend on
    its inputs, which can only over-report a dependence, never miss one.
    """
    reached = set(source_vars)
    for eqn in jaxpr.eqns:
        if any(isinstance(v, jax_core.Var) and v in reached for v in eqn.invars):
            reached.update(eqn.outvars)
    return any(isinstance(v, jax_core.Var) and v in reached for v in jaxpr.outvars)


def traceable(function: Callable) -> Callable:
    """``function`` wrapped in a plain Python function that JAX can trace and cache.

    ``jax.eval_shape`` and ``jax.make_jaxpr`` key their caches on a weak
    reference to the callable. NumPy's functions (``np.sum``, ``np.mean``:
    ``_ArrayFunctionDispatcher``) and ufuncs do not support weak references, so
    handing them over directly raises ``TypeError: cannot create weak
    reference`` (and has crashed the interpreter on some JAX versions).
    Optax-era code passes exactly such functions (``function=np.sum``), which
    work on tracers because NumPy delegates to the array's own ``sum`` method;
    the wrapper keeps them working here as they do in Optax.
    """

    def call_function(sample):
        return function(sample)

    return call_function


def check_scalar_output(function: Callable, sample: jax.ShapeDtypeStruct, estimator: str) -> jax.ShapeDtypeStruct:
    """Raises a ``ValueError`` unless ``function`` maps one sample to a scalar."""
    out = jax.eval_shape(traceable(function), sample)
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{estimator}: `function` must map one sample (shape {sample.shape}) to a scalar, "
            f"got output {shape}. It is vmapped over samples by the estimator, so it need not be vectorised."
        )
    return out


def check_differentiable(function: Callable, sample: jax.ShapeDtypeStruct, estimator: str) -> None:
    """Raises if ``function`` cannot carry a pathwise (reparameterisation) gradient.

    Two cases are detected:

    * an integer or boolean output (a count, a comparison): it has no derivative;
    * an output that depends on the sample, but only through operations whose
      derivative JAX defines as zero (``round``, ``floor``, ``sign``, ``argmax``,
      comparisons, casts to integers, ``stop_gradient``): the pathwise estimate
      would be exactly zero although the expectation varies with the parameters.

    The second test traces ``jax.jvp`` of ``function`` and checks whether the
    output tangent is reachable from the input tangent. A function that does
    not depend on its sample at all (a constant) is accepted: its gradient
    really is zero.
    """
    out = check_scalar_output(function, sample, estimator)
    function = traceable(function)
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        raise TypeError(
            f"{estimator} needs a differentiable function, but `function` returns {out.dtype} values. "
            "Use score_function_jacobians (or measure_valued_jacobians for Gaussians), which only evaluate it."
        )
    primal = jax.make_jaxpr(function)(sample).jaxpr
    if not _outputs_depend_on(primal, primal.invars):
        return  # a constant: the zero gradient is the true one
    tangent_program = jax.make_jaxpr(lambda x, t: jax.jvp(function, (x,), (t,))[1])(sample, sample).jaxpr
    if not _outputs_depend_on(tangent_program, tangent_program.invars[1:]):
        raise ValueError(
            f"{estimator} needs a differentiable function, but the output of `function` depends on its "
            "input only through operations with a zero derivative (e.g. round, floor, sign, argmax, a "
            "comparison or a cast to an integer), so the pathwise gradient would be zero. Use "
            "score_function_jacobians or measure_valued_jacobians, which only evaluate `function`."
        )
