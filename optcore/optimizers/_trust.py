"""Layer-wise trust-ratio optimizers: LAMB, LARS and Fromage."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp

from optcore import base, validate
from optcore.kit import f32, hyperparameter_dtype, static_args
from optcore.transforms import (
    add_decayed_weights,
    chain,
    masked,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_trust_ratio,
    trace,
)

MaskOrFn = Optional[Union[Any, Callable[[base.Params], Any]]]


@static_args("mask")
def lamb(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
    r"""LAMB: Adam steps (plus weight decay) rescaled layer-wise by a trust ratio.

    .. math::
        r_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} + \lambda \theta_t, \quad
        \theta_{t+1} = \theta_t - \eta \frac{\|\theta_t\|}{\|r_t\|} r_t

    per leaf (ratio 1 where a norm is zero). You et al., `Large Batch
    Optimization for Deep Learning: Training BERT in 76 minutes
    <https://arxiv.org/abs/1904.00962>`_, 2020.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay, in [0, 1).
      b2: second-moment decay, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      mask: tree of booleans (or a function of the params) selecting what to decay.
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay=weight_decay, mask=mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


@static_args("weight_decay_mask", "trust_ratio_mask")
def lars(
    learning_rate: base.ScalarOrSchedule,
    weight_decay: base.ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = True,
    trust_coefficient: float = 0.001,
    eps: float = 0.0,
    trust_ratio_mask: MaskOrFn = True,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""LARS: layer-wise trust-ratio scaling of (decayed) gradients, with momentum.

    .. math::
        d_t = g_t + \lambda \theta_t, \quad
        m_t = \mu m_{t-1} - \eta\, c \frac{\|\theta_t\|}{\|d_t\| + \epsilon} d_t, \quad
        \theta_{t+1} = \theta_t + m_t

    per leaf (ratio 1 where a norm is zero). You et al., `Large Batch Training
    of Convolutional Networks <https://arxiv.org/abs/1708.03888>`_, 2017.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      weight_decay_mask: tree of booleans (or a function, or ``True`` for all)
        selecting what to decay.
      trust_coefficient: :math:`c`.
      eps: :math:`\epsilon`.
      trust_ratio_mask: tree of booleans (or a function, or ``True`` for all)
        selecting what the trust ratio applies to.
      momentum: :math:`\mu`, in [0, 1].
      nesterov: Nesterov momentum.
    """
    return chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        masked(scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps), mask=trust_ratio_mask),
        scale_by_learning_rate(learning_rate),
        trace(decay=momentum, nesterov=nesterov),
    )


def _fromage_factors(learning_rate: Any, updates: Any) -> tuple[jax.Array, jax.Array]:
    r"""Fromage's step :math:`-\eta / \sqrt{1+\eta^2}` and shrink :math:`1 / \sqrt{1+\eta^2} - 1`.

    In the updates' hyperparameter dtype (float64 under x64 for float64 params).
    """
    lr = f32(learning_rate, hyperparameter_dtype(updates))
    multiplier = 1 / jnp.sqrt(1 + lr**2)
    return -(lr * multiplier), multiplier - 1


def _fromage_step(learning_rate: Any) -> base.GradientTransformation:
    """``u <- -eta / sqrt(1 + eta^2) u``: the learning rate with Fromage's radial factor."""

    def update_fn(updates, state, params=None):
        del params
        validate.check_floating(updates)
        step, _ = _fromage_factors(learning_rate, updates)
        return jax.tree.map(lambda g: (step * g).astype(g.dtype), updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def _shrink_params(learning_rate: Any) -> base.GradientTransformation:
    """``u <- u + (1 / sqrt(1 + eta^2) - 1) theta``: Fromage's radial shrink."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        _, factor = _fromage_factors(learning_rate, updates)
        return jax.tree.map(lambda u, p: (u + factor * p).astype(u.dtype), updates, params), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def fromage(learning_rate: float, min_norm: float = 1e-6) -> base.GradientTransformationExtraArgs:
    r"""Fromage: steps relative to the parameter norm, then a radial shrink.

    .. math::
        \theta_{t+1} = \frac{1}{\sqrt{1+\eta^2}}
        \left(\theta_t - \eta \frac{\|\theta_t\|}{\|g_t\|} g_t\right)

    per leaf. Bernstein et al., `On the distance between two neural networks
    and the stability of learning <https://arxiv.org/abs/2002.03432>`_, 2020.

    Args:
      learning_rate: :math:`\eta`, a scalar (the shrink factor depends on it).
      min_norm: the smallest norm used in the trust ratio.
    """
    if callable(learning_rate):
        raise TypeError("fromage needs a scalar learning_rate: its shrink factor 1/sqrt(1+lr^2) is fixed.")
    learning_rate = validate.as_scalar("learning_rate", learning_rate)
    validate.check_not_nan("learning_rate", learning_rate)
    return chain(scale_by_trust_ratio(min_norm), _fromage_step(learning_rate), _shrink_params(learning_rate))
