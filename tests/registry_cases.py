"""Builds every registered optimizer with the arguments it needs, for reliability tests.

The reliability tests (checkpoints, numerical faults, properties, bad input)
iterate over ``optcore.available("optimizer")`` so that optimizers landing
later are covered without editing the tests. Each optimizer gets a small
learning rate, and the extra ``update`` arguments that some of them need
(``value``, ``grad``, ``value_fn`` for line searches and Polyak steps,
``obj_fn`` for Sophia) are supplied from one quadratic objective, so nothing
is skipped for lack of arguments. An optimizer with a required argument this
module does not know is skipped with the argument named in the reason.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

import optcore

LEARNING_RATE = 0.01

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
# Optimizers that cannot take scalar (rank-0) params, with the reason; their
# test params use shape (1,) instead.
NO_SCALAR_PARAMS: dict = {}


class Case(NamedTuple):
    name: str
    factory: Callable
    kwargs: dict
    skip: Optional[str]

    def build(self, **overrides):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.factory(**{**self.kwargs, **overrides})


def objective(params: Any) -> jax.Array:
    """A quadratic with its minimum at 0.5 everywhere, summed in float32."""
    leaves = jax.tree.leaves(params)
    total = jnp.zeros([], jnp.float32)
    for leaf in leaves:
        total = total + jnp.sum(jnp.abs(leaf.astype(jnp.float32) - 0.5) ** 2)
    return total


def optimizer_cases() -> list[Case]:
    """One case per registered optimizer, sorted by name."""
    cases = []
    for row in optcore.available("optimizer"):
        try:
            factory = optcore.get(row.name)
        except LookupError as err:  # a name collision among installed plugins
            cases.append(Case(row.name, None, {}, f"cannot resolve: {err}"))
            continue
        signature = inspect.signature(factory)
        kwargs = {}
        missing = []
        for parameter in signature.parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            if parameter.name == "learning_rate":
                if row.name not in KEEP_DEFAULT_LEARNING_RATE:
                    kwargs["learning_rate"] = LEARNING_RATE
            elif parameter.name in KNOWN_REQUIRED.get(row.name, {}):
                kwargs[parameter.name] = KNOWN_REQUIRED[row.name][parameter.name]
            elif parameter.default is parameter.empty:
                missing.append(parameter.name)
        kwargs.update(QUIET_KWARGS.get(row.name, {}))
        skip = f"{row.name} needs arguments these tests cannot supply: {', '.join(missing)}" if missing else None
        cases.append(Case(row.name, factory, kwargs, skip))
    return cases


def case_params(cases: list[Case]):
    """pytest.param objects with the case name as id, skipping unbuildable ones."""
    import pytest

    out = []
    for case in cases:
        marks = [pytest.mark.skip(reason=case.skip)] if case.skip else []
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


def as_gradient(name: str, grads: Any) -> Any:
    """The gradient in the form ``name`` takes (a batch of one for per-example optimizers)."""
    if name in PER_EXAMPLE:
        return jax.tree.map(lambda g: g[None], grads)
    return grads


def extra_args(params: Any, grads: Any) -> dict:
    """The extra ``update`` arguments, consistent with :func:`objective`."""
    return {"value": objective(params), "grad": grads, "value_fn": objective, "obj_fn": objective}


def update(opt, name: str, grads: Any, state: Any, params: Any):
    """``opt.update`` with the extra arguments when ``opt`` takes them."""
    if isinstance(opt, optcore.GradientTransformationExtraArgs):
        return opt.update(as_gradient(name, grads), state, params, **extra_args(params, grads))
    return opt.update(as_gradient(name, grads), state, params)


def step(opt, name: str, params: Any, state: Any, grads: Any = None):
    """One optimisation step on :func:`objective` (or with the given ``grads``)."""
    if grads is None:
        grads = jax.grad(objective)(params)
    updates, state = update(opt, name, grads, state, params)
    return optcore.apply_updates(params, updates), state


def small_params(name: str = "", dtype=jnp.float32) -> dict:
    """Params with a matrix and a scalar (shape (1,) where ``name`` takes no scalars).

    Two leaves only: every leaf adds to the compile time of each of the ~50
    optimizers, and nesting plus ranks 0 and 2 are what the tests need.
    """
    scale_shape = (1,) if name in NO_SCALAR_PARAMS else ()
    return {
        "layer1": {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3).astype(dtype)},
        "scale": jnp.full(scale_shape, 1.5, dtype),
    }


# ---------------------------------------------------------------------------
# Comparing and saving trees.
# ---------------------------------------------------------------------------


def is_key(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def raw(leaf: Any):
    """The leaf as a NumPy array (typed PRNG keys as their key data)."""
    import numpy as np

    return np.asarray(jax.random.key_data(leaf) if is_key(leaf) else leaf)


def assert_bitwise_equal(actual: Any, expected: Any, what: str = "tree") -> None:
    """Same structure, and every leaf has the same dtype, shape and bytes (NaNs included)."""
    actual_leaves = jax.tree_util.tree_flatten_with_path(actual)[0]
    expected_leaves = jax.tree_util.tree_flatten_with_path(expected)[0]
    assert jax.tree.structure(actual) == jax.tree.structure(expected), f"{what}: structure differs"
    for (path, a), (_, e) in zip(actual_leaves, expected_leaves):
        a, e = raw(a), raw(e)
        where = f"{what}{jax.tree_util.keystr(path)}"
        assert a.dtype == e.dtype and a.shape == e.shape, f"{where}: {a.dtype}{a.shape} != {e.dtype}{e.shape}"
        assert a.tobytes() == e.tobytes(), f"{where}: values differ: {a} != {e}"


def save_leaves(tree: Any) -> bytes:
    """The leaves of ``tree`` in a ``numpy.savez`` archive (keys as key data)."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, *[raw(leaf) for leaf in jax.tree.leaves(tree)])
    return buffer.getvalue()


