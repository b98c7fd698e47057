"""Wrappers and combinators: transformations built from other transformations.

A namespace above :mod:`optcore.transforms` (where the code lives, so that
optimizers can use it): every name here is registered with kind ``wrapper``.
``inject_hyperparams`` lives in :mod:`optcore.schedules` (as in Optax) and is
re-exported here because it wraps an optimizer factory.
"""

from optcore.schedules import inject_hyperparams, inject_stateful_hyperparams
from optcore.transforms import (
    ApplyIfFiniteState,
    ConditionallyMaskState,
    ConditionallyTransformState,
    ConditionFn,
    MaskedNode,
    MaskedState,
    MonitorState,
    MultiSteps,
    MultiStepsState,
    PartitionState,
    ShouldSkipUpdateFunction,
    SnapshotState,
    apply_if_finite,
    chain,
    conditionally_mask,
    conditionally_transform,
    flatten,
    freeze,
    masked,
    measure_with_ema,
    monitor,
    named_chain,
    partition,
    selective_transform,
    skip_large_updates,
    skip_not_finite,
    snapshot,
)
from optcore.transforms._lookahead import LookaheadParams, LookaheadState, lookahead
from optcore.transforms._multisteps import ApplyEvery, apply_every
from optcore.transforms._partition import MultiTransformState, multi_transform

__all__ = [
    "ApplyEvery",
    "ApplyIfFiniteState",
    "ConditionFn",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "LookaheadParams",
    "LookaheadState",
    "MaskedNode",
    "MaskedState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "MultiTransformState",
    "PartitionState",
    "ShouldSkipUpdateFunction",
    "SnapshotState",
    "apply_every",
    "apply_if_finite",
    "chain",
    "conditionally_mask",
    "conditionally_transform",
    "flatten",
    "freeze",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "lookahead",
    "masked",
    "measure_with_ema",
    "monitor",
    "multi_transform",
    "named_chain",
    "partition",
    "selective_transform",
    "skip_large_updates",
    "skip_not_finite",
    "snapshot",
]
