"""Adam-family optimizers: Adam, AdamW, NAdam(W), AMSGrad, AdaMax(W), RAdam,
AdaBelief, Yogi, Adan and NovoGrad.

Each alias chains a scaling transform, optional decoupled weight decay and
``scale_by_learning_rate``, so their states match Optax's layouts.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

from optcore import base, validate
from optcore.kit import static_args
from optcore.transforms import (
    add_decayed_weights,
    chain,
    scale_by_adam,
    scale_by_adamax,
    scale_by_adan,
    scale_by_amsgrad,
    scale_by_belief,
    scale_by_learning_rate,
    scale_by_novograd,
    scale_by_radam,
    scale_by_yogi,
)

MaskOrFn = Optional[Union[Any, Callable[[base.Params], Any]]]


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
      b1: first-moment decay, in [0, 1).
      b2: second-moment decay, in [0, 1).
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
      >>> print(f"{float(f(x)):.2f}")
      3.38
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


@static_args("mask")
def adamw(
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
) -> base.GradientTransformationExtraArgs:
    r"""AdamW: Adam with decoupled weight decay.

    .. math::
        \theta_{t+1} = \theta_t - \eta \left(\hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)
        + \lambda \theta_t\right)

    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay, in [0, 1).
      b2: second-moment decay, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of the first moment.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      mask: tree of booleans (or a function of the params) selecting what to decay.
      nesterov: NAdam's Nesterov momentum (NAdamW).
      nu_dtype: storage dtype of the second moment (optcore extension).
    """
    return chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def nadam(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    *,
    nesterov: bool = True,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""NAdam: Adam with Nesterov momentum (``adam(..., nesterov=True)``).

    .. math::
        \hat m_t = \frac{\beta_1 m_t}{1-\beta_1^{t+1}} + \frac{(1-\beta_1) g_t}{1-\beta_1^t}, \quad
        \theta_{t+1} = \theta_t - \eta\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)

    Dozat, `Incorporating Nesterov Momentum into Adam
    <https://openreview.net/pdf?id=OM0jvwB8jIp57ZJjtNEZ>`_, 2016.

    Args: as :func:`adam` (``nesterov`` defaults to True).
    """
    return adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype)


@static_args("mask")
def nadamw(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
    *,
    nesterov: bool = True,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""NAdamW: NAdam with decoupled weight decay (``adamw(..., nesterov=True)``).

    .. math::
        \theta_{t+1} = \theta_t - \eta \left(\hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon)
        + \lambda \theta_t\right)

    with NAdam's :math:`\hat m_t`. Dozat, 2016; Loshchilov & Hutter, 2019.

    Args: as :func:`adamw` (``nesterov`` defaults to True).
    """
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask, nesterov=nesterov, nu_dtype=nu_dtype
    )


def amsgrad(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""AMSGrad: Adam with the running maximum of the second moment.

    .. math::
        \theta_{t+1} = \theta_t - \eta\, \hat m_t / (\sqrt{\max_{s \le t} \hat v_s + \epsilon_{root}} + \epsilon)

    Reddi et al., `On the Convergence of Adam and Beyond
    <https://openreview.net/forum?id=ryQu7f-RZ>`_, 2018.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay, in [0, 1).
      b2: second-moment decay, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      mu_dtype: dtype of the first moment.
      bias_correction_mu: bias-correct the first moment.
      bias_correction_nu: bias-correct the second moment before the maximum.
      nu_dtype: storage dtype of ``nu``/``nu_max`` (optcore extension).
    """
    return chain(
        scale_by_amsgrad(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype,
            bias_correction_mu=bias_correction_mu, bias_correction_nu=bias_correction_nu, nu_dtype=nu_dtype,
        ),
        scale_by_learning_rate(learning_rate),
    )


