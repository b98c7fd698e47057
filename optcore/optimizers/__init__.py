"""Optimizer aliases: popular optimizers assembled from transformations.

Layer 4: depends on transforms and wrappers.
"""

from optcore.optimizers._adaptive import adam, adamw, rmsprop
from optcore.optimizers._sgd import sgd

__all__ = [
    "adam",
    "adamw",
    "rmsprop",
    "sgd",
]
