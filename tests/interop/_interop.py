"""Comparison helpers shared by the client tests in ``tests/interop``.

Every test here runs the same training loop twice, once with an optcore
transformation and once with the Optax 0.2.8 one it replaces, inside the real
client (Flax, Orbax, Equinox, Optimistix), and compares the results.

Two levels of agreement are checked:

* ``assert_identical``: bit for bit. Holds where both libraries do the same
  float32 arithmetic, e.g. when every hyperparameter is an array on both sides
  (``inject_hyperparams``, schedules) or for checkpoint round trips of optcore
  alone.
* ``assert_close``: float32 ``rtol=1e-5``. optcore turns Python-float
  hyperparameters into float32 arrays before the arithmetic
  (docs/guides/porting.md, "What differs"), where Optax folds them as Python
  floats, so after a few Adam steps the params differ by a few float32 ulps.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

RTOL = 1e-5
# Params near zero: a relative bound alone would demand exact zeros there.
ATOL = 1e-6


def _leaves(tree: Any) -> list:
    return jax.tree.leaves(tree)


def assert_identical(actual: Any, expected: Any, what: str = "tree") -> None:
    """Every leaf bit-identical (same dtype, shape and bytes)."""
    a_leaves, e_leaves = _leaves(actual), _leaves(expected)
    assert len(a_leaves) == len(e_leaves), f"{what}: {len(a_leaves)} leaves vs {len(e_leaves)}"
    for index, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what} leaf {index}: {a.dtype}{a.shape} vs {e.dtype}{e.shape}"
        assert a.tobytes() == e.tobytes(), f"{what} leaf {index} differs: max |diff| {np.max(np.abs(a - e))}"


def assert_close(actual: Any, expected: Any, what: str = "tree", rtol: float = RTOL, atol: float = ATOL) -> None:
    """Every leaf equal to float32 ``rtol`` (and a tiny ``atol`` near zero)."""
    a_leaves, e_leaves = _leaves(actual), _leaves(expected)
    assert len(a_leaves) == len(e_leaves), f"{what}: {len(a_leaves)} leaves vs {len(e_leaves)}"
    for index, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"{what} leaf {index}: shape {a.shape} vs {e.shape}"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=f"{what} leaf {index}")


def assert_moved(before: Any, after: Any, what: str = "params") -> None:
    """At least one leaf changed: the loop really trained (guards vacuous passes)."""
    moved = any(
        not np.array_equal(np.asarray(b), np.asarray(a)) for b, a in zip(_leaves(before), _leaves(after))
    )
    assert moved, f"{what} did not change: the optimizer did nothing"
