"""Wrappers and combinators: transformations built from other transformations.

Layer 3: may use :mod:`optcore.transforms` and :mod:`optcore.schedules`, never the
optimizers above it. ``inject_hyperparams`` lives in :mod:`optcore.schedules` (as in
Optax) and is re-exported here because it wraps an optimizer factory.
"""

from optcore.transforms._combining import chain, named_chain
from optcore.schedules import inject_hyperparams, inject_stateful_hyperparams
from optcore.transforms._masking import MaskedNode, MaskedState, masked
from optcore.wrappers._conditional import (
    ConditionallyMaskState,
    ConditionallyTransformState,
    ConditionFn,
    conditionally_mask,
    conditionally_transform,
)
from optcore.wrappers._finite import ApplyIfFiniteState, apply_if_finite
from optcore.wrappers._flatten import flatten
from optcore.wrappers._lookahead import LookaheadParams, LookaheadState, lookahead
from optcore.wrappers._monitor import MonitorState, SnapshotState, measure_with_ema, monitor, snapshot
from optcore.wrappers._multisteps import (
    ApplyEvery,
    MultiSteps,
    MultiStepsState,
    ShouldSkipUpdateFunction,
    apply_every,
    skip_large_updates,
    skip_not_finite,
)
from optcore.wrappers._partition import (
    MultiTransformState,
    PartitionState,
    freeze,
    multi_transform,
    partition,
    selective_transform,
)

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
