"""Test inputs and tree comparisons shared by the conformance checks.

A quadratic objective with its minimum at 0.5 in every entry gives every
optimizer a gradient and, for those whose ``update`` takes more than the
gradient (line searches, Polyak steps, Sophia), a consistent ``value``,
``grad``, ``value_fn`` and ``obj_fn``. Comparisons are bit for bit (dtype,
shape and bytes, NaNs included) or to a tolerance, and name the path of the
first leaf that differs.
"""

from __future__ import annotations

import io
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def objective(params: Any) -> jax.Array:
    r"""The quadratic :math:`f(x) = \sum_i (x_i - 0.5)^2`, summed in float32 over every leaf."""
    total = jnp.zeros([], jnp.float32)
    for leaf in jax.tree.leaves(params):
        total = total + jnp.sum(jnp.abs(leaf.astype(jnp.float32) - 0.5) ** 2)
    return total


objective_grad = jax.jit(jax.grad(objective))
"""The gradient of :func:`objective`, jitted (in the params' dtypes)."""


def extra_update_args(params: Any, grads: Any) -> dict:
    """The extra ``update`` arguments some optimizers need, consistent with :func:`objective`.

    ``value`` (the objective at ``params``), ``grad`` (its gradient),
    ``value_fn`` and ``obj_fn`` (the objective itself): what line searches,
    Polyak step sizes, plateau schedules and Sophia read. An optimizer that
    takes none of them ignores them (see :func:`optcore.with_extra_args_support`).
    """
    return {"value": objective(params), "grad": grads, "value_fn": objective, "obj_fn": objective}


def small_params(dtype: Any = jnp.float32, *, scalar: bool = True) -> dict:
    """Nested params with a (2, 3) matrix and a scalar (shape ``(1,)`` if ``scalar=False``).

    Two leaves: nesting and ranks 0 and 2 are what the checks need, and every
    leaf adds to the compile time of each check.
    """
    return {
        "layer1": {"w": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32).reshape(2, 3).astype(dtype)},
        "scale": jnp.full(() if scalar else (1,), 1.5, dtype),
    }


def is_key(leaf: Any) -> bool:
    """True for a typed PRNG key array (``jax.random.key``)."""
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def raw(leaf: Any) -> np.ndarray:
    """The leaf as a NumPy array (typed PRNG keys as their key data)."""
    return np.asarray(jax.random.key_data(leaf) if is_key(leaf) else leaf)


def assert_bitwise_equal(actual: Any, expected: Any, what: str = "tree") -> None:
    """Same structure, and every leaf has the same dtype, shape and bytes (NaNs included).

    Raises:
      AssertionError: naming the path of the first leaf that differs.
    """
    assert jax.tree.structure(actual) == jax.tree.structure(expected), (
        f"{what}: structure differs: {jax.tree.structure(actual)} != {jax.tree.structure(expected)}"
    )
    for (path, a), e in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)):
        a, e = raw(a), raw(e)
        where = f"{what}{jax.tree_util.keystr(path)}"
        assert a.dtype == e.dtype and a.shape == e.shape, f"{where}: {a.dtype}{a.shape} != {e.dtype}{e.shape}"
        assert a.tobytes() == e.tobytes(), f"{where}: values differ: {a} != {e}"


def assert_close(actual: Any, expected: Any, what: str = "tree", *, rtol: float = 1e-6, atol: float = 0.0) -> None:
    """Same structure, shapes and dtypes; values equal to ``rtol``/``atol`` (NaN equals NaN)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected), f"{what}: structure differs"
    for (path, a), e in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)):
        a, e = raw(a), raw(e)
        where = f"{what}{jax.tree_util.keystr(path)}"
        assert (a.dtype, a.shape) == (e.dtype, e.shape), f"{where}: {a.dtype}{a.shape} != {e.dtype}{e.shape}"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=where)


def save_leaves(tree: Any) -> bytes:
    """The leaves of ``tree`` in a ``numpy.savez`` archive (typed keys as key data): a checkpoint."""
    buffer = io.BytesIO()
    np.savez(buffer, *[raw(leaf) for leaf in jax.tree.leaves(tree)])
    return buffer.getvalue()


def load_leaves(blob: bytes, like: Any) -> Any:
    """Restores a :func:`save_leaves` archive onto the treedef of ``like`` (a fresh ``init``).

    Each leaf must have the shape and dtype of the fresh leaf; typed PRNG keys
    are rewrapped with the fresh key's implementation. NumPy stores bfloat16
    as raw 2-byte records, so leaves are viewed back as the fresh dtype.

    Raises:
      AssertionError: if the archive does not fit ``like``.
    """
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


def buffers(tree: Any) -> list:
    """``(path, buffer address)`` of every array leaf (typed PRNG keys by their key data)."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array):
            array = jax.random.key_data(leaf) if is_key(leaf) else leaf
            out.append((jax.tree_util.keystr(path), array.unsafe_buffer_pointer()))
    return out


def leaf_types(tree: Any):
    """Structure, and (shape, dtype, weak_type) per leaf: what ``lax.scan`` requires of a carry."""

    def describe(leaf):
        aval = jax.typeof(leaf) if hasattr(jax, "typeof") else jax.core.get_aval(leaf)
        return jnp.shape(leaf), aval.dtype, getattr(aval, "weak_type", False)

    return jax.tree.structure(tree), [describe(leaf) for leaf in jax.tree.leaves(tree)]


def nonfinite_paths(tree: Any, allow_inf: bool = False) -> list:
    """Paths of floating leaves holding NaN (or, unless ``allow_inf``, an infinity)."""
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if is_key(leaf) or not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.inexact):
            continue
        values = np.asarray(jnp.asarray(leaf).astype(jnp.float32))
        if np.isnan(values).any() or (not allow_inf and np.isinf(values).any()):
            bad.append(jax.tree_util.keystr(path))
    return bad
