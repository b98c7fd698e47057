"""Optimistic optimizers for saddle-point problems: optimistic gradient
descent and optimistic Adam."""

from __future__ import annotations

import warnings
from typing import Any, Optional

from optcore import base, validate
from optcore.transforms import chain, scale, scale_by_adam, scale_by_learning_rate, scale_by_optimistic_gradient


def optimistic_gradient_descent(
    learning_rate: base.ScalarOrSchedule,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> base.GradientTransformationExtraArgs:
    r"""Optimistic gradient descent (OGD).

    .. math::
        \theta_{t+1} = \theta_t - \eta \left((\alpha + \beta) g_t - \beta g_{t-1}\right)

    (:math:`\alpha g_1` at the first step).

    Mokhtari et al., `A Unified Analysis of Extra-gradient and Optimistic
    Gradient Methods for Saddle Point Problems <https://arxiv.org/abs/1901.08511>`_, 2019.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      alpha: weight :math:`\alpha` of the current gradient.
      beta: weight :math:`\beta` of the optimistic correction.
    """
    return chain(scale_by_optimistic_gradient(alpha=alpha, beta=beta), scale_by_learning_rate(learning_rate))


def optimistic_adam_v2(
    learning_rate: base.ScalarOrSchedule,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    nesterov: bool = True,
) -> base.GradientTransformationExtraArgs:
    r"""Optimistic Adam: the optimistic correction applied to Adam's steps.

    With :math:`r_t` Adam's (by default Nesterov) step,

    .. math::
        \theta_{t+1} = \theta_t - \eta \left((\alpha + \beta) r_t - \beta r_{t-1}\right)

    Daskalakis et al., `Training GANs with Optimism
    <https://arxiv.org/abs/1711.00141>`_, 2017.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      alpha: weight of the current step.
      beta: weight of the optimistic correction.
      b1: first-moment decay, in [0, 1).
      b2: second-moment decay, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of the first moment.
      nesterov: use Nesterov momentum in Adam.
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        scale_by_learning_rate(learning_rate),
    )


def optimistic_adam(
    learning_rate: float,
    optimism: Optional[float] = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
) -> base.GradientTransformationExtraArgs:
    r"""Optimistic Adam with a learning rate and an optimism rate (deprecated).

    With :math:`r_t` Adam's step, :math:`\alpha` the learning rate and
    :math:`o` the optimism,

    .. math::
        \theta_{t+1} = \theta_t - \alpha r_t - o (r_t - r_{t-1})

    Prefer :func:`optimistic_adam_v2` (which also takes schedules).
    Daskalakis et al., `Training GANs with Optimism
    <https://arxiv.org/abs/1711.00141>`_, 2017.

    Args:
      learning_rate: :math:`\alpha`, a scalar (not a schedule).
      optimism: :math:`o`; ``None`` uses the learning rate, as in the paper.
      b1: first-moment decay, in [0, 1).
      b2: second-moment decay, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of the first moment.
      nesterov: use Nesterov momentum in Adam.
    """
    warnings.warn(
        # Optax's wording first, so that filters matching Optax's message keep working.
        "`optimistic_adam` is deprecated, please use `optimistic_adam_v2` instead. "
        "The equivalent is optimistic_adam_v2(learning_rate, alpha=1.0, beta=optimism/learning_rate).",
        DeprecationWarning,
        stacklevel=base._warning_stacklevel(2),  # the caller's line, past optcore's recording wrapper
    )
    if callable(learning_rate) or callable(optimism):
        raise TypeError("optimistic_adam takes scalar learning_rate and optimism; use optimistic_adam_v2 for schedules.")
    learning_rate = validate.as_scalar("learning_rate", learning_rate)
    if optimism is None:
        optimism = learning_rate
    optimism = validate.as_scalar("optimism", optimism)
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
        scale(-1.0),
    )
