"""Stochastic gradient descent and its momentum variants."""

from __future__ import annotations

from typing import Any, Optional

from optcore import base
from optcore.transforms import chain, identity, scale_by_learning_rate, trace


def sgd(
    learning_rate: base.ScalarOrSchedule,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    .. math::
        m_t = g_t + \beta m_{t-1}, \quad \theta_{t+1} = \theta_t - \eta m_t

    (without momentum, :math:`\theta_{t+1} = \theta_t - \eta g_t`).

    Robbins & Monro, `A Stochastic Approximation Method
    <https://doi.org/10.1214/aoms/1177729586>`_, 1951; Sutskever et al., 2013.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      momentum: :math:`\beta`, or ``None`` for no momentum.
      nesterov: use Nesterov momentum.
      accumulator_dtype: dtype of the momentum buffer.

    Example:
      >>> import jax.numpy as jnp, optcore
      >>> opt = optcore.sgd(0.1)
      >>> params = {"w": jnp.ones(2)}
      >>> updates, _ = opt.update({"w": jnp.ones(2)}, opt.init(params))
      >>> print(optcore.apply_updates(params, updates)["w"])
      [0.9 0.9]
    """
    momentum_tx = (
        trace(decay=momentum, nesterov=nesterov, accumulator_dtype=accumulator_dtype)
        if momentum is not None
        else identity()
    )
    return chain(momentum_tx, scale_by_learning_rate(learning_rate))
