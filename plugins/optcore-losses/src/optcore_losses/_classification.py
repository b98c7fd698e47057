"""Classification losses on logits or scores, and label smoothing.

Every loss reduces at most the class ``axis``; batch dimensions are kept.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp

from optcore.validate import check_non_negative, check_range

from optcore_losses import _checks


def _logits_and_labels(logits, labels):
    """Floating logits in their computation dtype and labels cast to it."""
    logits = _checks.as_float(logits, "logits")
    labels = jnp.asarray(labels)
    _checks.check_broadcastable("logits", logits, "labels", labels)
    out_dtype = logits.dtype
    if jnp.issubdtype(labels.dtype, jnp.floating):
        out_dtype = jnp.result_type(logits, labels)
    work_dtype = _checks.compute_dtype(out_dtype)
    return logits.astype(work_dtype), labels.astype(work_dtype), out_dtype


def sigmoid_binary_cross_entropy(logits, labels) -> jax.Array:
    r"""Binary cross-entropy of sigmoid probabilities, element-wise.

    With :math:`\sigma` the logistic sigmoid,

    .. math::
      \ell(x, y) = -y \log \sigma(x) - (1 - y) \log \sigma(-x)

    computed with ``log_sigmoid`` so logits of any size stay finite. Labels
    may be soft (in ``[0, 1]``) and of integer dtype.

    References:
      C. Bishop, *Pattern Recognition and Machine Learning*, 2006, eq. 4.90.

    Args:
      logits: floating logits, any shape.
      labels: targets in ``[0, 1]``, broadcastable with ``logits``.

    Returns:
      The losses, with the broadcast shape.
    """
    x, y, out_dtype = _logits_and_labels(logits, labels)
    loss = -y * jax.nn.log_sigmoid(x) - (1.0 - y) * jax.nn.log_sigmoid(-x)
    return loss.astype(out_dtype)


def hinge_loss(predictor_outputs, targets) -> jax.Array:
    r"""Hinge loss for binary classification with targets in :math:`\{-1, 1\}`.

    .. math::
      \ell(f, y) = \max(0, 1 - y f)

    References:
      C. Cortes and V. Vapnik, `Support-Vector Networks
      <https://doi.org/10.1007/BF00994018>`_, 1995.

    Args:
      predictor_outputs: scores of the predictor, any shape.
      targets: targets in ``{-1, 1}``, broadcastable with the scores.

    Returns:
      The losses, element-wise.
    """
    f, y, out_dtype = _logits_and_labels(_checks.as_float(predictor_outputs, "predictor_outputs"), targets)
    return jnp.maximum(0.0, 1.0 - f * y).astype(out_dtype)


def perceptron_loss(predictor_outputs, targets) -> jax.Array:
    r"""Perceptron loss for binary classification with targets in :math:`\{-1, 1\}`.

    .. math::
      \ell(f, y) = \max(0, -y f)

    References:
      F. Rosenblatt, `The perceptron: a probabilistic model for information
      storage and organization in the brain <https://doi.org/10.1037/h0042519>`_, 1958.

    Args:
      predictor_outputs: scores of the predictor, any shape.
      targets: targets in ``{-1, 1}``, same shape as the scores.

    Returns:
      The losses, element-wise.
    """
    predictor_outputs = _checks.as_float(predictor_outputs, "predictor_outputs")
    _checks.check_same_shape("predictor_outputs", predictor_outputs, "targets", targets)
    f, y, out_dtype = _logits_and_labels(predictor_outputs, targets)
    return jnp.maximum(0.0, -f * y).astype(out_dtype)


def _cross_entropy(log_probs, labels, axis, where):
    """``-sum(labels * log_probs)`` where a zero label contributes exactly 0.

    A zero label on a -inf log-probability must give 0, not 0 * inf = nan
    (0 log 0 := 0). Only the -inf log-probabilities that meet a zero label (or
    a class excluded by ``where``) are replaced, and the replacement acts on
    ``log_probs`` alone, so the loss stays the product ``labels * log_probs``:
    its derivative in the labels is ``-log_probs``, as in Optax. (Replacing the
    whole product where ``labels == 0`` would zero that derivative at every
    zero label, which breaks distillation and any gradient in the targets.)
    """
    replace = labels == 0
    if where is not None:
        replace = replace | ~jnp.asarray(where, bool)
    finite_log_probs = jnp.where(replace & jnp.isneginf(log_probs), 0.0, log_probs)
    return -jnp.sum(labels * finite_log_probs, axis=axis, where=where)


def _class_mask(where, logits: jax.Array, axis):
    """``where`` as a mask broadcastable with ``logits``.

    A mask given per example (``logits.shape`` without the class axes, as
    Optax accepts) gets its class axes back with size 1, so an example is
    included or left out whole; a mask of the logits' rank is used as is.
    """
    if where is None:
        return None
    where = jnp.asarray(where, bool)
    given_shape = where.shape
    if where.ndim != logits.ndim:
        if axis is None:
            raise ValueError(
                f"where must have the rank of logits when axis=None: got where.shape={given_shape} "
                f"and logits.shape={logits.shape}."
            )
        where = jnp.expand_dims(where, _checks.class_axes(axis, logits.ndim))
    try:
        jnp.broadcast_shapes(where.shape, logits.shape)
    except ValueError:
        raise ValueError(
            f"where must have the shape of logits or of logits without axis {axis!r}: got "
            f"where.shape={given_shape} and logits.shape={logits.shape}."
        ) from None
    return where


def softmax_cross_entropy(logits, labels, axis: Union[int, tuple[int, ...], None] = -1, where=None) -> jax.Array:
    r"""Cross-entropy between label distributions and softmax probabilities.

    .. math::
      \ell(x, y) = -\sum_k y_k \log \operatorname{softmax}(x)_k
                 = \operatorname{logsumexp}(x) - \sum_k y_k x_k \quad (\textstyle\sum_k y_k = 1)

    A class with label 0 contributes 0 even if its logit is :math:`-\infty`.

    References:
      C. Bishop, *Pattern Recognition and Machine Learning*, 2006, eq. 4.108.

    Args:
      logits: floating logits, shape ``[..., num_classes]``.
      labels: probabilities (e.g. one-hot), broadcastable with ``logits``.
      axis: the class axis or axes.
      where: optional boolean mask of the classes to include, of the shape of
        ``logits`` or of ``logits`` without ``axis`` (then a whole example is
        in or out). An example with no class included has loss 0.

    Returns:
      The losses, with ``axis`` reduced.
    """
    x, y, out_dtype = _logits_and_labels(logits, labels)
    where = _class_mask(where, x, axis)
    log_probs = jax.nn.log_softmax(x, axis=axis, where=where)
    return _cross_entropy(log_probs, y, axis, where).astype(out_dtype)


def safe_softmax_cross_entropy(logits, labels) -> jax.Array:
    r"""Softmax cross-entropy over the last axis that tolerates :math:`-\infty` logits.

    .. math::
      \ell(x, y) = -\sum_k y_k \log \operatorname{softmax}(x)_k,
      \quad 0 \cdot \log 0 := 0

    Classes masked out with a :math:`-\infty` logit and label 0 contribute 0
    and get a zero gradient; a positive label on such a class gives
    :math:`+\infty`.

    References:
      C. Bishop, *Pattern Recognition and Machine Learning*, 2006, eq. 4.108.

    Args:
      logits: floating logits, shape ``[..., num_classes]``.
      labels: probabilities, broadcastable with ``logits``.

    Returns:
      The losses, shape ``[...]``.
    """
    return softmax_cross_entropy(logits, labels, axis=-1)


def softmax_cross_entropy_with_integer_labels(
    logits, labels, axis: Union[int, tuple[int, ...]] = -1, where=None
) -> jax.Array:
    r"""Softmax cross-entropy with the true class given as an integer index.

    .. math::
      \ell(x, c) = \operatorname{logsumexp}_k(x_k) - x_c

    References:
      C. Bishop, *Pattern Recognition and Machine Learning*, 2006, eq. 4.108.

    With a tuple of axes, the classes are the entries of the slice
    ``logits[axis]`` flattened in the order the axes are given (C order), and a
    label is a flat index into it (``jnp.ravel_multi_index`` over the sizes of
    those axes, in that order), as in Optax.

    Args:
      logits: floating logits, shape ``[..., num_classes]``.
      labels: integer class indices, the shape of ``logits`` without ``axis``.
      axis: the class axis, or a tuple of class axes.
      where: optional boolean mask of the classes included in the normaliser,
        of the shape of ``logits`` or of ``labels`` (then a whole example is
        in or out). An example with no class included has loss 0.

    Returns:
      The losses, the shape of ``labels``.
    """
    logits = _checks.as_float(logits, "logits")
    class_axes = _checks.class_axes(axis, logits.ndim)
    if where is not None:
        where = jnp.asarray(where, bool)
        if where.ndim != logits.ndim:
            where = jnp.expand_dims(where, class_axes)
        where = jnp.broadcast_to(where, logits.shape)
    if len(class_axes) > 1 or isinstance(axis, tuple):
        # Batch axes first, then the class axes in the given order, flattened into one.
        batch_axes = tuple(a for a in range(logits.ndim) if a not in class_axes)
        order = batch_axes + class_axes
        flat_shape = tuple(logits.shape[a] for a in batch_axes) + (-1,)
        logits = logits.transpose(order).reshape(flat_shape)
        if where is not None:
            where = where.transpose(order).reshape(flat_shape)
        axis = -1
    else:
        (axis,) = class_axes
    labels = _checks.check_integer_labels(logits, labels, axis)
    x = _checks.upcast(logits)
    label_logits = jnp.take_along_axis(x, jnp.expand_dims(labels, axis), axis=axis)
    label_logits = jnp.squeeze(label_logits, axis=axis)
    normalizers = jax.nn.logsumexp(x, axis=axis, where=where)
    losses = normalizers - label_logits
    if where is not None:
        losses = jnp.where(jnp.any(where, axis=axis), losses, 0.0)
    return losses.astype(logits.dtype)


def poly_loss_cross_entropy(
    logits, labels, *, epsilon: float = 2.0, axis: Union[int, tuple[int, ...], None] = -1, where=None
) -> jax.Array:
    r"""Poly-1 loss: cross-entropy plus a first-order polynomial term.

    With :math:`p = \operatorname{softmax}(x)`,

    .. math::
      \ell(x, y) = -\sum_k y_k \log p_k + \epsilon \sum_k y_k (1 - p_k)

    References:
      Z. Leng et al., `PolyLoss: A Polynomial Expansion Perspective of
      Classification Loss Functions <https://arxiv.org/abs/2204.12511>`_, 2022.

    Args:
      logits: floating logits, shape ``[..., num_classes]``.
      labels: probabilities (e.g. one-hot), broadcastable with ``logits``.
      epsilon: weight of the polynomial term (any real; the paper uses
        values in ``[-1, 2]``).
      axis: the class axis or axes.
      where: optional boolean mask of the classes to include.

    Returns:
      The losses, with ``axis`` reduced.
    """
    x, y, out_dtype = _logits_and_labels(logits, labels)
    log_probs = jax.nn.log_softmax(x, axis=axis, where=where)
    probs = jnp.exp(log_probs)
    one_minus_pt = jnp.sum(y * (1.0 - probs), axis=axis, where=where)
    cross_entropy = _cross_entropy(log_probs, y, axis, where)
    return (cross_entropy + epsilon * one_minus_pt).astype(out_dtype)


def sigmoid_focal_loss(logits, labels, *, alpha: Optional[float] = None, gamma: float = 2.0) -> jax.Array:
    r"""Focal loss: binary cross-entropy down-weighted on easy examples.

    With :math:`p = \sigma(x)` and :math:`p_t = p y + (1 - p)(1 - y)`,

    .. math::
      \ell(x, y) = \alpha_t (1 - p_t)^{\gamma}\, \mathrm{BCE}(x, y),
      \quad \alpha_t = \alpha y + (1 - \alpha)(1 - y)

    (:math:`\alpha_t = 1` when ``alpha`` is None). The factor
    :math:`(1 - p_t)^\gamma` is computed as :math:`\exp(\gamma \log(1 - p_t))`
    from log-sigmoids, so it and its gradient stay finite for saturated logits
    and for :math:`\gamma < 1`.

    References:
      T.-Y. Lin et al., `Focal Loss for Dense Object Detection
      <https://arxiv.org/abs/1708.02002>`_, 2017.

    Args:
      logits: floating logits, any shape.
      labels: targets in ``[0, 1]``, broadcastable with ``logits``.
      alpha: optional weight in ``[0, 1]`` of the positive class.
      gamma: focusing exponent (>= 0); 0 gives (weighted) cross-entropy.

    Returns:
      The losses, element-wise.
    """
    if alpha is not None:
        check_range("alpha", alpha, low=0.0, high=1.0, high_inclusive=True)
    check_non_negative("gamma", gamma)
    x, y, out_dtype = _logits_and_labels(logits, labels)
    x, y = jnp.broadcast_arrays(x, y)
    log_p = jax.nn.log_sigmoid(x)
    log_not_p = jax.nn.log_sigmoid(-x)
    cross_entropy = -y * log_p - (1.0 - y) * log_not_p
    # 1 - p_t = y (1 - p) + (1 - y) p, combined in log space.
    log_one_minus_pt = jax.nn.logsumexp(jnp.stack([log_not_p, log_p]), axis=0, b=jnp.stack([y, 1.0 - y]))
    loss = jnp.exp(gamma * log_one_minus_pt) * cross_entropy
    if alpha is not None:
        loss = (alpha * y + (1.0 - alpha) * (1.0 - y)) * loss
    return loss.astype(out_dtype)


def _scores_and_one_hot(scores, labels):
    scores = _checks.as_float(scores, "scores")
    labels = _checks.check_integer_labels(scores, labels, -1)
    work = _checks.upcast(scores)
    return work, jax.nn.one_hot(labels, scores.shape[-1], dtype=work.dtype), scores.dtype


def multiclass_hinge_loss(scores, labels) -> jax.Array:
    r"""Multiclass hinge loss (Crammer-Singer).

    .. math::
      \ell(s, c) = \max_k \left(s_k + [k \ne c]\right) - s_c

    References:
      K. Crammer and Y. Singer, `On the Algorithmic Implementation of
      Multiclass Kernel-based Vector Machines
      <https://jmlr.org/papers/v2/crammer01a.html>`_, 2001.

    Args:
      scores: floating scores, shape ``[..., num_classes]``.
      labels: integer classes, shape ``[...]``.

    Returns:
      The losses, shape ``[...]``.
    """
    s, one_hot, out_dtype = _scores_and_one_hot(scores, labels)
    loss = jnp.max(s + 1.0 - one_hot, axis=-1) - jnp.sum(s * one_hot, axis=-1)
    return loss.astype(out_dtype)


def multiclass_perceptron_loss(scores, labels) -> jax.Array:
    r"""Multiclass perceptron loss.

    .. math::
      \ell(s, c) = \max_k s_k - s_c

    References:
      M. Collins, `Discriminative Training Methods for Hidden Markov Models
      <https://aclanthology.org/W02-1001/>`_, 2002.

    Args:
      scores: floating scores, shape ``[..., num_classes]``.
      labels: integer classes, shape ``[...]``.

    Returns:
      The losses, shape ``[...]``.
    """
    s, one_hot, out_dtype = _scores_and_one_hot(scores, labels)
    loss = jnp.max(s, axis=-1) - jnp.sum(s * one_hot, axis=-1)
    return loss.astype(out_dtype)


def _sparse_plus(x):
    """The binary sparsemax 'softplus': 0, (x + 1)^2 / 4, or x."""
    middle = jnp.square(x + 1.0) / 4.0
    return jnp.where(x <= -1.0, 0.0, jnp.where(x >= 1.0, x, middle))


def sparsemax_loss(logits, labels) -> jax.Array:
    r"""Binary sparsemax loss, element-wise.

    With :math:`z = -x` if :math:`y = 1` and :math:`z = x` if :math:`y = 0`,

    .. math::
      \ell(x, y) = \begin{cases} 0 & z \le -1 \\ (z + 1)^2 / 4 & -1 < z < 1 \\
                   z & z \ge 1 \end{cases}

    the Fenchel-Young loss of sparsemax on the two logits :math:`(x, 0)`.

    References:
      A. Martins and R. Astudillo, `From Softmax to Sparsemax
      <https://arxiv.org/abs/1602.02068>`_, 2016; M. Blondel et al.,
      `Learning with Fenchel-Young Losses <https://arxiv.org/abs/1901.02324>`_, 2020.

    Args:
      logits: floating logits, any shape.
      labels: binary targets in ``{0, 1}``, broadcastable with ``logits``.

    Returns:
      The losses, element-wise.
    """
    x, y, out_dtype = _logits_and_labels(logits, labels)
    signed = jnp.where(y != 0, -x, x)
    return _sparse_plus(signed).astype(out_dtype)


def _sparsemax(scores):
    """Euclidean projection of ``scores`` onto the simplex, along the last axis."""
    num_classes = scores.shape[-1]
    sorted_desc = -jnp.sort(-scores, axis=-1)
    cumulative = jnp.cumsum(sorted_desc, axis=-1)
    ranks = jnp.arange(1, num_classes + 1, dtype=scores.dtype)
    in_support = 1.0 + ranks * sorted_desc > cumulative
    support_size = jnp.sum(in_support, axis=-1, keepdims=True)
    sum_in_support = jnp.take_along_axis(cumulative, support_size - 1, axis=-1)
    threshold = (sum_in_support - 1.0) / support_size.astype(scores.dtype)
    return jnp.maximum(scores - threshold, 0.0)


def multiclass_sparsemax_loss(scores, labels) -> jax.Array:
    r"""Multiclass sparsemax loss (Fenchel-Young loss of sparsemax).

    With :math:`p = \operatorname{sparsemax}(s)`, the projection of the scores
    onto the probability simplex,

    .. math::
      \ell(s, c) = \langle s, p \rangle - \tfrac12 \|p\|^2 + \tfrac12 - s_c

    Its gradient is :math:`p - e_c`.

    References:
      A. Martins and R. Astudillo, `From Softmax to Sparsemax
      <https://arxiv.org/abs/1602.02068>`_, 2016.

    Args:
      scores: floating scores, shape ``[..., num_classes]``.
      labels: integer classes, shape ``[...]``.

    Returns:
      The losses, shape ``[...]``.
    """
    s, one_hot, out_dtype = _scores_and_one_hot(scores, labels)
    probs = _sparsemax(s)
    loss = jnp.sum(s * probs, axis=-1) - 0.5 * jnp.sum(jnp.square(probs), axis=-1) + 0.5
    loss = loss - jnp.sum(s * one_hot, axis=-1)
    return loss.astype(out_dtype)


def make_fenchel_young_loss(max_fun: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    r"""Builds the Fenchel-Young loss of a regularised max function.

    For a convex ``max_fun`` :math:`\Omega^*` (e.g. ``jax.nn.logsumexp``),

    .. math::
      \ell(s, y) = \Omega^*(s) - \langle s, y \rangle

    (up to the constant :math:`\Omega(y)`); its gradient in :math:`s` is
    :math:`\nabla \Omega^*(s) - y`. With logsumexp it is the softmax
    cross-entropy.

    References:
      M. Blondel et al., `Learning with Fenchel-Young Losses
      <https://arxiv.org/abs/1901.02324>`_, 2020.

    Args:
      max_fun: maps a score vector ``[n]`` (and optional extra arguments) to
        a scalar.

    Returns:
      ``loss(scores, targets, *args, **kwargs)`` mapping scores and targets of
      shape ``[..., n]`` to losses of shape ``[...]``; extra arguments go to
      ``max_fun``.
    """
    if not callable(max_fun):
        raise TypeError(f"max_fun must be callable, got {type(max_fun).__name__}.")

    def fenchel_young_loss(scores, targets, *args, **kwargs):
        scores = jnp.asarray(scores)
        targets = jnp.asarray(targets)
        _checks.check_broadcastable("scores", scores, "targets", targets)
        max_value = jnp.vectorize(lambda s: max_fun(s, *args, **kwargs), signature="(n)->()")(scores)
        return max_value - jnp.sum(targets * scores, axis=-1)

    return fenchel_young_loss


def smooth_labels(labels, alpha: float, *, axis: Union[int, tuple[int, ...]] = -1, where=None) -> jax.Array:
    r"""Label smoothing: mixes the labels with the uniform distribution.

    With :math:`K` the number of classes (counted over ``where`` if given),

    .. math::
      \tilde y = (1 - \alpha) y + \alpha / K

    References:
      C. Szegedy et al., `Rethinking the Inception Architecture for Computer
      Vision <https://arxiv.org/abs/1512.00567>`_, 2016.

    Args:
      labels: floating one-hot or probability labels, ``[..., num_classes]``.
      alpha: smoothing factor in ``[0, 1]``.
      axis: the class axis or axes.
      where: optional boolean mask of the classes that count in :math:`K`.

    Returns:
      The smoothed labels, same shape and dtype as ``labels``.
    """
    check_range("alpha", alpha, low=0.0, high=1.0, high_inclusive=True)
    labels = _checks.as_float(labels, "labels")
    if where is None:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        num_classes = 1
        for a in axes:
            num_classes *= labels.shape[a]
    else:
        where = jnp.broadcast_to(where, labels.shape)
        num_classes = jnp.sum(where, axis=axis, keepdims=True).astype(labels.dtype)
    return ((1.0 - alpha) * labels + alpha / num_classes).astype(labels.dtype)
