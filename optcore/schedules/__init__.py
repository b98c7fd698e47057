"""Schedules: functions from a step count to a hyperparameter value.

Layer 2: depends on :mod:`optcore.base` and :mod:`optcore.tree_utils`.
"""

from optcore.base import Schedule
from optcore.schedules._schedule import constant_schedule, polynomial_schedule

__all__ = [
    "Schedule",
    "constant_schedule",
    "polynomial_schedule",
]
