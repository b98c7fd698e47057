"""The author's kit: the building blocks the core's own transformations use, public for plugins.

A transformation written with these behaves like the core's on the points
users notice:

* **Hyperparameters** (Python numbers, arrays, the float32 arrays that
  :func:`optcore.inject_hyperparams` passes in, or schedules of the step)
  enter the arithmetic through :func:`f32`, so a float and the same value
  injected give bit-identical updates; in float32, or in float64 for float64
  updates under ``jax_enable_x64`` (:func:`hyperparameter_dtype`).
* **Dtypes**: updates leave in the dtype of the gradients (:func:`cast_like`)
  or, when a state dtype such as ``mu_dtype`` was asked for, in the dtype
  Optax's arithmetic gives (:func:`cast_promoted`); state leaves keep the dtype
  they were created with, so a ``lax.scan`` carry or a donated buffer keeps
  its type.
* **Checks**: hyperparameters are validated at construction with the same
  messages as the core's (:func:`check_beta`, :func:`check_decay`,
  :func:`check_one_of` for a variant chosen by name, :func:`check_integer`
  for a size or a count, ...), and a
  missing extra ``update`` argument is a ``TypeError`` naming it
  (:func:`require_update_args`).
* **Static arguments**: :func:`static_args` declares which arguments of a
  factory :func:`optcore.inject_hyperparams` must pass unchanged (sizes, seeds,
  masks), so a wrapped third-party factory behaves as its author intended.

Example, a complete transformation (momentum with a bias-corrected decay)::

    import jax, jax.numpy as jnp
    from typing import NamedTuple
    import optcore
    from optcore import kit

    class MomentumState(NamedTuple):
        count: jax.Array
        mu: optcore.Updates

    def scale_by_debiased_momentum(decay=0.9, mu_dtype=None):
        kit.check_beta("decay", decay)
        mu_dtype = kit.dtype_or_none(mu_dtype)

        def init_fn(params):
            mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params)
            return MomentumState(count=kit.zero_count(), mu=mu)

        def update_fn(updates, state, params=None):
            count = optcore.safe_increment(state.count)
            b = kit.f32(kit.value_at(decay, state.count), kit.hyperparameter_dtype(updates))
            mu = jax.tree.map(lambda m, g: b * m + (1 - b) * g, state.mu, updates)
            debiased = jax.tree.map(lambda m: m / (1 - b ** count), mu)
            return kit.cast_promoted(debiased, updates, state.mu), MomentumState(
                count=count, mu=kit.cast_like(mu, state.mu))

        return optcore.GradientTransformation(init_fn, update_fn)

The layer just above :mod:`optcore.base`: it imports nothing else of the core
but :mod:`optcore.validate` and :mod:`optcore.numerics`, so the core's
transforms use it too.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp

from optcore import base, numerics, validate
from optcore.validate import (
    check_integer,
    check_non_negative,
    check_not_schedule,
    check_one_of,
    check_range,
    require_update_args,
)

F = TypeVar("F", bound=Callable[..., Any])

# The attribute that carries a factory's declared static arguments (a frozenset
# of names); functools.wraps copies it to wrappers, as it copies __dict__.
STATIC_ARGS_ATTRIBUTE = "__optcore_static_args__"


# --- hyperparameters in ---------------------------------------------------


def hyperparameter_dtype(*trees: Any) -> jnp.dtype:
    """The dtype of hyperparameter arithmetic for ``trees``: float32, or float64 if a leaf is float64.

    float32 for float32, bfloat16 and float16 leaves (low-precision updates are
    computed in float32 and rounded once); float64 (or complex128, counted by
    its real part) under ``jax_enable_x64``, where a float32 ``b1`` would cap an
    Adam step at float32 precision (about 1e-7) while Optax's Python-float
    hyperparameters give float64. ``inject_hyperparams`` stores its floats in
    this dtype, so injected and plain hyperparameters stay bit-identical.
    """
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(trees):
        # Arrays by their dtype; Python and NumPy scalars as JAX would type them.
        leaf_dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if jnp.issubdtype(leaf_dtype, jnp.inexact):
            dtype = jnp.promote_types(dtype, jnp.finfo(leaf_dtype).dtype)
    return dtype


def f32(value: Any, dtype: Any = None) -> jax.Array:
    """``value`` as a float32 array, or in ``dtype`` when it is wider (a traced value stays traced).

    Every float hyperparameter enters the arithmetic of an ``update`` through
    this, so a Python float and the float32 array ``inject_hyperparams``
    passes in run the same float32 operations (``1 - b1`` included) and give
    bit-identical results (Optax issue 583); array hyperparameters are traced
    rather than compiled in as constants (Optax issue 577). No optimization
    barrier: XLA compiles the same arithmetic either way, and a barrier per
    hyperparameter cost ~15% of the compile time of a 1000-leaf Adam step.

    Pass ``dtype=hyperparameter_dtype(updates)`` so that float64 updates under
    ``jax_enable_x64`` get float64 hyperparameters; a dtype narrower than
    float32 still gives float32.
    """
    target = jnp.float32 if dtype is None else jnp.promote_types(jnp.float32, dtype)
    return jnp.asarray(value, dtype=target)


def value_at(hyperparam: Any, count: jax.Array) -> Any:
    """The value of a hyperparameter that may be a schedule of the step ``count``."""
    return hyperparam(count) if callable(hyperparam) else hyperparam


def learning_rate_at(learning_rate: Any, count: jax.Array) -> Any:
    """The learning rate at ``count``; a size-1 array (``jnp.array([1e-3])``) acts as a scalar.

    Optax broadcasts such a learning rate into the updates (a scalar param
    becomes shape ``(1,)``); here the params keep their shapes.
    """
    return validate.as_scalar("learning_rate", value_at(learning_rate, count))


def dtype_or_none(dtype: Any):
    """``jnp.dtype(dtype)``, or ``None`` when no dtype is asked for (a ``mu_dtype=None`` argument)."""
    return None if dtype is None else jnp.dtype(dtype)


# --- dtypes out -----------------------------------------------------------


def _is_none(x: Any) -> bool:
    return x is None


def cast_like(tree: Any, reference: Any) -> Any:
    """Each leaf of ``tree`` in the dtype of the matching leaf of ``reference`` (``None`` leaves kept).

    For state leaves (they keep the dtype they were created with) and for
    updates that leave in the gradients' dtype.
    """
    return jax.tree.map(
        lambda x, r: None if x is None else jnp.asarray(x).astype(jnp.asarray(r).dtype),
        tree,
        reference,
        is_leaf=_is_none,
    )


def cast_promoted(tree: Any, *references: Any) -> Any:
    """Each leaf of ``tree`` in the promoted dtype of the matching leaves of ``references``.

    The dtype Optax's arithmetic gives: its hyperparameters are Python floats,
    which never promote, so a result has the dtype JAX's promotion of the
    arrays involved gives (gradient, stored moments). With float32
    hyperparameters the arithmetic runs in float32 and is cast back to that
    dtype: bfloat16 gradients with a float32 ``mu`` give a float32 update,
    rounded once by ``apply_updates`` rather than twice.
    """
    return jax.tree.map(
        lambda x, *refs: None if x is None else jnp.asarray(x).astype(jnp.result_type(*refs)),
        tree,
        *references,
        is_leaf=_is_none,
    )


def widen(tree: Any) -> Any:
    """Floating leaves in at least float32 (other leaves unchanged).

    For updates whose constants (an ``eps`` of 1e-8, a step size of 1e-6)
    underflow in float16/bfloat16: compute in float32, then :func:`cast_like`
    the result back.
    """

    def leaf(x):
        x = jnp.asarray(x)
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(jnp.promote_types(x.dtype, jnp.float32))
        return x

    return jax.tree.map(leaf, tree)


# --- state ----------------------------------------------------------------


def zero_count() -> jax.Array:
    """A step counter at zero: a scalar int32 (the dtype every core state uses)."""
    return jnp.zeros([], jnp.int32)


def wraps_one_array(x: Any) -> bool:
    """Whether ``x`` is a pytree node that stands for the one array it holds, as ``flax.nnx.Variable`` is.

    Such a node has a ``shape`` and a ``dtype`` and exactly one leaf, an
    array that is not itself. Arrays, scalars, containers and nodes of
    several arrays (a quantized state leaf) are not wrappers.
    """
    if x is None or isinstance(x, jax.Array) or not (hasattr(x, "shape") and hasattr(x, "dtype")):
        return False
    leaves = jax.tree.leaves(x)
    return len(leaves) == 1 and leaves[0] is not x


def map_params(fn: Callable[..., Any], tree: Any, *, with_path: bool = False) -> Any:
    """``fn(array)`` (or ``fn(path, array)``) for each param of ``tree``: a per-param state, built as clients keep it.

    A param wrapped in a node that stands for one array (``flax.nnx.Variable``,
    see :func:`wraps_one_array`) is unwrapped for ``fn``. An array result of
    the param's shape is wrapped again (the state keeps the variable's type and
    metadata, as ``jax.tree.map`` would give); any other result *replaces* the
    wrapper:

    * a structured result (a list of vectors, a quantized array):
      ``flax.nnx.Optimizer`` writes each step's new state back into its
      variables path by path, so a structure kept inside a variable would come
      back as a plain mapping and break the next step;
    * an array of another shape (a per-param scalar, a factored vector, a
      stack of past updates): the variable's metadata describes the param's
      axes (Flax's ``out_sharding``), and Flax would shard the state by it
      (the param's split on the wrong axes, or an error where they do not
      divide). Computed from the param, the state takes its split from the
      computation instead.

    For params without wrappers this is ``jax.tree.map(fn, tree)``
    (``jax.tree_util.tree_map_with_path`` with ``with_path``).
    """

    def apply(*args):
        leaf = args[-1]
        if not wraps_one_array(leaf):
            return fn(*args)
        param = jax.tree.leaves(leaf)[0]
        result = fn(*args[:-1], param)
        result_leaves = jax.tree.leaves(result)
        if len(result_leaves) == 1 and result_leaves[0] is result and jnp.shape(result) == jnp.shape(param):
            return jax.tree.map(lambda _: result, leaf)  # the param's shape: keep the wrapper
        return result

    if with_path:
        return jax.tree_util.tree_map_with_path(apply, tree, is_leaf=wraps_one_array)
    return jax.tree.map(apply, tree, is_leaf=wraps_one_array)


def reshard_like(x: jax.Array, reference: jax.Array) -> jax.Array:
    """``x`` split as ``reference`` is, where the split is part of the type (explicit mesh axes); else ``x``.

    Under a mesh with explicit axes (JAX's default ``jax.make_mesh``), a
    reshape that merges or splits a split axis gives its result a split of
    its own, and adding it to an array split otherwise is a type error. A
    state that is stored in another layout than its param (blocks, packed
    codes) and reshaped back goes through this before it meets the gradient.
    Auto axes leave the split to the compiler: ``x`` is returned unchanged.
    """
    want, have = numerics.typed_sharding(reference), numerics.typed_sharding(x)
    if want is None and have is None:
        return x
    if want is None:  # the reference is whole on every device
        return whole(x)
    if have is not None and have.spec == want.spec:
        return x
    return jax.sharding.reshard(x, want)


def whole(x: jax.Array) -> jax.Array:
    """``x`` whole on every device where its split is part of its type (explicit mesh axes); else ``x``.

    For the computations that need a whole matrix (an SVD, Newton-Schulz
    iterations): with explicit axes JAX refuses to guess how to split them;
    with auto axes the compiler gathers what it needs. Send the result back
    with :func:`reshard_like`.
    """
    have = numerics.typed_sharding(x)
    if have is None:
        return x
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(have.mesh, jax.sharding.PartitionSpec()))


def own_copy(tree: Any) -> Any:
    """A copy of ``tree`` in new buffers, for a state field that starts at the params.

    A state leaf that *is* a params buffer breaks a step jitted with
    ``donate_argnums`` over params and state: XLA refuses to donate one buffer
    twice, and after donating the params the state would read freed memory.
    An abstract leaf (``jax.ShapeDtypeStruct``, given to ``init`` for the
    state's layout) has no values to copy and stays as it is, as in Optax: the
    state is then a restore target (Orbax) whose values come from a checkpoint.
    """
    return jax.tree.map(lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jnp.copy(x), tree)


def safe_ratio(numerator: jax.Array, denominator: jax.Array, fallback: Any) -> jax.Array:
    """``numerator / denominator``, or ``fallback`` where the denominator is 0.

    Both branches of the ``where`` are finite, so the gradient of the result
    has no ``0/0`` NaN either.
    """
    nonzero = denominator != 0
    return jnp.where(nonzero, numerator / jnp.where(nonzero, denominator, 1.0), fallback)


def require_params(params: Any, who: str, updates: Any = None) -> None:
    """``params`` must be given and, when ``updates`` are, match them leaf for leaf.

    Raises ``ValueError`` (no params) or the structure error of
    :func:`optcore.validate.check_tree_match`, naming the first mismatching
    path, at trace time: before any tree map over both could fail obscurely.
    """
    if params is None:
        raise ValueError(f"{who}: {base.NO_PARAMS_MSG}")
    if updates is not None:
        validate.check_tree_match(updates, params, against="params")


# --- hyperparameter checks (construction time; traced values and schedules pass) ----


def check_beta(name: str, value: Any) -> None:
    """A bias-corrected decay rate must lie in ``[0, 1)``: ``1 - value**t`` divides by zero at ``1``."""
    check_range(name, value, low=0.0, high=1.0, high_inclusive=False)


def check_decay(name: str, value: Any) -> None:
    """A decay rate that is not bias-corrected must lie in ``[0, 1]``."""
    validate.check_decay(name, value)


def check_positive(name: str, value: Any) -> None:
    """A concrete ``value`` must be strictly positive (``eps``, a size, a learning rate that must not be 0)."""
    check_range(name, value, low=0.0, low_inclusive=False)


# --- static arguments -----------------------------------------------------


def static_args(*names: str) -> Callable[[F], F]:
    """Declares the arguments of a factory that :func:`optcore.inject_hyperparams` passes unchanged.

    Sizes and step counts (shapes and loops depend on them), seeds, masks and
    other arguments that are not values of the step belong here::

        @optcore.kit.static_args("rank", "mask")
        def my_optimizer(learning_rate, rank=4, mask=None): ...

    ``inject_hyperparams(my_optimizer)(0.1, rank=8)`` then stores only
    ``learning_rate`` in the state. A factory that declares nothing is wrapped
    as Optax wraps it: every number it is given is injected and every
    callable it is given is a schedule. Booleans, dtypes, ``None`` and other
    non-numeric values are never injected.

    Raises:
      TypeError: a name is not a parameter of the decorated factory.
    """

    def declare(factory: F) -> F:
        parameters = inspect.signature(factory).parameters
        unknown = [n for n in names if n not in parameters]
        if unknown:
            raise TypeError(
                f"static_args names {unknown} that are not parameters of "
                f"{getattr(factory, '__qualname__', factory)}; its parameters are {list(parameters)}."
            )
        setattr(factory, STATIC_ARGS_ATTRIBUTE, frozenset(names))
        return factory

    return declare


def declared_static_args(factory: Callable[..., Any]) -> frozenset[str] | None:
    """The static arguments ``factory`` declared with :func:`static_args`, or ``None`` if it declared none."""
    declared = getattr(factory, STATIC_ARGS_ATTRIBUTE, None)
    return None if declared is None else frozenset(declared)


__all__ = [
    "STATIC_ARGS_ATTRIBUTE",
    "cast_like",
    "cast_promoted",
    "check_beta",
    "check_decay",
    "check_integer",
    "check_non_negative",
    "check_not_schedule",
    "check_one_of",
    "check_positive",
    "check_range",
    "declared_static_args",
    "dtype_or_none",
    "f32",
    "hyperparameter_dtype",
    "learning_rate_at",
    "map_params",
    "own_copy",
    "require_params",
    "require_update_args",
    "reshard_like",
    "safe_ratio",
    "static_args",
    "value_at",
    "whole",
    "widen",
    "wraps_one_array",
    "zero_count",
]
