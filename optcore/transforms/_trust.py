"""Layer-wise scaling by parameter norms: trust ratios, parameter-block
scaling and distance-over-gradients (DoG) step sizes. All need ``params``."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optcore import base, numerics, tree_utils, validate
from optcore.kit import f32, hyperparameter_dtype

ScaleByTrustRatioState = base.EmptyState


class ScaleByDistanceOverGradientsState(NamedTuple):
    """State of :func:`scale_by_distance_over_gradients`."""

    max_dist: base.OptState  # per leaf, a scalar: the largest distance from the start
    grad_sum_of_squares: base.OptState  # per leaf, shape (1,)
    init_params: base.OptState  # the params at initialisation


def _require_params(params, updates) -> None:
    """These transformations read the params: they must be given, and match the updates."""
    if params is None:
        raise ValueError(base.NO_PARAMS_MSG)
    validate.check_tree_match(updates, params, against="params")


def scale_by_trust_ratio(
    min_norm: float = 0.0,
    trust_coefficient: float = 1.0,
    eps: float = 0.0,
) -> base.GradientTransformation:
    r"""Scales each leaf's update by its trust ratio (LARS/LAMB).

    .. math::
        u \leftarrow u \cdot \frac{c\, \max(\|\theta\|, n_{min})}{\max(\|u\|, n_{min}) + \epsilon}

    per leaf, with the ratio replaced by 1 where either norm is zero.

    You et al., `Large Batch Training of Convolutional Networks
    <https://arxiv.org/abs/1708.03888>`_, 2017.

    Args:
      min_norm: :math:`n_{min}`, the smallest norm used.
      trust_coefficient: :math:`c`.
      eps: :math:`\epsilon`, added to the update norm.
    """
    validate.check_non_negative("min_norm", min_norm)
    validate.check_non_negative("trust_coefficient", trust_coefficient)
    validate.check_non_negative("eps", eps)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        _require_params(params, updates)
        min_norm_, coefficient, eps_ = (f32(x, hyper_dtype) for x in (min_norm, trust_coefficient, eps))

        def leaf(u, p):
            param_norm = numerics.safe_norm(p, min_norm_)
            update_norm = numerics.safe_norm(u, min_norm_)
            ratio = coefficient * param_norm / (update_norm + eps_)
            either_zero = jnp.logical_or(param_norm == 0.0, update_norm == 0.0)
            return (u * jnp.where(either_zero, 1.0, ratio)).astype(u.dtype)

        return jax.tree.map(leaf, updates, params), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def scale_by_param_block_norm(min_scale: float = 1e-3) -> base.GradientTransformation:
    r"""Scales each leaf's update by its parameter's l2 norm.

    .. math::
        u \leftarrow u \cdot \max(\|\theta\|_2, s_{min})

    Args:
      min_scale: :math:`s_{min}`, the smallest factor.
    """
    validate.check_non_negative("min_scale", min_scale)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        _require_params(params, updates)
        floor = f32(min_scale, hyper_dtype)
        updates = jax.tree.map(lambda u, p: (u * numerics.safe_norm(p, floor)).astype(u.dtype), updates, params)
        return updates, state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def scale_by_param_block_rms(min_scale: float = 1e-3) -> base.GradientTransformation:
    r"""Scales each leaf's update by its parameter's root mean square (Adafactor).

    .. math::
        u \leftarrow u \cdot \max(\sqrt{\mathrm{mean}(\theta^2)}, s_{min})

    Shazeer & Stern, `Adafactor <https://arxiv.org/abs/1804.04235>`_, 2018.

    Args:
      min_scale: :math:`s_{min}`, the smallest factor.
    """
    validate.check_non_negative("min_scale", min_scale)

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        _require_params(params, updates)
        floor = f32(min_scale, hyper_dtype)
        updates = jax.tree.map(
            lambda u, p: (u * numerics.safe_root_mean_squares(p, floor)).astype(u.dtype), updates, params
        )
        return updates, state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def scale_by_distance_over_gradients(
    reps_rel: float = 1e-6,
    eps: float = 1e-8,
    param_dtype: Any = jnp.float32,
    global_scale: float = 1.0,
) -> base.GradientTransformation:
    r"""Layer-wise Distance over Gradients (DoG) step sizes.

    For each leaf, with :math:`\bar r_t = \max(\bar r_{t-1}, \|\theta_t - \theta_0\|)`,
    :math:`\bar r_0 = r_\epsilon (1 + \|\theta_0\|)` and
    :math:`G_t = G_{t-1} + \|g_t\|^2`,

    .. math::
        u_t = s\, \frac{\bar r_t}{\sqrt{G_t + \epsilon}}\, g_t

    Ivgi et al., `DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule <https://arxiv.org/abs/2302.12022>`_, 2023.

    Args:
      reps_rel: :math:`r_\epsilon`, the relative size of the first step.
      eps: :math:`\epsilon`, keeps the first steps finite.
      param_dtype: dtype of the state.
      global_scale: :math:`s`, multiplies every step.
    """
    validate.check_non_negative("reps_rel", reps_rel)
    validate.check_non_negative("eps", eps)
    validate.check_non_negative("global_scale", global_scale)
    param_dtype = jnp.dtype(param_dtype)

    def init_fn(params):
        return ScaleByDistanceOverGradientsState(
            max_dist=jax.tree.map(
                lambda p: (f32(reps_rel, param_dtype) * (1 + jnp.linalg.norm(p))).astype(param_dtype), params
            ),
            grad_sum_of_squares=jax.tree.map(lambda p: jnp.zeros((1,), param_dtype), params),
            init_params=tree_utils.tree_cast(params, param_dtype),
        )

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        _require_params(params, updates)
        eps_, scale_ = (f32(x, hyper_dtype) for x in (eps, global_scale))
        max_dist = jax.tree.map(
            lambda d, p, p0: jnp.maximum(d, jnp.linalg.norm(p - p0)).astype(d.dtype),
            state.max_dist,
            params,
            state.init_params,
        )
        grad_sum_of_squares = jax.tree.map(
            lambda s, g: (s + jnp.sum(numerics.abs_sq(g))).astype(s.dtype), state.grad_sum_of_squares, updates
        )
        new_updates = jax.tree.map(
            lambda g, d, s: (scale_ * d / jnp.sqrt(s + eps_) * g).astype(g.dtype),
            updates,
            max_dist,
            grad_sum_of_squares,
        )
        return new_updates, ScaleByDistanceOverGradientsState(
            max_dist=max_dist, grad_sum_of_squares=grad_sum_of_squares, init_params=state.init_params
        )

    return base.GradientTransformation(init_fn, update_fn)
