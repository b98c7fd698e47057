"""Optimizers that rescale by accumulated squares: RMSProp, AdaGrad, AdaDelta,
Adafactor and SM3."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax.numpy as jnp

from optcore import base
from optcore.kit import static_args
from optcore.transforms import (
    add_decayed_weights,
    chain,
    clip_by_block_rms,
    ema,
    identity,
    scale,
    scale_by_adadelta,
    scale_by_factored_rms,
    scale_by_learning_rate,
    scale_by_param_block_rms,
    scale_by_rms,
    scale_by_rss,
    scale_by_sm3,
    scale_by_stddev,
    trace,
)

MaskOrFn = Optional[Union[Any, Callable[[base.Params], Any]]]


def rmsprop(
    learning_rate: base.ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""RMSProp, optionally centered and with (Nesterov) momentum.

    .. math::
        v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
        \theta_{t+1} = \theta_t - \eta\, g_t / \sqrt{v_t + \epsilon}

    Centered (Graves, 2013): :math:`m_t = \rho m_{t-1} + (1-\rho) g_t` and the
    denominator is :math:`\sqrt{v_t - m_t^2 + \epsilon}`. With momentum
    :math:`\mu`, the scaled steps are accumulated by :func:`optcore.trace`.

    Hinton, `Lecture 6e of Neural Networks for Machine Learning
    <https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf>`_, 2012;
    Graves, `Generating Sequences With Recurrent Neural Networks
    <https://arxiv.org/abs/1308.0850>`_, 2013.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      decay: :math:`\rho`, decay of the moving averages.
      eps: :math:`\epsilon`.
      initial_scale: initial value of :math:`v`.
      eps_in_sqrt: put ``eps`` inside the root.
      centered: divide by the running standard deviation rather than the RMS.
      momentum: momentum coefficient :math:`\mu`, or ``None``.
      nesterov: Nesterov momentum.
      bias_correction: correct the zero initialisation of the averages.
    """
    scaling = scale_by_stddev if centered else scale_by_rms
    return chain(
        scaling(decay=decay, eps=eps, initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt, bias_correction=bias_correction),
        scale_by_learning_rate(learning_rate),
        trace(decay=momentum, nesterov=nesterov) if momentum is not None else identity(),
    )


def adagrad(
    learning_rate: base.ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> base.GradientTransformationExtraArgs:
    r"""AdaGrad: per-coordinate steps shrinking with the sum of squared gradients.

    .. math::
        s_t = s_{t-1} + g_t^2, \quad \theta_{t+1} = \theta_t - \eta\, g_t / \sqrt{s_t + \epsilon}

    Duchi et al., `Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization <https://jmlr.org/papers/v12/duchi11a.html>`_, 2011.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      initial_accumulator_value: :math:`s_0`.
      eps: :math:`\epsilon`.
    """
    return chain(
        scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps),
        scale_by_learning_rate(learning_rate),
    )


@static_args("weight_decay_mask")
def adadelta(
    learning_rate: Optional[base.ScalarOrSchedule] = None,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: base.ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
    r"""AdaDelta: steps scaled by the ratio of update and gradient RMS.

    .. math::
        \theta_{t+1} = \theta_t - \eta\, \frac{\sqrt{E[\Delta x^2]_{t-1} + \epsilon}}
        {\sqrt{E[g^2]_t + \epsilon}}\, (g_t + \lambda \theta_t)

    (see :func:`optcore.scale_by_adadelta`).

    .. note:: With ``learning_rate=None`` optcore takes :math:`\eta = 1`, the
       paper's rule, and descends. Optax 0.2.8 then skips the learning-rate
       step altogether, so its update has the sign of the gradient.

    Zeiler, `ADADELTA: An Adaptive Learning Rate Method
    <https://arxiv.org/abs/1212.5701>`_, 2012.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule; ``None`` means 1.
      rho: decay of both averages, in [0, 1].
      eps: :math:`\epsilon`.
      weight_decay: :math:`\lambda`, added to the gradient before scaling. A number or a schedule of the step
        count.
      weight_decay_mask: tree of booleans (or a function of the params)
        selecting what to decay.
    """
    return chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_adadelta(rho=rho, eps=eps),
        scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
    )


@static_args("min_dim_size_to_factor", "decay_offset", "weight_decay_mask")
def adafactor(
    learning_rate: Optional[base.ScalarOrSchedule] = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: float = 0.8,
    decay_offset: int = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Optional[float] = 1.0,
    momentum: Optional[float] = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: Optional[base.ScalarOrSchedule] = None,
    eps: float = 1e-30,
    factored: bool = True,
    weight_decay_mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
    r"""Adafactor: factored second moments, update clipping and relative steps.

    .. math::
        \hat u_t = g_t / \sqrt{\hat V_t}, \quad
        u_t = \frac{\hat u_t}{\max(1, \mathrm{RMS}(\hat u_t)/d)}, \quad
        \theta_{t+1} = \theta_t - \eta\, \max(\mathrm{RMS}(\theta_t), 10^{-3})\, u_t

    where :math:`\hat V_t` is the factored estimate of
    :func:`optcore.scale_by_factored_rms` and :math:`d` the clipping
    threshold; optional momentum (an EMA of the steps, no debiasing) and
    decoupled weight decay follow.

    Shazeer & Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost <https://arxiv.org/abs/1804.04235>`_, 2018.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule; ``None`` leaves the
        steps relative to the parameter scale only.
      min_dim_size_to_factor: factor only leaves whose two largest axes are at
        least this long.
      decay_rate: exponent of the second-moment decay schedule.
      decay_offset: step offset of that schedule (for fine-tuning).
      multiply_by_parameter_scale: scale steps by the parameters' RMS.
      clipping_threshold: :math:`d`, or ``None`` for no update clipping.
      momentum: EMA decay of the steps, or ``None``.
      dtype_momentum: dtype of the momentum buffer.
      weight_decay_rate: decoupled weight decay, or ``None``. A number or a schedule of the step count.
      eps: added to the squared gradients.
      factored: factor the second moment of matrix-like leaves.
      weight_decay_mask: tree of booleans (or a function of the params)
        selecting what to decay.
    """
    steps = [
        scale_by_factored_rms(
            factored=factored,
            decay_rate=decay_rate,
            step_offset=decay_offset,
            min_dim_size_to_factor=min_dim_size_to_factor,
            epsilon=eps,
        )
    ]
    if clipping_threshold is not None:
        steps.append(clip_by_block_rms(clipping_threshold))
    if learning_rate is not None:
        steps.append(scale_by_learning_rate(learning_rate, flip_sign=False))
    if multiply_by_parameter_scale:
        steps.append(scale_by_param_block_rms())
    if momentum is not None:
        steps.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        steps.append(add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    # Descent follows the negative of the scaled gradient.
    steps.append(scale(-1.0))
    return chain(*steps)


def sm3(learning_rate: base.ScalarOrSchedule, momentum: float = 0.9) -> base.GradientTransformationExtraArgs:
    r"""SM3: AdaGrad with one accumulator per axis slice, plus momentum.

    .. math::
        \theta_{t+1} = \theta_t - \eta\, \nu_t

    with :math:`\nu_t` from :func:`optcore.scale_by_sm3` (``b1 = momentum``).

    Anil et al., `Memory-Efficient Adaptive Optimization
    <https://arxiv.org/abs/1901.11150>`_, 2019.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule (Optax takes only a scalar).
      momentum: decay of the momentum, in [0, 1].
    """
    return chain(scale_by_sm3(b1=momentum), scale_by_learning_rate(learning_rate))
