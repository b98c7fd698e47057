"""Scaling by constants, schedules, learning rates, signs and step-size rules.

``scale``, ``scale_by_schedule``, ``scale_by_learning_rate``, ``scale_by_sign``,
Lion, Rprop, optimistic gradients, the Polyak step size, gradient
centralization and update-norm normalization.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from optcore import base, numerics, tree_utils, validate
from optcore.kit import cast_like, cast_promoted, dtype_or_none, f32, hyperparameter_dtype

ScaleState = base.EmptyState


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: the step count (int32)."""

    count: jax.Array


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`."""

    count: jax.Array  # shape=(), dtype=int32
    mu: base.Updates


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`."""

    step_sizes: base.Updates  # per-coordinate step sizes
    prev_updates: base.Updates  # the last update, ``step_size * sign(g)`` (0 after a sign flip)


class ScaleByOptimisticGradientState(NamedTuple):
    """State of :func:`scale_by_optimistic_gradient`."""

    is_initial_step: jax.Array  # shape=(), dtype=bool
    previous_gradient: base.Updates


def scale(step_size: float) -> base.GradientTransformation:
    r"""Scales updates by a fixed factor: :math:`u \leftarrow \alpha u`.

    Args:
      step_size: the factor :math:`\alpha` (not negated: use ``-lr`` for descent).
    """

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        step = f32(step_size, hyper_dtype)
        return jax.tree.map(lambda g: (step * g).astype(g.dtype), updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def scale_by_schedule(step_size_fn: base.Schedule) -> base.GradientTransformation:
    r"""Scales updates by a schedule of the step count: :math:`u \leftarrow s(t) u`.

    Args:
      step_size_fn: a function from the (int32) step count to a scalar.
    """
    return _scale_by_checked_schedule(step_size_fn, "step_size_fn")


def scalar_schedule_value(schedule: base.Schedule, count: jax.Array, argument: str) -> jax.Array:
    """``schedule(count)``, which must be a scalar: the value of ``argument`` at this step."""
    value = schedule(count)
    # A vector would broadcast into the updates and change their shapes (or
    # silently scale rows differently): refuse it at trace time.
    if jnp.shape(value) != ():
        raise ValueError(
            f"{argument}: the schedule must return a scalar, but it returned shape "
            f"{tuple(jnp.shape(value))} for the step count."
        )
    return value


def _scale_by_checked_schedule(step_size_fn: base.Schedule, argument: str) -> base.GradientTransformation:
    """:func:`scale_by_schedule`, whose errors name the user's ``argument``."""
    if not callable(step_size_fn):
        raise TypeError(f"{argument} must be callable (a schedule), got {type(step_size_fn).__name__}.")

    def init_fn(params):
        del params
        return ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        step_size = scalar_schedule_value(step_size_fn, state.count, argument)
        updates = jax.tree.map(lambda g: jnp.asarray(step_size, dtype=g.dtype) * g, updates)
        return updates, ScaleByScheduleState(count=numerics.safe_increment(state.count))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(
    learning_rate: base.ScalarOrSchedule = None,
    *,
    flip_sign: bool = True,
) -> base.GradientTransformation:
    r"""Scales by a learning rate, negated for descent: :math:`u \leftarrow -\eta u`.

    Any sign is accepted, as in Optax: a negative learning rate ascends. A
    size-1 array acts as the scalar it holds (the updates keep the params'
    shapes).

    Args:
      learning_rate: a scalar (or size-1 array) or a schedule of the step count.
      flip_sign: multiply by ``-learning_rate`` (the default) rather than ``learning_rate``.
    """
    if learning_rate is None:
        raise ValueError("scale_by_learning_rate needs a learning_rate (a number or a schedule).")
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        tx = _scale_by_checked_schedule(lambda count: sign * learning_rate(count), "learning_rate")
    else:
        learning_rate = validate.as_scalar("learning_rate", learning_rate)
        validate.check_not_nan("learning_rate", learning_rate)
        tx = scale(sign * learning_rate)

    def update_fn(updates, state, params=None):
        # The step would be truncated (or promote the params) for integer leaves.
        validate.check_floating(updates)
        return tx.update(updates, state, params)

    return base.GradientTransformation(tx.init, update_fn)


