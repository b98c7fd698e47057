"""Construction-time checks of hyperparameters.

Only concrete Python or NumPy numbers are checked: arrays that may be traced
(and schedules) are accepted as they are, so ``inject_hyperparams`` and jit keep
working. Layer 0.
"""

from __future__ import annotations

import numbers
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


def check_decay(name: str, value: Any) -> None:
    """A decay rate (``b1``, ``b2``, ``decay``) must lie in ``[0, 1]``."""
    check_range(name, value, low=0.0, high=1.0, high_inclusive=True)
