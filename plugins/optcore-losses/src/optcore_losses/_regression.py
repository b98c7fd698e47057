"""Regression losses: squared error, Huber, log-cosh and cosine similarity.

All losses are element-wise (or reduce only the feature ``axis``); the caller
reduces over the batch.
"""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from optcore.validate import check_non_negative, check_range

from optcore_losses import _checks


def _errors(predictions, targets, *, broadcast: bool) -> jax.Array:
    """``predictions - targets`` (or ``predictions`` when targets is None)."""
    predictions = _checks.as_float(predictions, "predictions")
    if targets is None:
        return predictions
    targets = jnp.asarray(targets)
    if broadcast:
        _checks.check_broadcastable("predictions", predictions, "targets", targets)
    else:
        _checks.check_same_shape("predictions", predictions, "targets", targets)
    if not jnp.issubdtype(targets.dtype, jnp.floating):
        targets = targets.astype(predictions.dtype)
    return predictions - targets


def squared_error(predictions, targets=None) -> jax.Array:
    r"""Element-wise squared error.

    .. math::
      \ell(\hat y, y) = (\hat y - y)^2

    References:
      `Mean squared error <https://en.wikipedia.org/wiki/Mean_squared_error>`_.

    Args:
      predictions: floating predictions, any shape.
      targets: targets of the same shape, or None (then the errors are the
        predictions themselves, e.g. residuals).

    Returns:
      The squared errors, with the shape of ``predictions``.
    """
    errors = _errors(predictions, targets, broadcast=False)
    return jnp.square(errors)


def l2_loss(predictions, targets=None) -> jax.Array:
    r"""Half the element-wise squared error.

    .. math::
      \ell(\hat y, y) = \tfrac12 (\hat y - y)^2

    The factor :math:`\tfrac12` makes the gradient the plain error
    :math:`\hat y - y`.

    References:
      C. Bishop, *Pattern Recognition and Machine Learning*, 2006, sec. 1.1.

    Args:
      predictions: floating predictions, any shape.
      targets: targets of the same shape, or None.

    Returns:
      The halved squared errors, with the shape of ``predictions``.
    """
    errors = _errors(predictions, targets, broadcast=False)
    return 0.5 * jnp.square(errors)


def huber_loss(predictions, targets=None, *, delta: float = 1.0) -> jax.Array:
    r"""Huber loss: quadratic for small errors, linear for large ones.

    With :math:`e = \hat y - y`,

    .. math::
      \ell(e) = \begin{cases} \tfrac12 e^2 & |e| \le \delta \\
                \delta (|e| - \tfrac12 \delta) & |e| > \delta \end{cases}

    References:
      P. J. Huber, `Robust Estimation of a Location Parameter
      <https://doi.org/10.1214/aoms/1177703732>`_, 1964.

    Args:
      predictions: floating predictions, any shape.
      targets: targets broadcastable with ``predictions``, or None.
      delta: the error size at which the loss turns linear (> 0).

    Returns:
      The Huber losses, element-wise.
    """
    check_range("delta", delta, low=0.0, low_inclusive=False, high=None)
    errors = _errors(predictions, targets, broadcast=True)
    abs_errors = jnp.abs(errors)
    # Splitting |e| into a clipped quadratic part and a linear remainder keeps
    # one smooth expression (no branch) with the exact value in both regimes.
    quadratic = jnp.minimum(abs_errors, delta)
    linear = abs_errors - quadratic
    return 0.5 * jnp.square(quadratic) + delta * linear


def log_cosh(predictions, targets=None) -> jax.Array:
    r"""Logarithm of the hyperbolic cosine of the error.

    .. math::
      \ell(e) = \log\cosh(e) = \log(e^{e} + e^{-e}) - \log 2

    Behaves like :math:`e^2/2` for small errors and :math:`|e| - \log 2` for
    large ones; computed with ``logaddexp`` so large errors do not overflow.

    References:
      P. Chen et al., `Log Hyperbolic Cosine Loss Improves Variational
      Auto-Encoder <https://openreview.net/forum?id=rkglvsC9Ym>`_, 2019.

    Args:
      predictions: floating predictions, any shape.
      targets: targets broadcastable with ``predictions``, or None.

    Returns:
      The log-cosh losses, element-wise.
    """
    errors = _errors(predictions, targets, broadcast=True)
    work = _checks.upcast(errors)
    loss = jnp.logaddexp(work, -work) - jnp.log(2.0).astype(work.dtype)
    return loss.astype(errors.dtype)


def cosine_similarity(
    predictions,
    targets,
    *,
    epsilon: float = 0.0,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Optional[jax.Array] = None,
) -> jax.Array:
    r"""Cosine of the angle between predictions and targets along ``axis``.

    .. math::
      s(\hat y, y) = \frac{\langle \hat y, y \rangle}
        {\sqrt{\max(\|\hat y\|^2, \epsilon)}\,\sqrt{\max(\|y\|^2, \epsilon)}}

    References:
      `Cosine similarity <https://en.wikipedia.org/wiki/Cosine_similarity>`_.

    Args:
      predictions: floating vectors, shape ``[..., dim]``.
      targets: vectors broadcastable with ``predictions``.
      epsilon: lower bound on each squared norm in the denominator (>= 0);
        with ``epsilon > 0`` a zero vector has similarity 0.
      axis: the axis or axes holding the vector components.
      where: optional boolean mask of the components to include.

    Returns:
      The similarities, with ``axis`` reduced.
    """
    check_non_negative("epsilon", epsilon)
    predictions = _checks.as_float(predictions, "predictions")
    targets = jnp.asarray(targets)
    _checks.check_broadcastable("predictions", predictions, "targets", targets)
    out_dtype = jnp.result_type(predictions, targets) if jnp.issubdtype(targets.dtype, jnp.floating) else predictions.dtype
    work_dtype = _checks.compute_dtype(out_dtype)
    p = predictions.astype(work_dtype)
    t = targets.astype(work_dtype)
    p, t = jnp.broadcast_arrays(p, t)
    if where is not None:
        where = jnp.broadcast_to(where, p.shape)
    dot = jnp.sum(p * t, axis=axis, where=where)
    p_norm_sq = jnp.sum(jnp.square(p), axis=axis, where=where)
    t_norm_sq = jnp.sum(jnp.square(t), axis=axis, where=where)
    denominator = jnp.sqrt(jnp.maximum(p_norm_sq, epsilon)) * jnp.sqrt(jnp.maximum(t_norm_sq, epsilon))
    return (dot / denominator).astype(out_dtype)


def cosine_distance(
    predictions,
    targets,
    *,
    epsilon: float = 0.0,
    axis: Union[int, tuple[int, ...], None] = -1,
    where: Optional[jax.Array] = None,
) -> jax.Array:
    r"""One minus the cosine similarity.

    .. math::
      d(\hat y, y) = 1 - s(\hat y, y)

    References:
      `Cosine similarity <https://en.wikipedia.org/wiki/Cosine_similarity>`_.

    Args:
      predictions: floating vectors, shape ``[..., dim]``.
      targets: vectors broadcastable with ``predictions``.
      epsilon: lower bound on each squared norm in the denominator (>= 0).
      axis: the axis or axes holding the vector components.
      where: optional boolean mask of the components to include.

    Returns:
      The distances, in ``[0, 2]``, with ``axis`` reduced.
    """
    similarity = cosine_similarity(predictions, targets, epsilon=epsilon, axis=axis, where=where)
    return 1.0 - similarity
