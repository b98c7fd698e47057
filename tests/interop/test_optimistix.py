"""optcore optimizers driven by ``optimistix.minimise`` through ``OptaxMinimiser``.

Optimistix wraps the transformation with ``eqx.internal.closure_to_pytree``
(so arrays captured in optcore's closures become pytree leaves), calls
``update(grads, state, y, value=, grad=, value_fn=)`` and stops on a Cauchy
criterion. The same solve with the Optax 0.2.8 optimizer must take the same
number of steps and reach the same point.
"""

from __future__ import annotations

import warnings

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import optax
import optimistix as optx
import pytest
import registry_cases

import optcore
from _interop import assert_close


def _rosenbrock(y, args):
    a, b = args
    return (a - y["x"]) ** 2 + b * (y["z"] - y["x"] ** 2) ** 2


_Y0 = {"x": jnp.asarray(-1.2), "z": jnp.asarray(1.0)}
_ARGS = (jnp.asarray(1.0), jnp.asarray(10.0))

RECIPES = {
    "adam": (lambda lib: lib.adam(5e-2), 400),
    "clip_sgd": (lambda lib: lib.chain(lib.clip_by_global_norm(1.0), lib.sgd(1e-2, momentum=0.9)), 400),
    "inject_adam": (lambda lib: lib.inject_hyperparams(lib.adam)(learning_rate=lib.exponential_decay(1e-1, 100, 0.5)), 400),
    # value and value_fn reach the line search through optimistix's extra arguments.
    "lbfgs": (lambda lib: lib.lbfgs(), 100),
}


def _solve(tx, max_steps):
    solver = optx.OptaxMinimiser(tx, rtol=1e-6, atol=1e-6)
    return optx.minimise(_rosenbrock, solver, _Y0, args=_ARGS, max_steps=max_steps, throw=False)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_optax_minimiser_matches_optax(recipe):
    build, max_steps = RECIPES[recipe]
    sol = _solve(build(optcore), max_steps)
    ref = _solve(build(optax), max_steps)
    # The solve made progress from f(y0) = 4.4 towards the minimum at (1, 1).
    assert float(_rosenbrock(sol.value, _ARGS)) < 0.5 * float(_rosenbrock(_Y0, _ARGS))
    assert_close(sol.value, ref.value, "solution", rtol=1e-5, atol=1e-5)
    assert int(sol.stats["num_steps"]) == int(ref.stats["num_steps"])
    assert sol.result == ref.result


def test_lbfgs_converges_to_the_minimum():
    """With enough steps L-BFGS stops on the Cauchy criterion at the known minimiser (1, 1)."""
    sol = optx.minimise(
        _rosenbrock, optx.OptaxMinimiser(optcore.lbfgs(), rtol=1e-8, atol=1e-8), _Y0, args=_ARGS, max_steps=200
    )
    assert sol.result == optx.RESULTS.successful
    assert_close(sol.value, {"x": jnp.asarray(1.0), "z": jnp.asarray(1.0)}, "minimiser", rtol=1e-4, atol=1e-4)


def _static_part_is_hashable(tx) -> None:
    """What ``OptaxMinimiser`` does to ``tx`` before ``filter_jit`` hashes it as a static argument."""
    as_pytree = eqxi.closure_to_pytree(tx)
    _, static = eqx.partition(as_pytree, eqx.is_array)
    leaves, treedef = jax.tree.flatten(static)
    hash((treedef, tuple(leaves)))


@pytest.mark.parametrize("case", registry_cases.case_params(registry_cases.optimizer_cases()))
def test_every_optimizer_can_be_a_static_jit_argument_in_optimistix(case):
    """Every registered optimizer, plain and under ``inject_hyperparams``, survives ``closure_to_pytree``.

    Optimistix turns the closures of ``init``/``update`` into pytrees and hashes
    their non-array contents; an unhashable object captured in a closure (an
    ``inspect.BoundArguments`` did, in ``inject_hyperparams``) makes every solve fail.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _static_part_is_hashable(case.build())
        _static_part_is_hashable(optcore.inject_hyperparams(case.factory)(**case.kwargs))
