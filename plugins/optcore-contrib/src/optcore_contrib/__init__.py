"""optcore-contrib: research optimizers for optcore (the counterpart of ``optax.contrib``)."""

from optcore_contrib._moments import (
    ScaleByAdemamixState,
    ScaleByBeliefState,
    ScaleBySimplifiedAdEMAMixState,
    acprop,
    ademamix,
    adopt,
    scale_by_acprop,
    scale_by_ademamix,
    scale_by_adopt,
    scale_by_simplified_ademamix,
    simplified_ademamix,
)
from optcore_contrib._parameter_free import (
    COCOBState,
    DAdaptAdamWState,
    DoGState,
    DoWGState,
    ProdigyState,
    cocob,
    dadapt_adamw,
    dog,
    dowg,
    prodigy,
    scale_by_cocob,
)
from optcore_contrib._dual_averaging import (
    MadgradState,
    MomoAdamState,
    MomoState,
    madgrad,
    momo,
    momo_adam,
    scale_by_madgrad,
)
