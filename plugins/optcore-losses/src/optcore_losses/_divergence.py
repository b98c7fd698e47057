"""Kullback-Leibler divergences between a predicted and a target distribution."""

from __future__ import annotations

import warnings
from typing import Union

import jax
import jax.numpy as jnp

from optcore_losses import _checks

Axis = Union[int, tuple[int, ...], None]


def _prepare(log_predictions, targets, targets_name):
    log_predictions = _checks.as_float(log_predictions, "log_predictions")
    targets = jnp.asarray(targets)
    _checks.check_broadcastable("log_predictions", log_predictions, targets_name, targets)
    out_dtype = log_predictions.dtype
    if jnp.issubdtype(targets.dtype, jnp.floating):
        out_dtype = jnp.result_type(log_predictions, targets)
    work = _checks.compute_dtype(out_dtype)
    return log_predictions.astype(work), targets.astype(work), out_dtype


def _kl_terms(log_predictions, targets):
    """``t (log t - log p)`` with ``0 log 0 := 0`` (value and gradient finite)."""
    positive = targets > 0
    # Substitute safe values before the log so the unselected branch of the
    # where never holds inf/nan (its gradient would otherwise leak a nan).
    safe_targets = jnp.where(positive, targets, 1.0)
    safe_log_predictions = jnp.where(positive, log_predictions, 0.0)
    terms = targets * (jnp.log(safe_targets) - safe_log_predictions)
    return jnp.where(positive, terms, 0.0)


def kl_divergence(log_predictions, targets, axis: Axis = -1, where=None) -> jax.Array:
    r"""Kullback-Leibler divergence of predictions from targets.

    .. math::
      \mathrm{KL}(t \,\|\, p) = \sum_k t_k (\log t_k - \log p_k),
      \quad 0 \log 0 := 0

    References:
      S. Kullback and R. A. Leibler, `On Information and Sufficiency
      <https://doi.org/10.1214/aoms/1177729694>`_, 1951.

    Args:
      log_predictions: log-probabilities of the predicted distribution.
      targets: probabilities of the target distribution, broadcastable.
      axis: the axis or axes of the distribution.
      where: optional boolean mask of the entries to include.

    Returns:
      The divergences, with ``axis`` reduced.
    """
    log_p, t, out_dtype = _prepare(log_predictions, targets, "targets")
    return jnp.sum(_kl_terms(log_p, t), axis=axis, where=where).astype(out_dtype)


def kl_divergence_with_log_targets(log_predictions, log_targets, axis: Axis = -1, where=None) -> jax.Array:
    r"""Kullback-Leibler divergence with the targets given as log-probabilities.

    .. math::
      \mathrm{KL}(t \,\|\, p) = \sum_k e^{\log t_k} (\log t_k - \log p_k)

    A target of probability 0 (:math:`\log t_k = -\infty`) contributes 0.

    References:
      S. Kullback and R. A. Leibler, `On Information and Sufficiency
      <https://doi.org/10.1214/aoms/1177729694>`_, 1951.

    Args:
      log_predictions: log-probabilities of the predicted distribution.
      log_targets: log-probabilities of the target distribution.
      axis: the axis or axes of the distribution.
      where: optional boolean mask of the entries to include.

    Returns:
      The divergences, with ``axis`` reduced.
    """
    log_p, log_t, out_dtype = _prepare(log_predictions, log_targets, "log_targets")
    positive = log_t > -jnp.inf
    safe_log_t = jnp.where(positive, log_t, 0.0)
    safe_log_p = jnp.where(positive, log_p, 0.0)
    terms = jnp.where(positive, jnp.exp(safe_log_t) * (safe_log_t - safe_log_p), 0.0)
    return jnp.sum(terms, axis=axis, where=where).astype(out_dtype)


def generalized_kl_divergence(log_predictions, targets, axis: Axis = -1, where=None) -> jax.Array:
    r"""Generalised KL divergence, for non-normalised non-negative measures.

    .. math::
      D(t \,\|\, p) = \sum_k t_k (\log t_k - \log p_k) + p_k - t_k

    It equals the KL divergence when both sum to one, and is convex in
    :math:`p`.

    References:
      D. Lee and H. S. Seung, `Algorithms for Non-negative Matrix
      Factorization <https://papers.nips.cc/paper/1861>`_, 2000.

    Args:
      log_predictions: logs of the predicted measure.
      targets: the target measure (non-negative), broadcastable.
      axis: the axis or axes of the measure.
      where: optional boolean mask of the entries to include.

    Returns:
      The divergences, with ``axis`` reduced.
    """
    log_p, t, out_dtype = _prepare(log_predictions, targets, "targets")
    terms = _kl_terms(log_p, t) + jnp.exp(log_p) - t
    return jnp.sum(terms, axis=axis, where=where).astype(out_dtype)


def convex_kl_divergence(log_predictions, targets, axis: Axis = -1, where=None) -> jax.Array:
    r"""Deprecated name of :func:`generalized_kl_divergence`.

    .. math::
      D(t \,\|\, p) = \sum_k t_k (\log t_k - \log p_k) + p_k - t_k

    References:
      D. Lee and H. S. Seung, `Algorithms for Non-negative Matrix
      Factorization <https://papers.nips.cc/paper/1861>`_, 2000.

    Args:
      log_predictions: logs of the predicted measure.
      targets: the target measure (non-negative), broadcastable.
      axis: the axis or axes of the measure.
      where: optional boolean mask of the entries to include.

    Returns:
      The divergences, with ``axis`` reduced.
    """
    warnings.warn(
        # Optax's wording, so that filters matching Optax's message keep working.
        "The function convex_kl_divergence is deprecated. Please use generalized_kl_divergence instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return generalized_kl_divergence(log_predictions, targets, axis=axis, where=where)
