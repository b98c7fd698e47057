"""Construction-time checks of hyperparameters.

Only concrete Python or NumPy numbers are checked: arrays that may be traced
(and schedules) are accepted as they are, so ``inject_hyperparams`` and jit keep
working. Layer 0.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import numpy as np


def _concrete(value: Any):
    """The value as a float if it is a concrete real scalar, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.shape == () and np.isrealobj(value):
        return float(value)
    return None


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
) -> None:
    """Raises ``ValueError`` naming ``name`` if a concrete ``value`` is out of range."""
    x = _concrete(value)
    if x is None:
        return
    if x != x:  # NaN
        raise ValueError(f"{name} must be a number, got NaN.")
    too_low = low is not None and (x < low if low_inclusive else x <= low)
    too_high = high is not None and (x > high if high_inclusive else x >= high)
    if too_low or too_high:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value!r}.")


def check_non_negative(name: str, value: Any) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is negative."""
    check_range(name, value, low=0.0)


def check_not_nan(name: str, value: Any) -> None:
    """Raises ``ValueError`` if a concrete ``value`` is NaN; any sign is accepted.

    For hyperparameters whose sign is meaningful, as in Optax: a negative
    learning rate ascends (``sgd(-0.1)``), a negative weight decay pushes the
    params away from zero. Only NaN, which poisons every step, is always wrong.
    """
    check_range(name, value)


def check_one_of(name: str, value: Any, choices: tuple) -> None:
    """Raises ``ValueError`` naming ``name`` and the ``choices`` unless ``value`` is one of them.

    For arguments that pick a variant by name (``mode="hard"``,
    ``reduction="mean"``), so every such argument fails with one message::

        check_one_of("mode", mode, ("hard", "smooth"))
        # ValueError: mode must be one of ('hard', 'smooth'), got 'soft'.
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")


def check_integer(name: str, value: Any, minimum: int) -> None:
    """Raises unless ``value`` is a Python (or NumPy) integer of at least ``minimum``: a size, a count.

    Such arguments decide shapes or loop lengths, so they must be known when the
    transformation is built. A ``TypeError`` for anything else (a float, a bool,
    an array); when it is an array, the message says how it most likely became
    one: an ``inject_hyperparams`` wrapper not told that the argument is static.
    A ``ValueError`` below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        hint = ""
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            hint = (
                f" An inject_hyperparams wrapper passes as an array every number it is not told is static: "
                f"optcore.inject_hyperparams reads the static arguments the factory declares; "
                f"with optax.inject_hyperparams, add {name!r} to static_args."
            )
        raise TypeError(f"{name} must be an integer of at least {minimum}, got {value!r}.{hint}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}.")


def as_scalar(name: str, value: Any) -> Any:
    """``value`` with a size-1 array (``jnp.array([1e-3])``) reshaped to a scalar.

    Optax accepts a size-1 array where a scalar hyperparameter is expected and
    broadcasts it, so a scalar param becomes shape ``(1,)``. Here it acts as
    the scalar it holds: the params keep their shapes. ``None``, schedules
    (callables) and scalars are returned unchanged; the dtype is kept.

    Raises:
      ValueError: if ``value`` is an array of more than one element.
    """
    if value is None or callable(value):
        return value
    shape = np.shape(value)
    if shape == ():
        return value
    if int(np.prod(shape)) != 1:
        raise ValueError(f"{name} must be a scalar or a schedule, got shape {tuple(shape)}.")
    if not hasattr(value, "reshape"):  # a list or tuple such as [1e-3]
        value = np.asarray(value)
    return value.reshape(())


def check_decay(name: str, value: Any) -> None:
    """A decay rate (``b1``, ``b2``, ``decay``) must lie in ``[0, 1]``."""
    check_range(name, value, low=0.0, high=1.0, high_inclusive=True)


def check_not_schedule(name: str, value: Any, *, who: str) -> None:
    """Raises ``TypeError`` if ``value`` is a schedule where ``who`` takes a number.

    For a hyperparameter of an algorithm's own update rule (NovoGrad's weight
    decay, Prodigy's), as opposed to one applied by a transformation that reads
    a schedule at its step count (``add_decayed_weights``). The message says
    how to schedule it anyway::

        check_not_schedule("weight_decay", weight_decay, who="prodigy")
        # TypeError: prodigy takes weight_decay as a number (or a scalar array), not a
        # schedule. To change it over the steps, inject it:
        # optcore.inject_hyperparams(prodigy)(weight_decay=schedule, ...).
    """
    if callable(value):
        raise TypeError(
            f"{who} takes {name} as a number (or a scalar array), not a schedule. To change it over the "
            f"steps, inject it: optcore.inject_hyperparams({who})({name}=schedule, ...)."
        )


def require_update_args(who: str, **arguments: Any) -> None:
    """Raises ``TypeError`` naming each extra ``update`` argument that is missing (``None``).

    The one convention for optimizers whose ``update`` needs more than the
    gradient (the loss ``value``, its ``grad``, a ``value_fn`` or ``obj_fn``):
    they take it as a keyword-only argument defaulting to ``None``, and a
    call without it fails like a Python call missing a required argument, a
    ``TypeError`` whose message names the argument::

        def update_fn(updates, state, params=None, *, value=None, **extra_args):
            optcore.validate.require_update_args("momo", value=value)

    Args:
      who: the optimizer's name, for the message.
      **arguments: each extra argument by name, as received.
    """
    missing = [name for name, value in arguments.items() if value is None]
    if missing:
        listed = ", ".join(f"'{name}'" for name in missing)
        plural = "s" if len(missing) > 1 else ""
        example = ", ".join(f"{name}=..." for name in missing)
        raise TypeError(
            f"{who}'s update() missing {len(missing)} required keyword argument{plural}: {listed}; "
            f"call update(updates, state, params, {example})." + (_OPTAX_DROPS_EXTRA_ARGS if _called_by_optax() else "")
        )


_OPTAX_DROPS_EXTRA_ARGS = (
    " It was called by Optax, whose combinators (optax.chain, optax.MultiSteps, optax.inject_hyperparams, ...) "
    "pass extra arguments only to instances of optax.GradientTransformationExtraArgs and drop them for others: "
    "if you gave them, make the outer combinator optcore's (optcore.chain, ...), or wrap this transformation "
    "as optax.GradientTransformationExtraArgs(tx.init, tx.update)."
)


def _called_by_optax() -> bool:
    """Whether an Optax module is on the call stack (read on the error path only; Optax is not imported)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").partition(".")[0] == "optax":
            return True
        frame = frame.f_back
    return False