def adamax(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> base.GradientTransformationExtraArgs:
    r"""AdaMax: Adam with the infinity norm.

    .. math::
        v_t = \max(\beta_2 v_{t-1}, |g_t| + \epsilon), \quad
        \theta_{t+1} = \theta_t - \eta\, \frac{m_t}{(1-\beta_1^t) v_t}

    Kingma & Ba, `Adam <https://arxiv.org/abs/1412.6980>`_ (section 7.1), 2014.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay, in [0, 1).
      b2: decay of the infinity norm, in [0, 1].
      eps: added to :math:`|g_t|`.
    """
    return chain(scale_by_adamax(b1=b1, b2=b2, eps=eps), scale_by_learning_rate(learning_rate))


@static_args("mask")
def adamaxw(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: base.ScalarOrSchedule = 1e-4,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
    r"""AdaMaxW: AdaMax with decoupled weight decay.

    .. math::
        \theta_{t+1} = \theta_t - \eta \left(\frac{m_t}{(1-\beta_1^t) v_t} + \lambda \theta_t\right)

    Kingma & Ba, 2014; Loshchilov & Hutter, `Decoupled Weight Decay
    Regularization <https://arxiv.org/abs/1711.05101>`_, 2019.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay, in [0, 1).
      b2: decay of the infinity norm, in [0, 1].
      eps: added to :math:`|g_t|`.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      mask: tree of booleans (or a function of the params) selecting what to decay.
    """
    return chain(
        scale_by_adamax(b1=b1, b2=b2, eps=eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def radam(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    threshold: float = 5.0,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""RAdam: Adam whose adaptive step is rectified while its variance is large.

    .. math::
        \theta_{t+1} = \theta_t - \eta \begin{cases}
          r_t\, \hat m_t / (\sqrt{\hat v_t + \epsilon_{root}} + \epsilon) & \rho_t \ge \tau \\
          \hat m_t & \text{otherwise} \end{cases}

    (see :func:`optcore.scale_by_radam` for :math:`\rho_t, r_t`). Liu et al.,
    `On the Variance of the Adaptive Learning Rate and Beyond
    <https://arxiv.org/abs/1908.03265>`_, 2020.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay, in [0, 1).
      b2: second-moment decay, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      threshold: :math:`\tau`.
      nesterov: use Nesterov momentum.
      nu_dtype: storage dtype of ``nu`` (optcore extension).
    """
    return chain(
        scale_by_radam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, threshold=threshold, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def adabelief(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-16,
    eps_root: float = 1e-16,
    *,
    nesterov: bool = False,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""AdaBelief: Adam whose second moment tracks the gradient's prediction error.

    .. math::
        s_t = \beta_2 s_{t-1} + (1-\beta_2)(g_t - m_t)^2 + \epsilon_{root}, \quad
        \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat s_t} + \epsilon}

    Zhuang et al., `AdaBelief Optimizer <https://arxiv.org/abs/2010.07468>`_, 2020.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay, in [0, 1).
      b2: belief-moment decay, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added to :math:`s_t`.
      nesterov: use Nesterov momentum.
      nu_dtype: storage dtype of ``nu`` (optcore extension).
    """
    return chain(
        scale_by_belief(b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


def yogi(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-3,
    *,
    nu_dtype: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Yogi: Adam with an additive, sign-controlled second moment.

    .. math::
        v_t = v_{t-1} - (1-\beta_2)\,\mathrm{sign}(v_{t-1} - g_t^2)\, g_t^2, \quad
        \theta_{t+1} = \theta_t - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    Zaheer et al., `Adaptive Methods for Nonconvex Optimization
    <https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization.pdf>`_, 2018.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: first-moment decay, in [0, 1).
      b2: second-moment rate, in [0, 1).
      eps: added to the denominator.
      nu_dtype: storage dtype of ``nu`` (optcore extension).
    """
    return chain(scale_by_yogi(b1=b1, b2=b2, eps=eps, nu_dtype=nu_dtype), scale_by_learning_rate(learning_rate))


@static_args("mask")
def adan(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.98,
    b2: float = 0.92,
    b3: float = 0.99,
    eps: float = 1e-8,
    eps_root: float = 1e-8,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: MaskOrFn = None,
) -> base.GradientTransformationExtraArgs:
    r"""Adan: adaptive Nesterov momentum, with decoupled weight decay.

    .. math::
        \theta_{t+1} = \theta_t - \eta \left(\frac{\hat m_t + (1-\beta_2)\hat v_t}
        {\sqrt{\hat n_t + \epsilon_{root}} + \epsilon} + \lambda \theta_t\right)

    (see :func:`optcore.scale_by_adan`). Xie et al., `Adan
    <https://arxiv.org/abs/2208.06677>`_, 2022.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: decay of the gradient average, in [0, 1).
      b2: decay of the gradient-difference average, in [0, 1).
      b3: decay of the squared average, in [0, 1).
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      mask: tree of booleans (or a function of the params) selecting what to decay.
    """
    return chain(
        scale_by_adan(b1=b1, b2=b2, b3=b3, eps=eps, eps_root=eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def novograd(
    learning_rate: base.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.25,
    eps: float = 1e-6,
    eps_root: float = 0.0,
    weight_decay: float = 0.0,
) -> base.GradientTransformationExtraArgs:
    r"""NovoGrad: layer-wise normalized gradients with momentum.

    .. math::
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\|g_t\|^2, \quad
        m_t = \beta_1 m_{t-1} + \frac{g_t}{\sqrt{v_t + \epsilon_{root}} + \epsilon} + \lambda\theta_t, \quad
        \theta_{t+1} = \theta_t - \eta m_t

    per leaf (see :func:`optcore.scale_by_novograd`). Ginsburg et al.,
    `Stochastic Gradient Methods with Layer-wise Adaptive Moments
    <https://arxiv.org/abs/1905.11286>`_, 2019.

    Args:
      learning_rate: :math:`\eta`, a scalar or a schedule.
      b1: momentum, in [0, 1].
      b2: decay of the layer-wise second moment, in [0, 1].
      eps: added to the denominator outside the root.
      eps_root: added inside the root.
      weight_decay: :math:`\lambda`. A number, which its own rule reads: to schedule it, inject it
        (:func:`optcore.inject_hyperparams`).
    """
    validate.check_not_schedule("weight_decay", weight_decay, who="novograd")
    return chain(
        scale_by_novograd(b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay),
        scale_by_learning_rate(learning_rate),
    )
