"""Connectionist temporal classification (CTC) loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optcore_losses import _checks


def ctc_loss_with_forward_probs(
    logits,
    logit_paddings,
    labels,
    label_paddings,
    *,
    blank_id: int = 0,
    log_epsilon: float = -1e5,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""CTC loss and the forward (alpha) log-probabilities.

    The label sequence :math:`l_{1..N}` is extended with blanks between
    labels. :math:`\alpha^{\phi}_t(n)` is the log-probability of having
    emitted :math:`l_{1..n}` by frame :math:`t` and sitting on a blank after
    it, :math:`\alpha^{e}_t(n)` of sitting on label :math:`l_n` itself.
    With :math:`\oplus` = ``logaddexp`` and :math:`y_t` the per-frame
    log-softmax:

    .. math::
      \alpha^{e}_t(n) &= \big(\alpha^{\phi}_{t-1}(n-1) \oplus \alpha^{e}_{t-1}(n)
        \oplus [l_n \ne l_{n-1}]\,\alpha^{e}_{t-1}(n-1)\big) + y_t(l_n) \\
      \alpha^{\phi}_t(n) &= \big(\alpha^{\phi}_{t-1}(n) \oplus \alpha^{e}_{t-1}(n)\big) + y_t(\text{blank})

    and the loss is :math:`-\big(\alpha^{\phi}_T(N) \oplus \alpha^{e}_T(N)\big)`; the
    returned blank state of the last frame holds that sum
    :math:`\alpha^{\phi}_T(n) \oplus \alpha^{e}_T(n)` for every :math:`n \ge 1`.
    Padded frames copy the previous state. ``log_epsilon`` stands for
    :math:`\log 0` so no ``-inf`` enters the recursion.

    References:
      A. Graves et al., `Connectionist Temporal Classification: Labelling
      Unsegmented Sequence Data with Recurrent Neural Networks
      <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, 2006.

    Args:
      logits: floating ``[batch, frames, num_classes]`` logits.
      logit_paddings: ``[batch, frames]``, 1.0 on padded frames.
      labels: integer ``[batch, max_label_length]`` labels (not the blank).
      label_paddings: ``[batch, max_label_length]``, 1.0 on padded labels;
        padding must be at the end.
      blank_id: the class index of the blank.
      log_epsilon: the stand-in for :math:`\log 0`.

    Returns:
      ``(loss, logalpha_blank, logalpha_nonblank)``: the ``[batch]`` losses,
      the ``[frames, batch, max_label_length + 1]`` blank-state and the
      ``[frames, batch, max_label_length]`` label-state forward
      log-probabilities.
    """
    logits = _checks.as_float(logits, "logits")
    logit_paddings = jnp.asarray(logit_paddings)
    labels = jnp.asarray(labels)
    label_paddings = jnp.asarray(label_paddings)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape [batch, frames, num_classes], got logits.shape={logits.shape}.")
    batch, frames, num_classes = logits.shape
    if logit_paddings.shape != (batch, frames):
        raise ValueError(
            f"logit_paddings must have shape {(batch, frames)} to match logits.shape={logits.shape}, "
            f"got logit_paddings.shape={logit_paddings.shape}."
        )
    if labels.ndim != 2 or labels.shape[0] != batch:
        raise ValueError(
            f"labels must have shape [batch, max_label_length] with batch={batch} (logits.shape={logits.shape}), "
            f"got labels.shape={labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}.")
    if label_paddings.shape != labels.shape:
        raise ValueError(
            f"label_paddings and labels must have the same shape, got label_paddings.shape="
            f"{label_paddings.shape} and labels.shape={labels.shape}."
        )
    if not 0 <= blank_id < num_classes:
        raise ValueError(f"blank_id must be in [0, {num_classes}), got {blank_id}.")
    max_label_length = labels.shape[1]
    if max_label_length == 0:
        raise ValueError("labels must have at least one column (max_label_length >= 1); pad empty sequences.")

    work_dtype = _checks.compute_dtype(logits.dtype)
    log_probs = jax.nn.log_softmax(logits.astype(work_dtype), axis=-1)
    label_lengths = max_label_length - jnp.sum(label_paddings, axis=1).astype(jnp.int32)
    # Repeated consecutive labels need a blank between them: no direct move.
    repeats = jnp.pad((labels[:, :-1] == labels[:, 1:]).astype(work_dtype), ((0, 0), (0, 1)))

    blank_log_probs = jnp.transpose(log_probs[:, :, blank_id : blank_id + 1], (1, 0, 2))  # [T, B, 1]
    label_log_probs = jnp.take_along_axis(log_probs, labels[:, None, :], axis=2)  # [B, T, N]
    label_log_probs = jnp.transpose(label_log_probs, (1, 0, 2))  # [T, B, N]
    frame_padding = jnp.transpose(logit_paddings.astype(work_dtype))[:, :, None]  # [T, B, 1]

    log_eps = jnp.asarray(log_epsilon, dtype=work_dtype)
    init_blank = jnp.full((batch, max_label_length + 1), log_eps).at[:, 0].set(0.0)
    init_label = jnp.full((batch, max_label_length), log_eps)

    def step(carry, frame):
        prev_blank, prev_label = carry
        label_lp, blank_lp, pad = frame
        # Label n is reached by staying on it, from the blank after label n-1,
        # or straight from label n-1 unless the two are equal (then a blank
        # must separate them: log_eps blocks the move).
        from_prev_label = jnp.concatenate(
            [jnp.full((batch, 1), log_eps), prev_label[:, :-1] + log_eps * repeats[:, :-1]], axis=1
        )
        next_label = jnp.logaddexp(jnp.logaddexp(prev_blank[:, :-1], prev_label), from_prev_label) + label_lp
        # The blank after n labels is reached by staying on it or from label n.
        next_blank = prev_blank + blank_lp
        next_blank = next_blank.at[:, 1:].set(jnp.logaddexp(next_blank[:, 1:], prev_label + blank_lp))
        next_label = pad * prev_label + (1.0 - pad) * next_label
        next_blank = pad * prev_blank + (1.0 - pad) * next_blank
        return (next_blank, next_label), (next_blank, next_label)

    _, (logalpha_blank, logalpha_label) = jax.lax.scan(
        step, (init_blank, init_label), (label_log_probs, blank_log_probs, frame_padding)
    )
    # At the last frame a sequence may end on its last label or on the blank
    # after it: the blank state of the last frame absorbs the label state, so
    # the likelihood of l_{1..n} is logalpha_blank[-1, :, n].
    logalpha_blank = logalpha_blank.at[-1, :, 1:].set(jnp.logaddexp(logalpha_blank[-1, :, 1:], logalpha_label[-1]))
    log_likelihood = jnp.take_along_axis(logalpha_blank[-1], label_lengths[:, None], axis=1)[:, 0]
    loss = -log_likelihood
    out = logits.dtype
    return loss.astype(out), logalpha_blank.astype(out), logalpha_label.astype(out)


