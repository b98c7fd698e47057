"""Optimizer aliases: popular optimizers assembled from transformations.

Layer 4: assembled from :mod:`optcore.transforms` (combinators included).
"""

from optcore.optimizers._accumulators import adadelta, adafactor, adagrad, rmsprop, sm3
from optcore.optimizers._adaptive import (
    adabelief,
    adam,
    adamax,
    adamaxw,
    adamw,
    adan,
    amsgrad,
    nadam,
    nadamw,
    novograd,
    radam,
    yogi,
)
from optcore.optimizers._lbfgs import lbfgs
from optcore.optimizers._optimistic import optimistic_adam, optimistic_adam_v2, optimistic_gradient_descent
from optcore.optimizers._sgd import noisy_sgd, polyak_sgd, sgd
from optcore.optimizers._sign import lion, rprop, sign_sgd, signum
from optcore.optimizers._trust import fromage, lamb, lars

__all__ = [
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "amsgrad",
    "fromage",
    "lamb",
    "lbfgs",
    "lars",
    "lion",
    "nadam",
    "nadamw",
    "noisy_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    "sign_sgd",
    "signum",
    "sm3",
    "yogi",
]
