"""Builds every registered optimizer with the arguments it needs, for reliability tests.

The reliability tests (checkpoints, numerical faults, properties, bad input,
donation) iterate over ``optcore.available("optimizer")`` so that optimizers
landing later are covered without editing the tests. The logic lives in the
public conformance kit, :mod:`optcore.testing` (the objective, the extra
``update`` arguments, the comparisons, the checks themselves); this module
adds what the core's tests know about particular optimizers (the arguments
contrib's ``dpsgd`` requires) and a cache of one jitted step per optimizer
shared by every test module in the process. An optimizer with a required
argument nobody supplies is skipped with the argument named in the reason.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import optcore
import optcore.testing as kit
from optcore.testing import (  # noqa: F401  (re-exported for the test modules)
    Case,
    assert_bitwise_equal,
    case_params,
    is_key,
    load_leaves,
    objective,
    objective_grad,
    raw,
    save_leaves,
)

LEARNING_RATE = kit.LEARNING_RATE

# Required arguments (beyond the learning rate) that we know how to supply.
KNOWN_REQUIRED = {
    "dpsgd": {"l2_norm_clip": 1.0, "noise_multiplier": 0.1, "seed": 0},
}
# Optimizers whose learning rate must stay at its default: L-BFGS uses its line
# search's step when ``learning_rate`` is None.
KEEP_DEFAULT_LEARNING_RATE = {"lbfgs"}
# Extra keyword arguments that avoid warnings (e.g. a missing PRNG key).
QUIET_KWARGS = {"noisy_sgd": {"key": 0}}
# Optimizers that take per-example gradients (a leading batch axis).
PER_EXAMPLE = {"dpsgd"}
# The arguments that decay the weights (Muon decays its Adam params apart). Where the
# decay goes through add_decayed_weights, each takes a schedule, as in Optax.
WEIGHT_DECAY_ARGUMENTS = ("weight_decay", "weight_decay_rate", "adam_weight_decay")
# Optimizers that cannot take scalar (rank-0) params, with the reason; their
# test params use shape (1,) instead.
NO_SCALAR_PARAMS: dict = {}


def optimizer_cases(distribution: Optional[str] = None) -> list[Case]:
    """One case per registered optimizer, sorted by name (see :func:`optcore.testing.optimizer_cases`)."""
    arguments = {name: {**KNOWN_REQUIRED.get(name, {}), **QUIET_KWARGS.get(name, {})}
                 for name in set(KNOWN_REQUIRED) | set(QUIET_KWARGS)}
    return kit.optimizer_cases(distribution, arguments=arguments,
                               keep_default_learning_rate=sorted(KEEP_DEFAULT_LEARNING_RATE),
                               per_example=sorted(PER_EXAMPLE))


def harness_of(name: str, opt: Any) -> kit.Harness:
    return kit.Harness(opt, per_example=name in PER_EXAMPLE)


def as_gradient(name: str, grads: Any) -> Any:
    """The gradient in the form ``name`` takes (a batch of one for per-example optimizers)."""
    return harness_of(name, optcore.identity()).gradient(grads)


def extra_args(params: Any, grads: Any) -> dict:
    """The extra ``update`` arguments, consistent with :func:`objective`."""
    return kit.extra_update_args(params, grads)


def update(opt, name: str, grads: Any, state: Any, params: Any):
    """``opt.update`` with the extra arguments (an ``update`` taking none of them ignores them)."""
    return harness_of(name, opt).update(grads, state, params)


def step(opt, name: str, params: Any, state: Any, grads: Any = None):
    """One optimisation step on :func:`objective` (or with the given ``grads``)."""
    return harness_of(name, opt).step(params, state, grads)


def small_params(name: str = "", dtype=None) -> dict:
    """Params with a matrix and a scalar (shape (1,) where ``name`` takes no scalars)."""
    import jax.numpy as jnp

    return kit.small_params(jnp.float32 if dtype is None else dtype, scalar=name not in NO_SCALAR_PARAMS)


# ---------------------------------------------------------------------------
# One harness (and jitted step) per optimizer, shared by every test module in the process.
# ---------------------------------------------------------------------------

_HARNESSES: dict = {}


def harness(case: Case, variant: str = "plain", build: Optional[Callable] = None) -> kit.Harness:
    """A :class:`optcore.testing.Harness` for ``case``, cached per optimizer and variant.

    So the tests of several modules share one compilation per (optimizer,
    variant, tree shape): compiling ~50 optimizers is most of their time.
    ``build`` makes the optimizer of a non-plain variant from the case.
    """
    key = (case.name, variant)
    if key not in _HARNESSES:
        _HARNESSES[key] = harness_of(case.name, case.build() if build is None else build(case))
    return _HARNESSES[key]


def jitted_step(case: Case, variant: str = "plain", build: Optional[Callable] = None):
    """``(opt, step)`` with ``step(params, state, grads) -> (params, state)`` jitted (see :func:`harness`)."""
    h = harness(case, variant, build)
    return h.opt, h.jitted_step
