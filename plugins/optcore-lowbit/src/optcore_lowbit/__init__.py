"""optcore-lowbit: optimizers with 8-bit and 4-bit block-quantized states.

Adam(W), Lion and momentum SGD whose moments are stored in one byte (or half a
byte) per entry plus a float32 scale per block (Dettmers et al., 2022; Li et
al., 2023), and :func:`quantize_state`, which stores the state of any
transformation that way. Installed, each name is registered with the optcore
registry (``optcore.get("adamw_8bit")``) and the module is reachable as
``optcore.lowbit``.
"""

from optcore_lowbit._aliases import adam_8bit, adamw_4bit, adamw_8bit, lion_8bit, sgd_8bit
from optcore_lowbit._common import DEFAULT_BLOCK_SIZE, MIN_QUANTIZED_SIZE
from optcore_lowbit._codes import FLOAT_NO_ZERO, LINEAR_NO_ZERO, SIGNED, UNSIGNED, code_values, rounding_seed
from optcore_lowbit._quantize import QuantizedArray, Rank1QuantizedArray, dequantize, quantize
from optcore_lowbit._common import NU_CODES, NU_SCALINGS, ROUNDINGS
from optcore_lowbit._transforms import (
    ScaleByAdamLowBitState,
    ScaleByLionLowBitState,
    TraceLowBitState,
    scale_by_adam_4bit,
    scale_by_adam_8bit,
    scale_by_lion_8bit,
    trace_8bit,
)
from optcore_lowbit._wrapper import NONNEGATIVE_FIELDS, QuantizeStateState, quantize_state

__version__ = "0.6.0"

# Kinds under which _plugin registers each public function (states and helpers are not registered).
OPTIMIZERS = ("adam_8bit", "adamw_4bit", "adamw_8bit", "lion_8bit", "sgd_8bit")
TRANSFORMS = ("scale_by_adam_4bit", "scale_by_adam_8bit", "scale_by_lion_8bit", "trace_8bit")
WRAPPERS = ("quantize_state",)

# The constants (code kinds, defaults) are importable and described in docs/api/lowbit.rst.
__all__ = [
    "NONNEGATIVE_FIELDS",
    "NU_CODES",
    "NU_SCALINGS",
    "QuantizeStateState",
    "QuantizedArray",
    "ROUNDINGS",
    "Rank1QuantizedArray",
    "ScaleByAdamLowBitState",
    "ScaleByLionLowBitState",
    "TraceLowBitState",
    "adam_8bit",
    "adamw_4bit",
    "adamw_8bit",
    "code_values",
    "dequantize",
    "lion_8bit",
    "quantize",
    "quantize_state",
    "rounding_seed",
    "scale_by_adam_4bit",
    "scale_by_adam_8bit",
    "scale_by_lion_8bit",
    "sgd_8bit",
    "trace_8bit",
]
