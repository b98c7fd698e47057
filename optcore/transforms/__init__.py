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
from optcore.transforms._adding import (
    AddDecayedWeightsState,
    AddNoiseState,
    EmaState,
    TraceState,
    add_decayed_weights,
    add_noise,
    ema,
    trace,
)
from optcore.transforms._clipping import (
    AdaptiveGradClipState,
    ClipByGlobalNormState,
    ClipState,
    adaptive_grad_clip,
    clip,
    clip_by_block_rms,
    clip_by_global_norm,
    per_example_global_norm_clip,
    per_example_layer_norm_clip,
    unitwise_clip,
    unitwise_norm,
)
from optcore.transforms._constraining import (
    NonNegativeParamsState,
    ZeroNansState,
    keep_params_nonnegative,
    zero_nans,
)
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
    "AdaptiveGradClipState",
    "AddDecayedWeightsState",
    "AddNoiseState",
    "ClipByGlobalNormState",
    "ClipState",
    "EmaState",
    "NonNegativeParamsState",
    "ZeroNansState",
    # gradient processing (clipping, adding, constraining)
    "adaptive_grad_clip",
    "add_noise",
    "clip",
    "clip_by_block_rms",
    "ema",
    "keep_params_nonnegative",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "unitwise_clip",
    "unitwise_norm",
    "zero_nans",
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
