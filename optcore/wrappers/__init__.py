"""Wrappers and combinators: transformations built from other transformations.

Layer 3: may use :mod:`optcore.transforms`, never the optimizers above it.
"""

from optcore.transforms._combining import chain
from optcore.transforms._masking import MaskedNode, MaskedState, masked
from optcore.wrappers._flatten import flatten

__all__ = [
    "MaskedNode",
    "MaskedState",
    "chain",
    "flatten",
    "masked",
]
