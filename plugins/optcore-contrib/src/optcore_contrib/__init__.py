"""optcore-contrib: research optimizers for optcore (the counterpart of ``optax.contrib``).

Installed, it is reachable as ``optcore.contrib`` and each name is registered
with the optcore registry (``optcore.get("prodigy")``).
"""

from optcore.transforms import ScaleByBeliefState  # the state of scale_by_acprop

from optcore_contrib._moments import (
    ScaleByAdemamixState,
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
from optcore_contrib._galore import GaLoreDimensionNumbers, GaLoreState, galore, scale_by_galore
from optcore_contrib._muon import MuonDimensionNumbers, MuonState, muon, scale_by_muon
from optcore_contrib._plateau import ReduceLROnPlateauState, reduce_on_plateau
from optcore_contrib._schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from optcore_contrib._sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
    sophia,
)
from optcore_contrib._privacy import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
    dpsgd,
)
from optcore_contrib._wrappers import (
    MechanicState,
    NormalizeState,
    SAMState,
    SplitRealAndImaginaryState,
    mechanize,
    normalize,
    sam,
    split_real_and_imaginary,
)

# Kinds under which _plugin registers each public function (states are not registered).
OPTIMIZERS = (
    "acprop",
    "ademamix",
    "adopt",
    "cocob",
    "dadapt_adamw",
    "dog",
    "dowg",
    "dpsgd",
    "galore",
    "madgrad",
    "momo",
    "momo_adam",
    "muon",
    "prodigy",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "simplified_ademamix",
    "sophia",
)
TRANSFORMS = (
    "hutchinson_estimator_diag_hessian",
    "normalize",
    "reduce_on_plateau",
    "scale_by_acprop",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_cocob",
    "scale_by_galore",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_simplified_ademamix",
)
WRAPPERS = (
    "differentially_private_aggregate",
    "mechanize",
    "sam",
    "schedule_free",
    "split_real_and_imaginary",
)
UTILITIES = ("schedule_free_eval_params",)
STATES = (
    "COCOBState",
    "DAdaptAdamWState",
    "DifferentiallyPrivateAggregateState",
    "DoGState",
    "DoWGState",
    "GaLoreDimensionNumbers",
    "GaLoreState",
    "HutchinsonState",
    "MadgradState",
    "MechanicState",
    "MomoAdamState",
    "MomoState",
    "MuonDimensionNumbers",
    "MuonState",
    "NormalizeState",
    "ProdigyState",
    "ReduceLROnPlateauState",
    "SAMState",
    "ScaleByAdemamixState",
    "ScaleByBeliefState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScheduleFreeState",
    "SophiaState",
    "SplitRealAndImaginaryState",
)

__all__ = sorted(OPTIMIZERS + TRANSFORMS + WRAPPERS + UTILITIES + STATES)
