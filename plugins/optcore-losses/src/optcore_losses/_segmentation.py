"""Dice losses for semantic segmentation.

Shapes follow the convention ``[batch, *spatial, num_classes]``: the overlap
is summed over the spatial axes and the losses keep the batch axes.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from optcore.validate import check_non_negative, check_one_of

from optcore_losses import _checks

_REDUCTIONS = ("mean", "sum", "none")
# Added to the squared class volume of generalised Dice so that a class absent
# from the batch gets a large finite weight instead of an infinite one.
_GENERALIZED_DICE_EPSILON = 1e-7


def _class_probabilities(x: jax.Array, apply_softmax: bool) -> jax.Array:
    if apply_softmax:
        # One channel is a binary problem: the sigmoid of the logit is the
        # foreground probability (a softmax over one class would be constant).
        if x.shape[-1] == 1:
            return jax.nn.sigmoid(x)
        return jax.nn.softmax(x, axis=-1)
    if x.shape[-1] > 1 and _checks.is_concrete(x):
        sums = np.asarray(jnp.sum(x, axis=-1))
        if sums.size and not np.allclose(sums, 1.0, rtol=1e-5):
            raise ValueError(
                "predictions must be valid probability distributions summing to 1 along the class axis "
                f"when apply_softmax=False; found sums in [{sums.min():.6f}, {sums.max():.6f}]."
            )
    return x


def _with_class_axis(predictions: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``predictions`` and ``targets`` of the same shape ``[batch, *spatial, num_classes]``.

    A binary input may leave out its class axis of size 1 (as in Optax): when
    one array has one dimension less than the other, it gets a trailing axis.
    """
    given = (predictions.shape, targets.shape)
    if predictions.ndim == targets.ndim - 1:
        predictions = predictions[..., None]
    elif targets.ndim == predictions.ndim - 1:
        targets = targets[..., None]
    if predictions.shape != targets.shape:
        raise ValueError(
            "predictions and targets must have the same shape, or one of them that shape without "
            f"its trailing class axis of size 1; got predictions.shape={given[0]} and targets.shape={given[1]}."
        )
    return predictions, targets


def dice_loss(
    predictions,
    targets,
    *,
    class_weights: Optional[jax.Array] = None,
    smooth: float = 1.0,
    alpha: float = 0.5,
    beta: float = 0.5,
    apply_softmax: bool = True,
    reduction: str = "mean",
    ignore_background: bool = False,
    axis: Union[int, Sequence[int], None] = None,
) -> jax.Array:
    r"""Soft Dice (Tversky) loss for segmentation, per class then reduced.

    With :math:`p_{ic}` the predicted and :math:`t_{ic}` the target
    probability of class :math:`c` at location :math:`i`,
    :math:`I_c = \sum_i p_{ic} t_{ic}`, :math:`P_c = \sum_i p_{ic}`,
    :math:`T_c = \sum_i t_{ic}`:

    .. math::
      \ell_c = 1 - \frac{I_c + s}{I_c + \alpha (P_c - I_c) + \beta (T_c - I_c) + s}

    :math:`\alpha = \beta = \tfrac12` is the Dice loss; other values give
    the Tversky loss (:math:`\alpha` weighs false positives, :math:`\beta`
    false negatives). The per-class losses are multiplied by
    ``class_weights`` and averaged or summed over classes.

    References:
      F. Milletari et al., `V-Net <https://arxiv.org/abs/1606.04797>`_, 2016;
      S. Salehi et al., `Tversky loss function for image segmentation
      <https://arxiv.org/abs/1706.05721>`_, 2017.

    Args:
      predictions: logits ``[batch, *spatial, num_classes]`` (probabilities
        if ``apply_softmax=False``). With one class the sigmoid is used; a
        binary input may leave that class axis out (``[batch, *spatial]``).
      targets: one-hot (or soft) targets, same shape; binary targets may
        also leave out their class axis of size 1.
      class_weights: optional ``[num_classes]`` weights of the classes.
      smooth: additive smoothing of numerator and denominator (>= 0).
      alpha: weight of false positives (>= 0).
      beta: weight of false negatives (>= 0).
      apply_softmax: map logits to probabilities (softmax, or sigmoid for one
        class). If False, multi-class predictions must sum to 1 (checked when
        the values are concrete).
      reduction: ``"mean"`` or ``"sum"`` over classes, or ``"none"``.
      ignore_background: drop class 0 before reducing. With a single class
        there is no background channel (it is the foreground probability),
        so nothing is dropped, as in Optax.
      axis: the axes summed over; default all but the first and last.

    Returns:
      ``[batch]`` losses, or ``[batch, num_classes]`` with ``reduction="none"``.
    """
    check_one_of("reduction", reduction, _REDUCTIONS)
    check_non_negative("smooth", smooth)
    check_non_negative("alpha", alpha)
    check_non_negative("beta", beta)
    predictions = _checks.as_float(predictions, "predictions")
    targets = jnp.asarray(targets)
    predictions, targets = _with_class_axis(predictions, targets)
    if predictions.ndim == 0:
        raise ValueError("predictions must have a class axis, got a scalar.")
    num_classes = predictions.shape[-1]
    if class_weights is not None:
        class_weights = jnp.asarray(class_weights)
        if class_weights.shape != (num_classes,):
            raise ValueError(
                f"class_weights must have shape ({num_classes},) to match predictions.shape="
                f"{predictions.shape}, got class_weights.shape={class_weights.shape}."
            )
    if axis is None:
        axes = tuple(range(1, predictions.ndim - 1))
    else:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)

    work = _checks.upcast(predictions)
    probs = _class_probabilities(work, apply_softmax)
    t = targets.astype(work.dtype)
    intersection = jnp.sum(probs * t, axis=axes)
    predicted = jnp.sum(probs, axis=axes)
    target_volume = jnp.sum(t, axis=axes)
    denominator = intersection + alpha * (predicted - intersection) + beta * (target_volume - intersection) + smooth
    per_class = 1.0 - (intersection + smooth) / denominator
    # One class is a binary problem whose channel is the foreground: keep it.
    if ignore_background and num_classes > 1:
        per_class = per_class[..., 1:]
        if class_weights is not None:
            class_weights = class_weights[1:]
    if class_weights is not None:
        per_class = per_class * class_weights.astype(per_class.dtype)
    if reduction == "mean":
        per_class = jnp.mean(per_class, axis=-1)
    elif reduction == "sum":
        per_class = jnp.sum(per_class, axis=-1)
    return per_class.astype(predictions.dtype)