def load_leaves(blob: bytes, like: Any) -> Any:
    """Restores a :func:`save_leaves` archive with the treedef of ``like`` (a fresh init).

    Each leaf must have the shape and dtype of the fresh leaf; typed PRNG keys
    are rewrapped with the fresh key's implementation. NumPy stores bfloat16
    as raw 2-byte records, so leaves are viewed back as the fresh dtype.
    """
    import io

    import numpy as np

    fresh_leaves, treedef = jax.tree.flatten(like)
    with np.load(io.BytesIO(blob)) as archive:
        stored = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    assert len(stored) == len(fresh_leaves), f"{len(stored)} leaves saved, a fresh init has {len(fresh_leaves)}"
    restored = []
    for saved, fresh in zip(stored, fresh_leaves):
        if is_key(fresh):
            restored.append(jax.random.wrap_key_data(jnp.asarray(saved), impl=jax.random.key_impl(fresh)))
            continue
        fresh = np.asarray(fresh)
        if saved.dtype != fresh.dtype and saved.dtype.itemsize == fresh.dtype.itemsize:
            saved = saved.view(fresh.dtype)
        assert saved.shape == fresh.shape and saved.dtype == fresh.dtype, (
            f"saved {saved.dtype}{saved.shape}, fresh init has {fresh.dtype}{fresh.shape}"
        )
        restored.append(jnp.asarray(saved))
    return jax.tree.unflatten(treedef, restored)


# ---------------------------------------------------------------------------
# One jitted step per optimizer, shared by every test module in the process.
# ---------------------------------------------------------------------------

_STEPS: dict = {}


def jitted_step(case: Case, variant: str = "plain", build: Optional[Callable] = None):
    """``(opt, step)`` with ``step(params, state, grads) -> (params, state)`` jitted.

    Cached per optimizer and variant so that the tests of several modules share
    one compilation per (optimizer, variant, tree shape) instead of compiling
    their own: compiling ~50 optimizers is most of the time of these tests.
    ``build`` makes the optimizer of a non-plain variant from the case.
    """
    key = (case.name, variant)
    if key not in _STEPS:
        opt = case.build() if build is None else build(case)
        _STEPS[key] = (opt, jax.jit(lambda params, state, grads: step(opt, case.name, params, state, grads)))
    return _STEPS[key]


objective_grad = jax.jit(jax.grad(objective))
