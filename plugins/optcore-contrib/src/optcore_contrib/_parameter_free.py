"""Learning-rate-free methods: COCOB, DoG, DoWG, D-Adaptation AdamW and Prodigy."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, numerics, tree_utils, validate



class COCOBState(NamedTuple):
    """State of :func:`scale_by_cocob`, one entry per parameter coordinate."""

    init_particles: base.Updates
    cumulative_gradients: base.Updates
    scale: base.Updates
    subgradients: base.Updates
    reward: base.Updates


class DoGState(NamedTuple):
    """State of :func:`dog`."""

    is_init_step: jax.Array
    init_params: base.Params
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


class DoWGState(NamedTuple):
    """State of :func:`dowg`."""

    init_params: base.Params
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


class DAdaptAdamWState(NamedTuple):
    """State of :func:`dadapt_adamw`."""

    exp_avg: base.Updates
    exp_avg_sq: base.Updates
    grad_sum: base.Updates
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


class ProdigyState(NamedTuple):
    """State of :func:`prodigy`."""

    exp_avg: base.Updates
    exp_avg_sq: base.Updates
    grad_sum: base.Updates
    params0: base.Params
    estim_lr: jax.Array
    numerator_weighted: jax.Array
    count: jax.Array


def _decay_or_identity(weight_decay, mask):
    if weight_decay is None:
        return optcore.identity()
    return optcore.add_decayed_weights(weight_decay, mask)


def scale_by_cocob(alpha: float = 100.0, eps: float = 1e-8) -> base.GradientTransformation:
    r"""Rescales updates by COCOB-Backprop (continuous coin betting), per coordinate.

    With :math:`L_t = \max(L_{t-1}, |g_t|)`, :math:`G_t = G_{t-1} + |g_t|`,
    reward :math:`R_t = \max(R_{t-1} - g_t(x_t - x_1), 0)` and
    :math:`\theta_t = \theta_{t-1} - g_t`:

    .. math::
        x_{t+1} = x_1 + \frac{\theta_t}{L_t \max(G_t + L_t, \alpha L_t)} (L_t + R_t),
        \quad u_t = x_{t+1} - x_t.

    Orabona & Tommasi, `Training Deep Networks without Learning Rates Through
    Coin Betting <https://arxiv.org/abs/1705.07795>`_, 2017.

    Args:
      alpha: :math:`\alpha`, bounds the fraction of the wealth bet early on.
      eps: initial value of :math:`L` (avoids dividing by zero).
    """
    validate.check_range("alpha", alpha, low=0.0, low_inclusive=False)
    validate.check_non_negative("eps", eps)

    def init_fn(params):
        return COCOBState(
            init_particles=kit.own_copy(params),
            cumulative_gradients=tree_utils.state_zeros_like(params),
            scale=tree_utils.state_full_like(params, eps),
            subgradients=tree_utils.state_zeros_like(params),
            reward=tree_utils.state_zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        kit.require_params(params, "scale_by_cocob", updates)
        scale = jax.tree.map(lambda l, g: jnp.maximum(l, jnp.abs(g)), state.scale, updates)
        subgradients = jax.tree.map(lambda s, g: s + jnp.abs(g), state.subgradients, updates)
        reward = jax.tree.map(
            lambda r, g, p, p1: jnp.maximum(r - g * (p - p1), 0.0),
            state.reward,
            updates,
            params,
            state.init_particles,
        )
        cumulative = jax.tree.map(lambda c, g: c - g, state.cumulative_gradients, updates)
        new_params = jax.tree.map(
            # In the arrays' promoted dtype, as with a Python-float alpha.
            lambda p1, c, l, s, r: (p1 + c / (l * jnp.maximum(s + l, alpha * l)) * (l + r)).astype(
                jnp.result_type(p1, c, l, s, r)
            ),
            state.init_particles,
            cumulative,
            scale,
            subgradients,
            reward,
        )
        new_updates = jax.tree.map(lambda new, p: new - p, new_params, params)
        return new_updates, COCOBState(
            init_particles=state.init_particles,
            cumulative_gradients=cumulative,
            scale=scale,
            subgradients=subgradients,
            reward=reward,
        )

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("mask")
def cocob(
    learning_rate: base.ScalarOrSchedule = 1.0,
    alpha: float = 100.0,
    eps: float = 1e-8,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""The COCOB optimizer: weight decay, then scaled gradients fed to :func:`scale_by_cocob`.

    .. math::
        \tilde g_t = \eta_t (g_t + \lambda x_t), \quad u_t = \mathrm{COCOB}(\tilde g_t)

    Orabona & Tommasi, `Training Deep Networks without Learning Rates Through
    Coin Betting <https://arxiv.org/abs/1705.07795>`_, 2017.

    Args:
      learning_rate: :math:`\eta`, multiplies the gradients (1.0: parameter-free).
      alpha: fraction-to-bet bound of COCOB.
      eps: initial scale (avoids dividing by zero).
      weight_decay: :math:`\lambda` (coupled: added to the gradient). A number or a schedule of the step
        count.
      mask: tree (or function of params) selecting the params to decay.
    """
    return optcore.chain(
        optcore.add_decayed_weights(weight_decay, mask),
        optcore.scale_by_learning_rate(learning_rate, flip_sign=False),
        scale_by_cocob(alpha, eps),
    )


