"""Sign-based optimizers: signSGD, Signum, Lion and Rprop."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from optcore import base
from optcore.kit import static_args
from optcore.transforms import (
    add_decayed_weights,
    chain,
    ema,
    scale,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_rprop,
    scale_by_sign,
)


def sign_sgd(learning_rate: base.ScalarOrSchedule) -> base.GradientTransformationExtraArgs:
    r"""signSGD: steps of fixed size in the direction of the gradient's sign.

    .. math::
        \theta_{t+1} = \theta_t - \eta\, \mathrm{sign}(g_t)

    Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
    <https://arxiv.org/abs/1802.04434>`_, 2018.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


def signum(
    learning_rate: base.ScalarOrSchedule,
    beta: float = 0.9,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Signum: signSGD on an exponential moving average of the gradients.

    .. math::
        m_t = \beta m_{t-1} + (1-\beta) g_t, \quad \theta_{t+1} = \theta_t - \eta\, \mathrm{sign}(m_t)

    Bernstein et al., `signSGD: Compressed Optimisation for Non-Convex Problems
    <https://arxiv.org/abs/1802.04434>`_, 2018.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      beta: decay :math:`\beta` of the moving average, in [0, 1].
      accumulator_dtype: dtype of the moving average.
    """
    return chain(
        ema(decay=beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


@static_args("mask")
def lion(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-3,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Lion: the sign of an interpolated momentum, with decoupled weight decay.

    .. math::
        \theta_{t+1} = \theta_t - \eta \left(\mathrm{sign}(\beta_1 m_{t-1} + (1-\beta_1) g_t)
        + \lambda \theta_t\right), \quad m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    Chen et al., `Symbolic Discovery of Optimization Algorithms
    <https://arxiv.org/abs/2302.06675>`_, 2023.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: interpolation between momentum and gradient, in [0, 1].
      b2: decay of the momentum, in [0, 1].
      mu_dtype: dtype of the momentum.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      mask: tree of booleans (or a function of the params) selecting what to decay.
    """
    return chain(
        scale_by_lion(b1=b1, b2=b2, mu_dtype=mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> base.GradientTransformationExtraArgs:
    r"""Rprop: per-coordinate step sizes adapted to the agreement of gradient signs.

    .. math::
        \theta_{t+1} = \theta_t - u_t

    with :math:`u_t` of :func:`optcore.scale_by_rprop` (iRprop-). optcore
    emits the current step; Optax 0.2.8 emits the previous one (see
    :func:`optcore.scale_by_rprop`).

    Riedmiller & Braun, `A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm <https://doi.org/10.1109/ICNN.1993.298623>`_, 1993.

    Args:
      learning_rate: the initial step size.
      eta_minus: factor applied to a step size after a sign flip, in [0, 1].
      eta_plus: factor applied while the sign is kept, at least 1.
      min_step_size: smallest step size.
      max_step_size: largest step size.
    """
    return chain(
        scale_by_rprop(
            learning_rate=learning_rate,
            eta_minus=eta_minus,
            eta_plus=eta_plus,
            min_step_size=min_step_size,
            max_step_size=max_step_size,
        ),
        scale(-1.0),
    )