def binary_dice_loss(predictions, targets, *, smooth: float = 1.0, apply_sigmoid: bool = True) -> jax.Array:
    r"""Dice loss of a binary (foreground/background) segmentation.

    With :math:`p_i = \sigma(x_i)` (or the given probabilities),

    .. math::
      \ell = 1 - \frac{2 \sum_i p_i t_i + s}{\sum_i p_i + \sum_i t_i + s}

    References:
      F. Milletari et al., `V-Net <https://arxiv.org/abs/1606.04797>`_, 2016.

    Args:
      predictions: logits (probabilities if ``apply_sigmoid=False``) of
        shape ``[batch, *spatial]`` or ``[batch, *spatial, 1]``.
      targets: binary targets of the same shape, or of the other of these
        two shapes.
      smooth: additive smoothing (>= 0).
      apply_sigmoid: map logits to probabilities with the sigmoid.

    Returns:
      The losses, shape ``[batch]``.
    """
    predictions = _checks.as_float(predictions, "predictions")
    targets = jnp.asarray(targets)
    if predictions.ndim == targets.ndim:
        _checks.check_same_shape("predictions", predictions, "targets", targets)
        if predictions.ndim == 0 or predictions.shape[-1] != 1:
            predictions = predictions[..., None]
            targets = targets[..., None]
    # Otherwise one of them already lacks the class axis: dice_loss adds it.
    return dice_loss(predictions, targets, smooth=smooth, apply_softmax=apply_sigmoid)


def multiclass_generalized_dice_loss(
    predictions, targets, *, smooth: float = 1.0, apply_softmax: bool = True, ignore_background: bool = False
) -> jax.Array:
    r"""Generalised Dice loss, with classes weighted by inverse squared volume.

    With :math:`V_c = \sum t_{ic}` summed over the batch and spatial axes,
    :math:`w_c = 1 / (V_c^2 + \varepsilon)` normalised to
    :math:`\tilde w_c = C\, w_c / \sum_{c'} w_{c'}`, and :math:`\ell_c` the
    per-class Dice loss of :func:`dice_loss`,

    .. math::
      \ell = \operatorname{mean}_{b} \operatorname{mean}_{c} \tilde w_c \ell_{bc}

    so rare classes count as much as frequent ones.

    References:
      C. Sudre et al., `Generalised Dice overlap as a deep learning loss
      function for highly unbalanced segmentations
      <https://arxiv.org/abs/1707.03237>`_, 2017.

    Args:
      predictions: logits ``[batch, *spatial, num_classes]``.
      targets: one-hot targets, same shape.
      smooth: additive smoothing (>= 0).
      apply_softmax: map logits to probabilities with the softmax.
      ignore_background: drop class 0 (its weight still counts in the
        normalisation); a single class is kept, as in :func:`dice_loss`.

    Returns:
      The scalar loss, averaged over batch and classes.
    """
    predictions = _checks.as_float(predictions, "predictions")
    targets = jnp.asarray(targets)
    _checks.check_same_shape("predictions", predictions, "targets", targets)
    if predictions.ndim == 0:
        raise ValueError("predictions must have a class axis, got a scalar.")
    num_classes = predictions.shape[-1]
    work_dtype = _checks.compute_dtype(predictions.dtype)
    class_volume = jnp.sum(targets.astype(work_dtype), axis=tuple(range(predictions.ndim - 1)))
    weights = 1.0 / (jnp.square(class_volume) + _GENERALIZED_DICE_EPSILON)
    weights = num_classes * weights / jnp.sum(weights)
    per_example = dice_loss(
        predictions.astype(work_dtype),
        targets,
        class_weights=weights,
        smooth=smooth,
        apply_softmax=apply_softmax,
        ignore_background=ignore_background,
    )
    return jnp.mean(per_example).astype(predictions.dtype)
