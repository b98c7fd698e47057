"""Metric-learning and contrastive losses on embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optcore.validate import check_non_negative, check_range

from optcore_losses import _checks

# Stands in for -inf in masked log-sum-exps: exp underflows to exactly 0 and,
# unlike -inf, it leaves finite gradients when a row has nothing to sum.
_MASKED_LOGIT = -1e30


def ntxent(embeddings, labels, temperature: float = 0.07) -> jax.Array:
    r"""Normalised temperature-scaled cross-entropy (NT-Xent) contrastive loss.

    With :math:`s_{ij} = \cos(e_i, e_j) / \tau`, positive pairs
    :math:`P = \{(i, j): i \ne j, y_i = y_j\}` and negatives
    :math:`N_i = \{k: y_k \ne y_i\}`,

    .. math::
      \ell = \frac{1}{|P|} \sum_{(i, j) \in P}
        -\log \frac{e^{s_{ij}}}{e^{s_{ij}} + \sum_{k \in N_i} e^{s_{ik}}}

    A zero embedding has cosine 0 with everything; a batch without positive
    pairs has loss 0.

    References:
      T. Chen et al., `A Simple Framework for Contrastive Learning of Visual
      Representations <https://arxiv.org/abs/2002.05709>`_, 2020.

    Args:
      embeddings: floating ``[batch, features]`` embeddings.
      labels: integer ``[batch]`` group ids; equal ids form positive pairs.
      temperature: softmax temperature (> 0).

    Returns:
      The scalar loss, averaged over positive pairs.
    """
    check_range("temperature", temperature, low=0.0, low_inclusive=False)
    embeddings = _checks.as_float(embeddings, "embeddings")
    labels = jnp.asarray(labels)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must have shape [batch, features], got embeddings.shape={embeddings.shape}.")
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"labels must have shape [batch]={embeddings.shape[:1]} to match embeddings.shape="
            f"{embeddings.shape}, got labels.shape={labels.shape}."
        )
    e = _checks.upcast(embeddings)
    squared_norms = jnp.sum(jnp.square(e), axis=1, keepdims=True)
    tiny = jnp.finfo(e.dtype).tiny
    units = e / jnp.sqrt(jnp.maximum(squared_norms, tiny))
    similarities = units @ units.T / temperature

    same = labels[:, None] == labels[None, :]
    positives = same & ~jnp.eye(labels.shape[0], dtype=bool)
    negatives = ~same
    negative_lse = jax.nn.logsumexp(jnp.where(negatives, similarities, _MASKED_LOGIT), axis=1, keepdims=True)
    pair_losses = jnp.logaddexp(similarities, negative_lse) - similarities
    num_pairs = jnp.sum(positives)
    total = jnp.sum(jnp.where(positives, pair_losses, 0.0))
    return (total / jnp.maximum(num_pairs, 1).astype(e.dtype)).astype(embeddings.dtype)


def triplet_margin_loss(
    anchors,
    positives,
    negatives,
    axis: int = -1,
    norm_degree: float = 2,
    margin: float = 1.0,
    eps: float = 1e-6,
) -> jax.Array:
    r"""Triplet margin loss on anchor, positive and negative embeddings.

    With the smoothed :math:`p`-norm distance
    :math:`d(a, b) = \left(\sum_k |a_k - b_k|^p + \epsilon\right)^{1/p}`,

    .. math::
      \ell = \max\big(d(a, p) - d(a, n) + m, 0\big)

    :math:`\epsilon` keeps the distance differentiable when two embeddings
    coincide.

    References:
      V. Balntas et al., `Learning local feature descriptors with triplets and
      shallow convolutional neural networks
      <https://bmva-archive.org.uk/bmvc/2016/papers/paper119/>`_, 2016.

    Args:
      anchors: floating ``[..., features]`` anchor embeddings.
      positives: embeddings of the same class, broadcastable with anchors.
      negatives: embeddings of another class, broadcastable with anchors.
      axis: the feature axis.
      norm_degree: :math:`p` (> 0).
      margin: the margin :math:`m` by which negatives should be farther.
      eps: :math:`\epsilon` (>= 0).

    Returns:
      The losses, with ``axis`` reduced.
    """
    check_range("norm_degree", norm_degree, low=0.0, low_inclusive=False)
    check_non_negative("eps", eps)
    anchors = _checks.as_float(anchors, "anchors")
    positives = jnp.asarray(positives)
    negatives = jnp.asarray(negatives)
    _checks.check_broadcastable("anchors", anchors, "positives", positives)
    _checks.check_broadcastable("anchors", anchors, "negatives", negatives)
    out_dtype = jnp.result_type(anchors, positives, negatives)
    work = _checks.compute_dtype(out_dtype)
    a, p, n = (x.astype(work) for x in (anchors, positives, negatives))

    def distance(x, y):
        return jnp.power(jnp.sum(jnp.power(jnp.abs(x - y), norm_degree), axis=axis) + eps, 1.0 / norm_degree)

    loss = jnp.maximum(distance(a, p) - distance(a, n) + margin, 0.0)
    return loss.astype(out_dtype)
