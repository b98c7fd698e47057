"""Adaptive-moment optimizers: Adam, AdamW, RMSProp."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from optcore import base
from optcore.transforms import (
    add_decayed_weights,
    chain,
    identity,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
    trace,
)


def adam(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Adam: :math:`\theta_{t+1} = \theta_t - \eta\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)`.

    See :func:`optcore.scale_by_adam` for the moment equations. Kingma & Ba,
    `Adam: A Method for Stochastic Optimization <https://arxiv.org/abs/1412.6980>`_, 2014.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay.
      b2: second-moment decay.
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of the first moment.
      nesterov: NAdam's Nesterov momentum.
      nu_dtype: storage dtype of the second moment (optcore extension).

    Example:
      >>> import jax, jax.numpy as jnp, optcore
      >>> f = lambda x: jnp.sum(x ** 2)
      >>> opt = optcore.adam(0.1)
      >>> x = jnp.array([1.0, -2.0]); state = opt.init(x)
      >>> for _ in range(3):
      ...     updates, state = opt.update(jax.grad(f)(x), state)
      ...     x = optcore.apply_updates(x, updates)
      >>> print(f"{float(f(x)):.4f}")
      3.8600
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adamw(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""AdamW: Adam with decoupled weight decay.

    .. math::
        \theta_{t+1} = \theta_t - \eta \left(\hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)
        + \lambda \theta_t\right)

    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay.
      b2: second-moment decay.
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of the first moment.
      weight_decay: :math:`\lambda`.
      mask: tree of booleans (or a function of the params) selecting what to decay.
      nesterov: NAdam's Nesterov momentum.
      nu_dtype: storage dtype of the second moment (optcore extension).
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


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
    r"""RMSProp: :math:`\theta_{t+1} = \theta_t - \eta\, g_t / \sqrt{v_t + \epsilon}`.

    See :func:`optcore.scale_by_rms`. Hinton, Lecture 6e, 2012; the centered
    variant (Graves, 2013) divides by the running standard deviation instead.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      decay: decay of the moving average of squared gradients.
      eps: added for numerical stability.
      initial_scale: initial value of the accumulator.
      eps_in_sqrt: put ``eps`` inside the root.
      centered: divide by the standard deviation rather than the RMS.
      momentum: momentum coefficient, or ``None``.
      nesterov: Nesterov momentum.
      bias_correction: correct the zero initialisation of the accumulators.
    """
    if centered:
        raise NotImplementedError(
            "rmsprop(centered=True) needs scale_by_stddev, which is not in optcore yet."
        )
    return chain(
        scale_by_rms(decay=decay, eps=eps, initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt, bias_correction=bias_correction),
        scale_by_learning_rate(learning_rate),
        trace(decay=momentum, nesterov=nesterov) if momentum is not None else identity(),
    )