def ctc_loss(
    logits,
    logit_paddings,
    labels,
    label_paddings,
    *,
    blank_id: int = 0,
    log_epsilon: float = -1e5,
) -> jax.Array:
    r"""CTC loss: negative log-likelihood of the labels under all alignments.

    .. math::
      \ell = -\log \sum_{\pi \in \mathcal{B}^{-1}(l)} \prod_t y_t(\pi_t)

    where :math:`\mathcal{B}` removes repeats then blanks from a frame-level
    path :math:`\pi`; computed with the forward recursion of
    :func:`ctc_loss_with_forward_probs`.

    References:
      A. Graves et al., `Connectionist Temporal Classification: Labelling
      Unsegmented Sequence Data with Recurrent Neural Networks
      <https://www.cs.toronto.edu/~graves/icml_2006.pdf>`_, 2006.

    Args:
      logits: floating ``[batch, frames, num_classes]`` logits.
      logit_paddings: ``[batch, frames]``, 1.0 on padded frames.
      labels: integer ``[batch, max_label_length]`` labels.
      label_paddings: ``[batch, max_label_length]``, 1.0 on padded labels.
      blank_id: the class index of the blank.
      log_epsilon: the stand-in for :math:`\log 0`.

    Returns:
      The ``[batch]`` losses.
    """
    loss, _, _ = ctc_loss_with_forward_probs(
        logits, logit_paddings, labels, label_paddings, blank_id=blank_id, log_epsilon=log_epsilon
    )
    return loss