def scale_by_sign() -> base.GradientTransformation:
    r"""Replaces each update by its sign: :math:`u \leftarrow \mathrm{sign}(u)`."""

    def update_fn(updates, state, params=None):
        del params
        validate.check_floating(updates)
        return jax.tree.map(jnp.sign, updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


_LION_MODES = ("hard", "smooth", "refined")


# Leaves smaller than this (in entries) keep XLA's copy of the momentum.
_MIN_ORDERED_SIZE = 1 << 16


def _order_sign_before_momentum(signs: Any, momentum: Any) -> tuple[Any, Any]:
    """Lion's signs (as bfloat16) and its new momentum, made to depend on them; values unchanged.

    Both the sign of :math:`c_t` and :math:`m_t` read :math:`m_{t-1}`. When the
    state is donated, :math:`m_t` is written over :math:`m_{t-1}`'s buffer, and
    XLA:CPU, which fuses the two into separate loops, cannot tell that the
    sign's loop (fused with the parameter update downstream) reads the old
    momentum first, so it copies the whole momentum before every step (~3x
    the step's time at 16M floats). Here the signs are narrowed to bfloat16
    (exact: they are -1, 0, 1 or NaN) and the new momentum selects on them in
    a branch that never fires (no sign exceeds 1): XLA then writes the signs
    once, reads them in both loops, and overwrites the momentum in place after
    its last read. Only for real floating leaves of at least
    ``_MIN_ORDERED_SIZE`` entries (a complex sign is not exact in bfloat16; for
    a small leaf the copy is a cheap kernel, and the extra loop would only add
    compile time); other leaves are returned as they are.
    """

    def ordered(s):
        return jnp.issubdtype(s.dtype, jnp.floating) and s.size >= _MIN_ORDERED_SIZE

    narrow_signs = jax.tree.map(lambda s: s.astype(jnp.bfloat16) if ordered(s) else s, signs)

    def after_signs(s, narrow, m):
        if not ordered(s):
            return m
        return jax.lax.select(narrow > 1, narrow.astype(m.dtype), m)

    return narrow_signs, jax.tree.map(after_signs, signs, narrow_signs, momentum)


def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Optional[Any] = None,
    *,
    mode: str = "hard",
    smooth_beta: float = 1.0,
) -> base.GradientTransformation:
    r"""Rescales updates by Lion: the sign of an interpolated momentum.

    .. math::
        c_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad u_t = \sigma(c_t), \quad
        m_t = \beta_2 m_{t-1} + (1-\beta_2) g_t

    where :math:`\sigma` is ``sign`` (``mode="hard"``),
    :math:`\tanh(\beta_s c)` (``"smooth"``) or :math:`\mathrm{clip}(c, -1, 1)`
    (``"refined"``: linear near 0, the sign for large values).

    Chen et al., `Symbolic Discovery of Optimization Algorithms
    <https://arxiv.org/abs/2302.06675>`_, 2023.

    Args:
      b1: interpolation between momentum and gradient, in [0, 1].
      b2: decay of the momentum, in [0, 1].
      mu_dtype: dtype of the momentum.
      mode: ``"hard"``, ``"smooth"`` or ``"refined"``.
      smooth_beta: :math:`\beta_s`, the sharpness of ``"smooth"``.
    """
    validate.check_decay("b1", b1)
    validate.check_decay("b2", b2)
    validate.check_one_of("mode", mode, _LION_MODES)
    mu_dtype = dtype_or_none(mu_dtype)

    def squash(c):
        if mode == "hard":
            return jnp.sign(c)
        if mode == "smooth":
            return jnp.tanh(f32(smooth_beta, c.dtype) * c)
        return jnp.clip(c, -1, 1)

    def init_fn(params):
        return ScaleByLionState(count=jnp.zeros([], jnp.int32), mu=tree_utils.state_zeros_like(params, dtype=mu_dtype))

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        validate.check_tree_match(updates, state.mu)
        b1_, b2_ = (f32(x, hyper_dtype) for x in (b1, b2))
        new_updates = jax.tree.map(
            lambda g, m: squash((1 - b1_) * g + b1_ * m), updates, state.mu
        )
        mu = tree_utils.tree_update_moment(updates, state.mu, b2_, 1)
        if mode == "hard":
            new_updates, mu = _order_sign_before_momentum(new_updates, mu)
        # Gradient and stored momentum promoted, as Optax: float32 with mu_dtype=float32.
        new_updates = cast_promoted(new_updates, updates, state.mu)
        return new_updates, ScaleByLionState(count=numerics.safe_increment(state.count), mu=cast_like(mu, state.mu))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_rprop(
    learning_rate: float,
    eta_minus: float = 0.5,
    eta_plus: float = 1.2,
    min_step_size: float = 1e-6,
    max_step_size: float = 50.0,
) -> base.GradientTransformation:
    r"""Rescales updates by Rprop: per-coordinate step sizes driven by sign agreement.

    With :math:`s_t = g_t \cdot u_{t-1}`,

    .. math::
        \eta_t = \begin{cases}
          \min(\eta_{t-1} \eta_+, \eta_{max}) & s_t > 0 \\
          \max(\eta_{t-1} \eta_-, \eta_{min}) & s_t < 0 \\
          \eta_{t-1} & s_t = 0
        \end{cases}, \quad
        u_t = \begin{cases} 0 & s_t < 0 \\ \eta_t\, \mathrm{sign}(g_t) & \text{otherwise} \end{cases}

    (iRprop-: no step right after a sign flip). The update is :math:`u_t`, in
    the gradient's direction (negate it for descent).

    .. note:: Optax 0.2.8 emits :math:`u_{t-1}` instead of :math:`u_t` (a stale
       update, zero at the first step; Optax PR 1725). optcore emits
       :math:`u_t`, as the paper and ``torch.optim.Rprop`` do; the states agree.

    Riedmiller & Braun, `A direct adaptive method for faster backpropagation
    learning: the RPROP algorithm <https://doi.org/10.1109/ICNN.1993.298623>`_, 1993.

    Args:
      learning_rate: the initial step size :math:`\eta_0`.
      eta_minus: factor :math:`\eta_-` applied after a sign flip, in [0, 1].
      eta_plus: factor :math:`\eta_+` applied while the sign is kept, at least 1.
      min_step_size: :math:`\eta_{min}`.
      max_step_size: :math:`\eta_{max}`.
    """
    learning_rate = validate.as_scalar("learning_rate", learning_rate)
    validate.check_not_nan("learning_rate", learning_rate)
    validate.check_decay("eta_minus", eta_minus)
    validate.check_range("eta_plus", eta_plus, low=1.0)
    validate.check_non_negative("min_step_size", min_step_size)
    validate.check_non_negative("max_step_size", max_step_size)

    def init_fn(params):
        return ScaleByRpropState(
            step_sizes=tree_utils.state_full_like(params, learning_rate),
            prev_updates=tree_utils.state_zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        validate.check_tree_match(updates, state.prev_updates)
        eta_minus_, eta_plus_ = (f32(x, hyper_dtype) for x in (eta_minus, eta_plus))
        min_step, max_step = (f32(x, hyper_dtype) for x in (min_step_size, max_step_size))
        agreement = jax.tree.map(lambda g, prev: jnp.sign(g * prev), updates, state.prev_updates)
        step_sizes = jax.tree.map(
            lambda s, step: jnp.where(
                s > 0,
                jnp.minimum(step * eta_plus_, max_step),
                jnp.where(s < 0, jnp.maximum(step * eta_minus_, min_step), step),
            ).astype(step.dtype),
            agreement,
            state.step_sizes,
        )
        new_updates = jax.tree.map(
            lambda s, g, step: jnp.where(s < 0, jnp.zeros_like(g), step * jnp.sign(g)).astype(g.dtype),
            agreement,
            updates,
            step_sizes,
        )
        return new_updates, ScaleByRpropState(step_sizes=step_sizes, prev_updates=cast_like(new_updates, state.prev_updates))

    return base.GradientTransformation(init_fn, update_fn)


def scale_by_optimistic_gradient(alpha: float = 1.0, beta: float = 1.0) -> base.GradientTransformation:
    r"""Optimistic gradient: extrapolates with the previous gradient.

    .. math::
        u_t = (\alpha + \beta) g_t - \beta g_{t-1}, \qquad u_1 = \alpha g_1

    (there is no previous gradient at the first step).

    Daskalakis et al., `Training GANs with Optimism
    <https://arxiv.org/abs/1711.00141>`_, 2017; Mokhtari et al., `A Unified
    Analysis of Extra-gradient and Optimistic Gradient Methods
    <https://arxiv.org/abs/1901.08511>`_, 2019.

    Args:
      alpha: :math:`\alpha`, the weight of the current gradient.
      beta: :math:`\beta`, the weight of the correction :math:`g_t - g_{t-1}`.
    """
    for name, value in (("alpha", alpha), ("beta", beta)):
        if callable(value):
            raise TypeError(f"{name} must be a number or an array, not a schedule.")
        # Any sign, as in Optax: optimistic_adam passes its (possibly negative) learning rate here.
        validate.check_not_nan(name, value)

    def init_fn(params):
        return ScaleByOptimisticGradientState(
            is_initial_step=jnp.array(True), previous_gradient=tree_utils.state_zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        validate.check_tree_match(updates, state.previous_gradient)
        alpha_, beta_ = (f32(x, hyper_dtype) for x in (alpha, beta))
        new_updates = jax.tree.map(
            lambda g, prev: jnp.where(
                state.is_initial_step, alpha_ * g, (alpha_ + beta_) * g - beta_ * prev
            ).astype(g.dtype),
            updates,
            state.previous_gradient,
        )
        return new_updates, ScaleByOptimisticGradientState(
            is_initial_step=jnp.array(False), previous_gradient=cast_like(updates, state.previous_gradient)
        )

    return base.GradientTransformation(init_fn, update_fn)


_POLYAK_VARIANTS = ("sps", "sps+")


def scale_by_polyak(
    f_min: float = 0.0,
    max_learning_rate: float = 1.0,
    eps: float = 0.0,
    variant: str = "sps",
) -> base.GradientTransformationExtraArgs:
    r"""Scales updates by the Polyak step size; ``update`` needs ``value=f(x)``.

    .. math::
        u = \min\left\{\frac{f(x) - f^\star}{\|g\|^2 + \epsilon}, \gamma_{max}\right\} g

    With ``variant="sps+"`` the gap is replaced by :math:`\max(f(x) - f^\star, 0)`.
    A zero gradient (with ``eps=0``) gives a zero update.

    Loizou et al., `Stochastic Polyak Step-size for SGD
    <https://arxiv.org/abs/2002.10542>`_, 2021; Garrigos et al., `Function
    value learning: Adaptive learning rates based on the Polyak stepsize and
    function splitting in ERM <https://arxiv.org/abs/2307.14528>`_, 2023.

    Args:
      f_min: :math:`f^\star`, a lower bound on the objective.
      max_learning_rate: :math:`\gamma_{max}`.
      eps: :math:`\epsilon`, added to the squared norm.
      variant: ``"sps"`` or ``"sps+"``.
    """
    validate.check_not_nan("max_learning_rate", max_learning_rate)
    validate.check_non_negative("eps", eps)
    validate.check_one_of("variant", variant, _POLYAK_VARIANTS)

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        hyper_dtype = hyperparameter_dtype(updates)
        del params, extra_args
        validate.require_update_args("scale_by_polyak", value=value)
        validate.check_floating(updates)
        squared_norm = tree_utils.tree_norm(updates, squared=True)
        gap = jnp.asarray(value, hyper_dtype) - f32(f_min, hyper_dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0.0)
        denominator = squared_norm + f32(eps, hyper_dtype)
        safe_denominator = jnp.where(denominator > 0, denominator, 1.0)
        step = jnp.where(denominator > 0, jnp.minimum(gap / safe_denominator, f32(max_learning_rate, hyper_dtype)), 0.0)
        return jax.tree.map(lambda g: (step * g).astype(g.dtype), updates), state

    return base.GradientTransformationExtraArgs(base.init_empty_state, update_fn)


def centralize() -> base.GradientTransformation:
    r"""Gradient centralization: removes the mean over all axes but the first.

    .. math::
        u \leftarrow u - \mathrm{mean}_{axes \ge 1}(u)

    for leaves of rank at least 2; vectors and scalars are left unchanged.

    Yong et al., `Gradient Centralization: A New Optimization Technique for
    Deep Neural Networks <https://arxiv.org/abs/2004.01461>`_, 2020.
    """

    def centered(g):
        if g.ndim < 2:
            return g
        return g - jnp.mean(g, axis=tuple(range(1, g.ndim)), keepdims=True)

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(centered, updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def normalize_by_update_norm(scale_factor: float = 1.0, eps: float = 1e-6) -> base.GradientTransformation:
    r"""Scales all updates by the inverse of their global l2 norm.

    .. math::
        u \leftarrow s\, \frac{u}{\|u\|_2 + \epsilon}

    Args:
      scale_factor: :math:`s`, the norm given to the updates.
      eps: :math:`\epsilon`, keeps a zero update finite.
    """
    validate.check_non_negative("eps", eps)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        del params
        norm = (tree_utils.tree_norm(updates) + f32(eps, hyper_dtype)) / f32(scale_factor, hyper_dtype)
        return jax.tree.map(lambda g: (g / norm).astype(g.dtype), updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)
