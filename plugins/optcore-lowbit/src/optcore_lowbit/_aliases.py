"""Optimizers with low-bit states: the float twins' chains with a quantized scaling transform.

Each alias is its float twin (:func:`optcore.adam`, :func:`optcore.adamw`,
:func:`optcore.lion`, :func:`optcore.sgd`) with the scaling transform replaced,
so that the states keep the twins' layouts (a chain of the same length) and
the same arguments mean the same thing; ``block_size`` and
``min_quantized_size`` are added, keyword-only.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import optcore
from optcore import base, kit
from optcore_lowbit import _common
from optcore_lowbit._transforms import scale_by_adam_4bit, scale_by_adam_8bit, scale_by_lion_8bit, trace_8bit

MaskOrFn = Optional[Union[Any, Callable[[base.Params], Any]]]


@kit.static_args("block_size", "min_quantized_size")
def adam_8bit(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
    block_size: int = 256,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
    mu_rounding: str = "nearest",
    nu_rounding: str = "stochastic",
) -> base.GradientTransformationExtraArgs:
    r"""Adam with 8-bit states: :math:`\theta_{t+1} = \theta_t - \eta\, u_t`, :math:`u_t` of :func:`scale_by_adam_8bit`.

    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, ICLR 2022.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1, b2, eps, eps_root, mu_dtype, nesterov, nu_dtype: as :func:`optcore.adam`.
      block_size: entries per quantization block.
      min_quantized_size: leaves with fewer entries keep float moments.
      mu_rounding: ``"nearest"`` or ``"stochastic"``: how the first moment is rounded.
      nu_rounding: ``"nearest"`` or ``"stochastic"``: how the second moment is rounded
        (see :func:`scale_by_adam_8bit`).

    Example:
      >>> import jax.numpy as jnp, optcore_lowbit
      >>> opt = optcore_lowbit.adam_8bit(0.1, min_quantized_size=1)
      >>> params = jnp.ones(4)
      >>> state = opt.init(params)
      >>> print(state[0].mu.codes.dtype, state[0].mu.codes.nbytes)
      uint8 4
    """
    return optcore.chain(
        scale_by_adam_8bit(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype,
                           block_size=block_size, min_quantized_size=min_quantized_size, mu_rounding=mu_rounding,
                           nu_rounding=nu_rounding),
        optcore.scale_by_learning_rate(learning_rate),
    )


@kit.static_args("block_size", "min_quantized_size", "mask")
def adamw_8bit(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
    block_size: int = 256,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
    mu_rounding: str = "nearest",
    nu_rounding: str = "stochastic",
) -> base.GradientTransformationExtraArgs:
    r"""AdamW with 8-bit states (bitsandbytes' ``AdamW8bit``).

    .. math::
        \theta_{t+1} = \theta_t - \eta\,(u_t + \lambda \theta_t)

    with :math:`u_t` of :func:`scale_by_adam_8bit`. Loshchilov & Hutter, 2019;
    Dettmers et al., `8-bit Optimizers via Block-wise Quantization
    <https://arxiv.org/abs/2110.02861>`_, ICLR 2022.

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov, nu_dtype:
        as :func:`optcore.adamw`.
      block_size: entries per quantization block.
      min_quantized_size: leaves with fewer entries keep float moments.
      mu_rounding: ``"nearest"`` or ``"stochastic"``: how the first moment is rounded.
      nu_rounding: ``"nearest"`` or ``"stochastic"``: how the second moment is rounded
        (see :func:`scale_by_adam_8bit`).
    """
    return optcore.chain(
        scale_by_adam_8bit(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype,
                           block_size=block_size, min_quantized_size=min_quantized_size, mu_rounding=mu_rounding,
                           nu_rounding=nu_rounding),
        optcore.add_decayed_weights(weight_decay, mask),
        optcore.scale_by_learning_rate(learning_rate),
    )


@kit.static_args("block_size", "min_quantized_size", "mask")
def adamw_4bit(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
    block_size: int = 128,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
    nu_scaling: str = "rank1",
    mu_rounding: str = "stochastic",
    nu_rounding: str = "stochastic",
    nu_code: str = "float",
) -> base.GradientTransformationExtraArgs:
    r"""AdamW with 4-bit states: :math:`u_t` of :func:`scale_by_adam_4bit`, decoupled weight decay.

    Li et al., `Memory Efficient Optimizers with 4-bit States
    <https://arxiv.org/abs/2309.01507>`_, NeurIPS 2023.

    Args:
      learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov, nu_dtype:
        as :func:`optcore.adamw`.
      block_size: entries per quantization block (even).
      min_quantized_size: leaves with fewer entries keep float moments.
      nu_scaling: ``"rank1"`` (the paper's) or ``"block"``: how the second moment is normalized.
      mu_rounding: ``"stochastic"`` or ``"nearest"`` (the paper's): how the first moment is rounded
        (see :func:`scale_by_adam_4bit`).
      nu_rounding: ``"nearest"`` (the paper's) or ``"stochastic"``: how the second moment is rounded.
    """
    return optcore.chain(
        scale_by_adam_4bit(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype,
                           block_size=block_size, min_quantized_size=min_quantized_size, nu_scaling=nu_scaling,
                           mu_rounding=mu_rounding, nu_rounding=nu_rounding, nu_code=nu_code),
        optcore.add_decayed_weights(weight_decay, mask),
        optcore.scale_by_learning_rate(learning_rate),
    )


@kit.static_args("block_size", "min_quantized_size", "mask")
def lion_8bit(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-3,
    mask: MaskOrFn = None,
    *,
    block_size: int = 256,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
) -> base.GradientTransformationExtraArgs:
    r"""Lion with an 8-bit momentum (bitsandbytes' ``Lion8bit``).

    .. math::
        \theta_{t+1} = \theta_t - \eta\,(u_t + \lambda \theta_t)

    with :math:`u_t` of :func:`scale_by_lion_8bit`. Chen et al., `Symbolic
    Discovery of Optimization Algorithms <https://arxiv.org/abs/2302.06675>`_, 2023.

    Args:
      learning_rate, b1, b2, mu_dtype, weight_decay, mask: as :func:`optcore.lion`.
      block_size: entries per quantization block.
      min_quantized_size: leaves with fewer entries keep a float momentum.
    """
    return optcore.chain(
        scale_by_lion_8bit(b1, b2, mu_dtype, block_size=block_size, min_quantized_size=min_quantized_size),
        optcore.add_decayed_weights(weight_decay, mask),
        optcore.scale_by_learning_rate(learning_rate),
    )


@kit.static_args("block_size", "min_quantized_size")
def sgd_8bit(
    learning_rate: base.ScalarOrSchedule,
    momentum: float = 0.9,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
    *,
    block_size: int = 256,
    min_quantized_size: int = _common.MIN_QUANTIZED_SIZE,
) -> base.GradientTransformationExtraArgs:
    r"""SGD with an 8-bit momentum buffer: :math:`\theta_{t+1} = \theta_t - \eta\, u_t`, :math:`u_t` of :func:`trace_8bit`.

    :func:`optcore.sgd`'s arguments, except that ``momentum`` is required to
    be a number (default 0.9): without momentum there is no state to quantize
    (use :func:`optcore.sgd`).

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      momentum, nesterov, accumulator_dtype: as :func:`optcore.sgd`.
      block_size: entries per quantization block.
      min_quantized_size: leaves with fewer entries keep a float buffer.
    """
    if momentum is None:
        raise ValueError("sgd_8bit: momentum must be a number in [0, 1]; without momentum use optcore.sgd.")
    return optcore.chain(
        trace_8bit(momentum, nesterov, accumulator_dtype, block_size=block_size, min_quantized_size=min_quantized_size),
        optcore.scale_by_learning_rate(learning_rate),
    )
