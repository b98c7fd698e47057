"""The composition contrib's optimizers share (the building blocks come from :mod:`optcore.kit`)."""

from __future__ import annotations

from typing import Any, Optional

import optcore
from optcore import base


def with_decay_and_lr(
    scaler: base.GradientTransformation,
    learning_rate: base.ScalarOrSchedule,
    weight_decay: Any,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    """``chain(scaler, add_decayed_weights(weight_decay, mask), scale_by_learning_rate(lr))``.

    The usual composition of a ``scale_by_*`` preconditioner into a full
    optimizer with decoupled weight decay.
    """
    return optcore.chain(
        scaler,
        optcore.add_decayed_weights(weight_decay, mask),
        optcore.scale_by_learning_rate(learning_rate),
    )
