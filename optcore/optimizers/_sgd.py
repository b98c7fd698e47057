"""Stochastic gradient descent and its variants: momentum, noisy SGD and the
Polyak step size."""

from __future__ import annotations

from typing import Any, Optional, Union

from optcore import base
from optcore.kit import static_args
from optcore.transforms import add_noise, chain, identity, scale_by_learning_rate, scale_by_polyak, trace


def sgd(
    learning_rate: base.ScalarOrSchedule,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    .. math::
        m_t = g_t + \beta m_{t-1}, \quad \theta_{t+1} = \theta_t - \eta m_t

    (without momentum, :math:`\theta_{t+1} = \theta_t - \eta g_t`; with
    Nesterov, the step is :math:`g_t + \beta m_t`).

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


@static_args("key", "seed")
def noisy_sgd(
    learning_rate: base.ScalarOrSchedule,
    eta: float = 0.01,
    gamma: float = 0.55,
    key: Optional[Union[int, base.PRNGKey]] = None,
    *,
    seed: Optional[int] = None,
) -> base.GradientTransformationExtraArgs:
    r"""SGD with annealed Gaussian gradient noise.

    .. math::
        \theta_{t+1} = \theta_t - \eta_{lr} (g_t + \xi_t), \quad
        \xi_t \sim \mathcal N\!\left(0, \frac{\eta}{(1+t)^\gamma}\right)

    Neelakantan et al., `Adding Gradient Noise Improves Learning for Very Deep
    Networks <https://arxiv.org/abs/1511.06807>`_, 2015.

    Args:
      learning_rate: :math:`\eta_{lr}`, a scalar or a schedule.
      eta: initial noise variance :math:`\eta`.
      gamma: decay exponent :math:`\gamma` of the variance.
      key: a PRNG key (or an int seed) for the noise.
      seed: deprecated spelling of an int ``key``.
    """
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))


def polyak_sgd(
    max_learning_rate: float = 1.0,
    scaling: base.ScalarOrSchedule = 1.0,
    f_min: float = 0.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> base.GradientTransformationExtraArgs:
    r"""SGD with the Polyak step size; ``update`` needs ``value=f(params)``.

    .. math::
        \theta_{t+1} = \theta_t - s \min\left\{\frac{f(\theta_t) - f^\star}
        {\|\nabla f(\theta_t)\|^2 + \epsilon}, \gamma_{max}\right\} \nabla f(\theta_t)

    where the norm is taken of the already scaled gradient :math:`s g`. With
    ``variant="sps+"`` the gap is :math:`\max(f(\theta_t) - f^\star, 0)`.

    Loizou et al., `Stochastic Polyak Step-size for SGD
    <https://arxiv.org/abs/2002.10542>`_, 2021; Garrigos et al., 2023.

    Args:
      max_learning_rate: :math:`\gamma_{max}`.
      scaling: :math:`s`, a scalar or a schedule.
      f_min: :math:`f^\star`, a lower bound of the objective.
      eps: :math:`\epsilon`.
      variant: ``"sps"`` or ``"sps+"``.

    Example:
      >>> import jax, jax.numpy as jnp, optcore
      >>> f = lambda x: jnp.sum(x ** 2)
      >>> opt = optcore.polyak_sgd()
      >>> x = jnp.array([1.0, 2.0, 3.0]); state = opt.init(x)
      >>> value, grad = jax.value_and_grad(f)(x)
      >>> updates, state = opt.update(grad, state, x, value=value)
      >>> print(f(optcore.apply_updates(x, updates)))
      3.5
    """
    return chain(
        sgd(learning_rate=scaling),
        scale_by_polyak(max_learning_rate=max_learning_rate, f_min=f_min, eps=eps, variant=variant),
    )