def _scale_by_dog(init_step, eps) -> base.GradientTransformation:
    tag, value = init_step
    if tag not in ("distance", "learning_rate", "heuristic"):
        raise ValueError(
            f"init_step tag must be 'distance', 'learning_rate' or 'heuristic', got {tag!r}."
        )
    validate.check_range("init_step value", value, low=0.0, low_inclusive=False)
    validate.check_non_negative("eps", eps)

    def init_fn(params):
        stat_dtype = kit.hyperparameter_dtype(params)  # float64 for float64 params under x64
        if tag == "heuristic":
            if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(params)):
                raise TypeError(
                    "dog's init_step=('heuristic', ...) starts from the params' norm, so its init needs arrays, "
                    "not jax.ShapeDtypeStruct: take the state's layout with jax.eval_shape(opt.init, params), "
                    "or give init_step=('distance', r)."
                )
            max_dist = value * (1 + tree_utils.tree_norm(params))
        elif tag == "distance":
            max_dist = jnp.asarray(value, stat_dtype)
        else:  # the first step uses the given learning rate instead
            max_dist = jnp.asarray(0.0, stat_dtype)
        return DoGState(
            is_init_step=jnp.asarray(True),
            init_params=kit.own_copy(params),
            max_dist=jnp.asarray(max_dist, stat_dtype),
            sum_sq_norm_grads=jnp.asarray(0.0, stat_dtype),
        )

    def update_fn(updates, state, params=None):
        kit.require_params(params, "dog", updates)
        distance = tree_utils.tree_norm(jax.tree.map(lambda p, p0: p - p0, params, state.init_params))
        max_dist = jnp.maximum(state.max_dist, distance)
        sum_sq = state.sum_sq_norm_grads + tree_utils.tree_norm(updates, squared=True)
        step = max_dist / jnp.sqrt(sum_sq + eps)
        if tag == "learning_rate":
            step = jnp.where(state.is_init_step, value, step)
        new_updates = jax.tree.map(lambda g: (step * g).astype(g.dtype), updates)
        return new_updates, DoGState(
            is_init_step=jnp.asarray(False),
            init_params=state.init_params,
            max_dist=max_dist.astype(state.max_dist.dtype),
            sum_sq_norm_grads=sum_sq.astype(state.sum_sq_norm_grads.dtype),
        )

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("mask")
def dog(
    learning_rate: base.ScalarOrSchedule = 1.0,
    init_step: tuple = ("heuristic", 1e-6),
    eps: float = 1e-8,
    weight_decay: Optional[base.ScalarOrSchedule] = None,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Distance over Gradients (DoG): SGD with a parameter-free step size.

    .. math::
        \bar r_t = \max(r_\epsilon, \max_{k \le t} \|x_k - x_0\|), \quad
        G_t = \sum_{k \le t} \|g_k\|^2, \quad
        x_{t+1} = x_t - \eta_t \frac{\bar r_t}{\sqrt{G_t + \epsilon}} g_t.

    Ivgi et al., `DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size
    Schedule <https://arxiv.org/abs/2302.12022>`_, 2023.

    Args:
      learning_rate: :math:`\eta_t`, an optional multiplier or schedule.
      init_step: ``(tag, value)``: ``("distance", r)`` sets :math:`r_\epsilon = r`;
        ``("learning_rate", lr)`` makes the first step size ``lr``;
        ``("heuristic", a)`` sets :math:`r_\epsilon = a(1 + \|x_0\|)`.
      eps: added to :math:`G_t` inside the root.
      weight_decay: coupled weight decay added to the gradient (None: none). A number or a schedule of the
        step count.
      mask: tree (or function of params) selecting the params to decay.

    The ``init`` must receive the real initial parameters.
    """
    return optcore.chain(
        _decay_or_identity(weight_decay, mask),
        _scale_by_dog(init_step, eps),
        optcore.scale_by_learning_rate(learning_rate),
    )


def _scale_by_dowg(init_estim_sq_dist, eps) -> base.GradientTransformation:
    validate.check_non_negative("eps", eps)
    if init_estim_sq_dist is not None:
        validate.check_non_negative("init_estim_sq_dist", init_estim_sq_dist)
    initial = eps if init_estim_sq_dist is None else init_estim_sq_dist

    def init_fn(params):
        stat_dtype = kit.hyperparameter_dtype(params)  # float64 for float64 params under x64
        return DoWGState(
            init_params=kit.own_copy(params),
            weighted_sq_norm_grads=jnp.asarray(0.0, stat_dtype),
            estim_sq_dist=jnp.asarray(initial, stat_dtype),
        )

    def update_fn(updates, state, params=None):
        kit.require_params(params, "dowg", updates)
        sq_dist = tree_utils.tree_norm(
            jax.tree.map(lambda p, p0: p - p0, params, state.init_params), squared=True
        )
        estim_sq_dist = jnp.maximum(state.estim_sq_dist, sq_dist)
        weighted = state.weighted_sq_norm_grads + estim_sq_dist * tree_utils.tree_norm(updates, squared=True)
        step = estim_sq_dist / (jnp.sqrt(weighted) + eps)
        new_updates = jax.tree.map(lambda g: (step * g).astype(g.dtype), updates)
        return new_updates, DoWGState(
            init_params=state.init_params,
            weighted_sq_norm_grads=weighted.astype(state.weighted_sq_norm_grads.dtype),
            estim_sq_dist=estim_sq_dist.astype(state.estim_sq_dist.dtype),
        )

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("mask")
def dowg(
    learning_rate: base.ScalarOrSchedule = 1.0,
    init_estim_sq_dist: Optional[float] = None,
    eps: float = 1e-4,
    weight_decay: Optional[base.ScalarOrSchedule] = None,
    mask: Optional[Any] = None,
) -> base.GradientTransformationExtraArgs:
    r"""Distance over Weighted Gradients (DoWG): a parameter-free step size.

    .. math::
        \bar r_t^2 = \max(\bar r_{t-1}^2, \|x_t - x_0\|^2), \quad
        v_t = v_{t-1} + \bar r_t^2 \|g_t\|^2, \quad
        x_{t+1} = x_t - \eta_t \frac{\bar r_t^2}{\sqrt{v_t} + \epsilon} g_t.

    Khaled et al., `DoWG Unleashed: An Efficient Universal Parameter-Free
    Gradient Descent Method <https://arxiv.org/abs/2305.16284>`_, 2023.

    Args:
      learning_rate: :math:`\eta_t`, an optional multiplier or schedule.
      init_estim_sq_dist: initial :math:`\bar r_0^2` (default ``eps``).
      eps: added to the denominator; the default initial squared distance.
      weight_decay: coupled weight decay added to the gradient (None: none). A number or a schedule of the
        step count.
      mask: tree (or function of params) selecting the params to decay.
    """
    return optcore.chain(
        _decay_or_identity(weight_decay, mask),
        _scale_by_dowg(init_estim_sq_dist, eps),
        optcore.scale_by_learning_rate(learning_rate),
    )


def _check_adaptive(who, betas, eps, estim_lr0, weight_decay):
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}.")
    # Both moments are bias-corrected (1 - beta**t divides): [0, 1).
    kit.check_beta("betas[0]", betas[0])
    kit.check_beta("betas[1]", betas[1])
    validate.check_non_negative("eps", eps)
    validate.check_range("estim_lr0", estim_lr0, low=0.0, low_inclusive=False)
    kit.check_not_schedule("weight_decay", weight_decay, who=who)
    validate.check_not_nan("weight_decay", weight_decay)


def dadapt_adamw(
    learning_rate: base.ScalarOrSchedule = 1.0,
    betas: tuple = (0.9, 0.999),
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    weight_decay: float = 0.0,
) -> base.GradientTransformationExtraArgs:
    r"""AdamW whose base learning rate :math:`d` is found by D-Adaptation.

    With :math:`\gamma_t = d_t \eta_t \sqrt{1-\beta_2^{t}}/(1-\beta_1^{t})` and
    :math:`\rho = \sqrt{\beta_2}`:

    .. math::
        N_t = \rho N_{t-1} + (1-\rho)\gamma_t \langle g_t, s_{t-1}/(\sqrt{v_{t-1}}+\epsilon) \rangle, \\
        m_t = \beta_1 m_{t-1} + (1-\beta_1)\gamma_t g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
        s_t = \rho s_{t-1} + (1-\rho)\gamma_t g_t, \\
        d_{t+1} = \max\!\left(d_t, \frac{N_t}{(1-\rho)\|s_t\|_1}\right), \quad
        u_t = -\frac{m_t}{\sqrt{v_t}+\epsilon} - \lambda \gamma_t x_t.

    Defazio & Mishchenko, `Learning-Rate-Free Learning by D-Adaptation
    <https://arxiv.org/abs/2301.07733>`_, 2023.

    Args:
      learning_rate: :math:`\eta_t`, a multiplier or schedule (1.0 as the peak).
      betas: :math:`(\beta_1, \beta_2)` of the underlying AdamW.
      eps: :math:`\epsilon` of the underlying AdamW.
      estim_lr0: :math:`d_0`, an under-estimate of the learning rate.
      weight_decay: :math:`\lambda`, AdamW-style decoupled weight decay. A number, which its own rule reads:
        to schedule it, inject it (:func:`optcore.inject_hyperparams`).
    """
    _check_adaptive("dadapt_adamw", betas, eps, estim_lr0, weight_decay)
    beta1, beta2 = betas
    sqrt_beta2 = beta2**0.5

    def init_fn(params):
        stat_dtype = kit.hyperparameter_dtype(params)  # float64 for float64 params under x64
        zeros = lambda: tree_utils.state_zeros_like(params)  # noqa: E731
        return DAdaptAdamWState(
            exp_avg=zeros(),
            exp_avg_sq=zeros(),
            grad_sum=zeros(),
            estim_lr=jnp.asarray(estim_lr0, stat_dtype),
            numerator_weighted=jnp.asarray(0.0, stat_dtype),
            count=kit.zero_count(),
        )

    def update_fn(updates, state, params=None):
        kit.require_params(params, "dadapt_adamw", updates)
        # float32 arithmetic: eps = 1e-8 and d_0 = 1e-6 vanish in float16/bfloat16.
        original_state, original_params = state, params
        updates, state, params = kit.widen((updates, state, params))
        lr = kit.learning_rate_at(learning_rate, state.count)
        step = state.count + 1
        bias_correction = ((1 - beta2**step) ** 0.5) / (1 - beta1**step)
        dlr = state.estim_lr * lr * bias_correction
        weighted_sum = jax.tree.map(
            lambda s, v: s / (jnp.sqrt(v) + eps), state.grad_sum, state.exp_avg_sq
        )
        numerator_acum = tree_utils.tree_vdot(updates, weighted_sum)
        exp_avg = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * dlr * g, state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state.exp_avg_sq, updates)
        grad_sum = jax.tree.map(
            lambda s, g: sqrt_beta2 * s + (1 - sqrt_beta2) * dlr * g, state.grad_sum, updates
        )
        grad_sum_l1 = tree_utils.tree_sum(jax.tree.map(jnp.abs, grad_sum))
        numerator_weighted = sqrt_beta2 * state.numerator_weighted + (1 - sqrt_beta2) * dlr * numerator_acum
        # All gradients so far underflowed to 0 (e.g. 1e-30): no evidence, d stays.
        d_estimate = kit.safe_ratio(numerator_weighted, (1 - sqrt_beta2) * grad_sum_l1, state.estim_lr)
        estim_lr = jnp.maximum(state.estim_lr, d_estimate)
        new_updates = jax.tree.map(
            lambda m, v, p: -weight_decay * dlr * p - m / (jnp.sqrt(v) + eps), exp_avg, exp_avg_sq, params
        )
        new_state = DAdaptAdamWState(
            exp_avg=exp_avg,
            exp_avg_sq=exp_avg_sq,
            grad_sum=grad_sum,
            estim_lr=estim_lr,
            numerator_weighted=numerator_weighted,
            count=numerics.safe_increment(state.count),
        )
        return kit.cast_like(new_updates, original_params), kit.cast_like(new_state, original_state)

    return base.with_extra_args_support(base.GradientTransformation(init_fn, update_fn))


def prodigy(
    learning_rate: base.ScalarOrSchedule = 1.0,
    betas: tuple = (0.9, 0.999),
    beta3: Optional[float] = None,
    eps: float = 1e-8,
    estim_lr0: float = 1e-6,
    estim_lr_coef: float = 1.0,
    weight_decay: float = 0.0,
    safeguard_warmup: bool = False,
) -> base.GradientTransformationExtraArgs:
    r"""Prodigy: D-Adaptation AdamW with a faster, recency-weighted estimate of :math:`d`.

    With :math:`\gamma_t = d_t \eta_t \sqrt{1-\beta_2^{t}}/(1-\beta_1^{t})`,
    :math:`\beta_3 = \sqrt{\beta_2}` by default:

    .. math::
        N_t = \beta_3 N_{t-1} + \frac{d_t}{d_0}\gamma_t \langle g_t, x_0 - x_t\rangle, \quad
        s_t = \beta_3 s_{t-1} + \frac{d_t}{d_0}\gamma_t g_t, \\
        m_t = \beta_1 m_{t-1} + (1-\beta_1) d_t g_t, \quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) d_t^2 g_t^2, \\
        d_{t+1} = \max\!\left(d_t, c\,\frac{N_t}{\|s_t\|_1}\right), \quad
        u_t = -\gamma_t\left(\frac{m_t}{\sqrt{v_t} + d_{t+1}\epsilon} + \lambda x_t\right).

    With ``safeguard_warmup``, :math:`s_t` uses :math:`d_t` in place of :math:`\gamma_t`.

    Mishchenko & Defazio, `Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner <https://arxiv.org/abs/2306.06101>`_, 2023.

    Args:
      learning_rate: :math:`\eta_t`, a multiplier or schedule (1.0 as the peak).
      betas: :math:`(\beta_1, \beta_2)` of the underlying AdamW.
      beta3: :math:`\beta_3`, the decay of the :math:`d` estimate (default :math:`\sqrt{\beta_2}`).
      eps: :math:`\epsilon` of the underlying AdamW.
      estim_lr0: :math:`d_0`, an under-estimate of the learning rate.
      estim_lr_coef: :math:`c`, multiplies each estimate of :math:`d`.
      weight_decay: :math:`\lambda`, AdamW-style decoupled weight decay. A number, which its own rule reads:
        to schedule it, inject it (:func:`optcore.inject_hyperparams`).
      safeguard_warmup: drop :math:`\eta_t` from the denominator sum (helps warm-up).
    """
    _check_adaptive("prodigy", betas, eps, estim_lr0, weight_decay)
    if beta3 is not None:
        validate.check_decay("beta3", beta3)
    validate.check_range("estim_lr_coef", estim_lr_coef, low=0.0, low_inclusive=False)
    beta1, beta2 = betas
    beta3_value = beta2**0.5 if beta3 is None else beta3

    def init_fn(params):
        stat_dtype = kit.hyperparameter_dtype(params)  # float64 for float64 params under x64
        zeros = lambda: tree_utils.state_zeros_like(params)  # noqa: E731
        return ProdigyState(
            exp_avg=zeros(),
            exp_avg_sq=zeros(),
            grad_sum=zeros(),
            params0=kit.own_copy(params),
            estim_lr=jnp.asarray(estim_lr0, stat_dtype),
            numerator_weighted=jnp.asarray(0.0, stat_dtype),
            count=kit.zero_count(),
        )

    def update_fn(updates, state, params=None):
        kit.require_params(params, "prodigy", updates)
        # float32 arithmetic: eps = 1e-8 and d_0 = 1e-6 vanish in float16/bfloat16.
        original_state, original_params = state, params
        updates, state, params = kit.widen((updates, state, params))
        lr = kit.learning_rate_at(learning_rate, state.count)
        step = state.count + 1
        bias_correction = ((1 - beta2**step) ** 0.5) / (1 - beta1**step)
        d = state.estim_lr
        dlr = d * lr * bias_correction
        d_ratio = d / estim_lr0
        param_diff = jax.tree.map(lambda p0, p: p0 - p, state.params0, params)
        numerator_acum = tree_utils.tree_vdot(updates, param_diff)
        exp_avg = jax.tree.map(lambda m, g: beta1 * m + (1 - beta1) * d * g, state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(
            lambda v, g: beta2 * v + (1 - beta2) * d * d * g * g, state.exp_avg_sq, updates
        )
        sum_weight = d_ratio * (d if safeguard_warmup else dlr)
        grad_sum = jax.tree.map(lambda s, g: beta3_value * s + sum_weight * g, state.grad_sum, updates)
        numerator_weighted = beta3_value * state.numerator_weighted + d_ratio * dlr * numerator_acum
        denominator = tree_utils.tree_sum(jax.tree.map(jnp.abs, grad_sum))
        # All gradients so far underflowed to 0 (e.g. 1e-30): no evidence, d stays.
        d_estimate = kit.safe_ratio(estim_lr_coef * numerator_weighted, denominator, d)
        estim_lr = jnp.maximum(d, d_estimate)
        new_updates = jax.tree.map(
            lambda m, v, p: -weight_decay * dlr * p - dlr * m / (jnp.sqrt(v) + estim_lr * eps),
            exp_avg,
            exp_avg_sq,
            params,
        )
        new_state = ProdigyState(
            exp_avg=exp_avg,
            exp_avg_sq=exp_avg_sq,
            grad_sum=grad_sum,
            params0=state.params0,
            estim_lr=estim_lr,
            numerator_weighted=numerator_weighted,
            count=numerics.safe_increment(state.count),
        )
        return kit.cast_like(new_updates, original_params), kit.cast_like(new_state, original_state)

    return base.with_extra_args_support(base.GradientTransformation(init_fn, update_fn))
