"""Gradient transformations, one module per family.

Layer 3: depends on base, numerics, tree_utils and schedules.
"""

from optcore.base import (
    EmptyState,
    identity,
    set_to_zero,
    stateless,
    stateless_with_tree_map,
    with_extra_args_support,
)
from optcore.transforms._adaptive import (
    ScaleByAdamState,
    ScaleByRmsState,
    scale_by_adam,
    scale_by_rms,
)
from optcore.transforms._adding import AddDecayedWeightsState, TraceState, add_decayed_weights, trace
from optcore.transforms._clipping import ClipByGlobalNormState, clip_by_global_norm
from optcore.transforms._combining import chain
from optcore.transforms._masking import MaskedNode, MaskedState, masked
from optcore.transforms._scaling import (
    ScaleByScheduleState,
    ScaleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
    scale_by_sign,
)

__all__ = [
    "AddDecayedWeightsState",
    "ClipByGlobalNormState",
    "EmptyState",
    "MaskedNode",
    "MaskedState",
    "ScaleByAdamState",
    "ScaleByRmsState",
    "ScaleByScheduleState",
    "ScaleState",
    "TraceState",
    "add_decayed_weights",
    "chain",
    "clip_by_global_norm",
    "identity",
    "masked",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_rms",
    "scale_by_schedule",
    "scale_by_sign",
    "set_to_zero",
    "stateless",
    "stateless_with_tree_map",
    "trace",
    "with_extra_args_support",
]