def _path_str(path) -> str:
    import jax

    return jax.tree_util.keystr(path) or "<root>"


def _is_floating(dtype) -> bool:
    """Whether ``dtype`` is a real or complex floating dtype (not int, bool, float0 or a key)."""
    import jax.numpy as jnp

    try:
        return bool(jnp.issubdtype(dtype, jnp.inexact))
    except TypeError:  # dtypes NumPy does not know (e.g. extended key dtypes)
        return False


def _dtype_name(dtype) -> str:
    """A readable dtype name (``float0`` prints as a NumPy record type otherwise)."""
    import jax

    if dtype == jax.dtypes.float0:
        return "float0"
    return getattr(dtype, "name", str(dtype))


def check_floating(tree: Any, *, what: str = "gradient", who: str = "this optimizer") -> None:
    """Raises ``TypeError`` naming the first leaf of ``tree`` whose dtype is not floating.

    Integer and boolean leaves (and ``float0``, the tangent type of integer
    inputs) have no meaningful gradient step: rather than silently truncating
    the step or promoting the state, the error names the leaf path and dtype,
    at trace time.
    """
    import jax
    import numpy as np

    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            dtype = np.result_type(leaf)
        if not _is_floating(dtype):
            raise TypeError(
                f"{_path_str(path)}: {what} has dtype {_dtype_name(dtype)}, but {who} needs floating-point {what}s "
                f"(cast integer or boolean leaves to a float dtype, or leave them out with optcore.masked)."
            )


def check_tree_match(
    tree: Any,
    reference: Any,
    *,
    what: str = "gradient",
    against: str = "state",
    shapes: bool = True,
    floating: bool = True,
) -> None:
    """Raises ``ValueError`` naming the first path where ``tree`` and ``reference`` differ.

    Compares tree structure and (with ``shapes``) leaf shapes, at trace time,
    so it costs nothing in the compiled step. ``None`` leaves and masked-out
    placeholders are compared as structure. Used at the top of the ``update``
    of stateful transformations (against a params-shaped state field) so that
    a gradient tree that does not match the params the state was built from
    fails with a message such as
    ``['layer1']['w']: state has shape (64, 32), gradient has shape (32, 64)``
    instead of an XLA broadcasting error or a silent broadcast.

    With ``floating`` (the default), a leaf of either tree whose dtype is not
    floating raises ``TypeError`` naming the path and dtype (see
    :func:`check_floating`); :func:`optcore.apply_updates` turns it off, as
    integer params with zero updates are legitimate there.
    """
    import jax
    import numpy as np

    is_none = lambda x: x is None  # noqa: E731
    tree_paths = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]
    ref_paths = jax.tree_util.tree_flatten_with_path(reference, is_leaf=is_none)[0]
    tree_by_path = {_path_str(p): x for p, x in tree_paths}
    ref_by_path = {_path_str(p): x for p, x in ref_paths}
    if jax.tree.structure(tree, is_leaf=is_none) != jax.tree.structure(reference, is_leaf=is_none):
        built_from = "" if against == "params" else f" the {against} was built from"
        for path in ref_by_path:
            if path not in tree_by_path:
                raise ValueError(f"{path}: the {against} has an entry here that the {what} lacks "
                                 f"(the {what} tree does not match the params{built_from}).")
        for path in tree_by_path:
            if path not in ref_by_path:
                raise ValueError(f"{path}: the {what} has an entry here that the {against} lacks "
                                 f"(the {what} tree does not match the params{built_from}).")
        raise ValueError(
            f"the {what} tree does not match the {against}: {jax.tree.structure(tree, is_leaf=is_none)} "
            f"vs {jax.tree.structure(reference, is_leaf=is_none)}."
        )
    for path, ref in ref_by_path.items():
        leaf = tree_by_path[path]
        if leaf is None or ref is None:
            continue
        if shapes and np.shape(leaf) != np.shape(ref):
            raise ValueError(
                f"{path}: {against} has shape {tuple(np.shape(ref))}, {what} has shape {tuple(np.shape(leaf))}."
            )
        if floating:
            for name, x in ((what, leaf), (against, ref)):
                dtype = getattr(x, "dtype", None)
                if dtype is None:
                    dtype = np.result_type(x)
                if not _is_floating(dtype):
                    built = " (built from non-floating params)" if name == against == "state" else ""
                    raise TypeError(
                        f"{path}: {name} has dtype {_dtype_name(dtype)}{built}, but this optimizer needs floating-point "
                        f"params and gradients (cast integer or boolean leaves to a float dtype, or leave "
                        f"them out with optcore.masked)."
                    )
