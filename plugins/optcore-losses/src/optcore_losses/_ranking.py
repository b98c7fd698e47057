"""Listwise ranking losses."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from optcore_losses import _checks


def ranking_softmax_loss(
    logits,
    labels,
    *,
    where: Optional[jax.Array] = None,
    weights: Optional[jax.Array] = None,
    reduce_fn: Optional[Callable[..., jax.Array]] = jnp.mean,
) -> jax.Array:
    r"""Listwise softmax cross-entropy for ranking.

    Each list's relevance labels (times ``weights``) weigh the
    log-probabilities of the softmax of the scores over the valid items:

    .. math::
      \ell(s, y) = -\sum_i w_i y_i \log \frac{e^{s_i}}{\sum_{j \in \text{valid}} e^{s_j}}

    The labels are not normalised (as in Optax); a list whose labels are all
    zero has loss 0.

    References:
      Z. Cao et al., `Learning to Rank: From Pairwise Approach to Listwise
      Approach <https://doi.org/10.1145/1273496.1273513>`_, 2007;
      S. Bruch et al., `An Analysis of the Softmax Cross Entropy Loss for
      Learning-to-Rank with Binary Relevance
      <https://doi.org/10.1145/3341981.3344221>`_, 2019.

    Args:
      logits: floating scores ``[..., list_size]``.
      labels: relevance labels (any numeric dtype), broadcastable with ``logits``.
      where: optional boolean mask of the valid items; lists with no valid
        item are left out of the reduction (the mean over no list is 0).
      weights: optional per-item weights multiplying the labels.
      reduce_fn: reduces the per-list losses (called with ``where=`` the
        valid lists when ``where`` is given); None returns them unreduced.
        ``jnp.mean`` is computed here, as the sum over the valid lists divided
        by their number, so that it is 0 rather than nan when none is valid.

    Returns:
      The reduced loss, or the per-list losses ``[...]`` if ``reduce_fn`` is None.
    """
    logits = _checks.as_float(logits, "logits")
    labels = jnp.asarray(labels)
    _checks.check_broadcastable("logits", logits, "labels", labels)
    logits, labels = jnp.broadcast_arrays(logits, labels)
    x = _checks.upcast(logits)
    y = labels.astype(x.dtype)
    if where is not None:
        where = jnp.broadcast_to(jnp.asarray(where, dtype=bool), x.shape)
        y = jnp.where(where, y, 0.0)
    if weights is not None:
        y = y * jnp.asarray(weights, dtype=x.dtype)
    log_probs = jax.nn.log_softmax(x, axis=-1, where=where)
    # Masked items have log-probability -inf (or nan) and label 0: they add 0.
    terms = jnp.where(y == 0, 0.0, y * jnp.where(y == 0, 0.0, log_probs))
    loss = -jnp.sum(terms, axis=-1).astype(logits.dtype)
    if reduce_fn is None:
        return loss
    valid_lists = None if where is None else jnp.any(where, axis=-1)
    if reduce_fn is jnp.mean:
        return _mean_over_lists(loss, valid_lists)
    if valid_lists is not None:
        return reduce_fn(loss, where=valid_lists)
    return reduce_fn(loss)


def _mean_over_lists(loss: jax.Array, valid_lists: Optional[jax.Array]) -> jax.Array:
    """Mean of the valid lists' losses, and 0 when there is no valid list.

    A plain masked mean is 0/0 = nan there, where Optax's ``_safe_reduce``
    returns 0; clamping the count at 1 gives 0, with a zero gradient.
    """
    if valid_lists is None:
        valid_lists = jnp.ones(loss.shape, bool)
    total = jnp.sum(_checks.upcast(loss), where=valid_lists)
    count = jnp.maximum(jnp.sum(valid_lists), 1)
    return (total / count).astype(loss.dtype)
