"""Clipping updates by value or norm: elementwise, per block, globally, per unit, per example."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp

from optcore import validate, base, numerics, tree_utils

ClipState = base.EmptyState
ClipByGlobalNormState = base.EmptyState
AdaptiveGradClipState = base.EmptyState


def clip(max_delta: Union[float, jax.Array]) -> base.GradientTransformation:
    r"""Clips every update coordinate to the interval :math:`[-\delta, \delta]`.

    .. math::
        u_i \leftarrow \min(\max(u_i, -\delta), \delta)

    Args:
      max_delta: the largest absolute value :math:`\delta` let through.
    """
    validate.check_non_negative("max_delta", max_delta)

    def update_fn(updates, state, params=None):
        del params
        # In the updates' dtype, as with a Python-float bound (a float32 array
        # bound would promote bf16 updates to float32).
        updates = jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta).astype(g.dtype), updates)
        return updates, state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def clip_by_block_rms(threshold: float) -> base.GradientTransformation:
    r"""Rescales each leaf (block) so its root mean square is at most ``threshold``.

    .. math::
        u \leftarrow \frac{u}{\max\left(1, \mathrm{rms}(u) / \tau\right)},
        \qquad \mathrm{rms}(u) = \sqrt{\tfrac{1}{n}\textstyle\sum_i |u_i|^2}

    Used as the update clipping of Adafactor (Shazeer & Stern, `Adafactor:
    Adaptive Learning Rates with Sublinear Memory Cost
    <https://arxiv.org/abs/1804.04235>`_, 2018).

    Args:
      threshold: the largest per-block rms :math:`\tau` let through.
    """
    validate.check_range("threshold", threshold, low=0.0, low_inclusive=False)

    def clip_block(u):
        denominator = jnp.maximum(1.0, jnp.sqrt(jnp.mean(numerics.abs_sq(u))) / threshold)
        return u / denominator.astype(u.dtype)

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(clip_block, updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def clip_by_global_norm(max_norm: float) -> base.GradientTransformation:
    r"""Rescales all updates together so their global l2 norm is at most ``max_norm``.

    .. math::
        u \leftarrow u \cdot \frac{c}{\max(\|u\|_2, c)}

    Pascanu et al., `On the difficulty of training Recurrent Neural Networks
    <https://arxiv.org/abs/1211.5063>`_, 2012.

    Args:
      max_norm: the largest global norm :math:`c` let through.
    """
    validate.check_non_negative("max_norm", max_norm)

    def update_fn(updates, state, params=None):
        del params
        g_norm = tree_utils.tree_norm(updates)
        # One scalar factor for all leaves, 1 when the norm is within bounds
        # (the updates then pass unchanged). A multiplication by a scalar is
        # fused into every consumer of the clipped updates (Adam's mu and nu
        # loops), whereas a per-leaf division is not duplicated there and got
        # written out as a clipped copy of every small leaf.
        trigger = g_norm < max_norm
        scale = jnp.where(trigger, 1.0, max_norm / jnp.where(trigger, 1.0, g_norm))

        def clip_leaf(t):
            # Exact when ``scale`` is 1: the product then rounds to ``t`` itself.
            return t * scale.astype(t.dtype)

        return jax.tree.map(clip_leaf, updates), state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def unitwise_norm(x: jax.Array, axis: Optional[Union[int, Sequence[int]]] = None) -> jax.Array:
    r"""The l2 norm of each unit (output neuron) of ``x``, broadcast back to ``x.shape``.

    Without ``axis`` the unit is chosen from the rank: scalars and vectors are
    one unit; matrices (``[in, out]``) and 3-d multi-head kernels reduce over
    axis 0; convolution kernels, 4-d (``HWIO``) and 5-d (``DHWIO``), over every
    axis but the output's (the last).

    .. math::
        \|x\|_{\text{unit}} = \sqrt{\textstyle\sum_{i \in \text{unit}} |x_i|^2}

    Brock et al., `High-Performance Large-Scale Image Recognition Without
    Normalization <https://arxiv.org/abs/2102.06171>`_, 2021.

    Args:
      x: an array.
      axis: the axes to reduce over; ``None`` picks them from ``x.ndim``.
    """
    if axis is None:
        if jnp.squeeze(x).ndim <= 1:
            squared = jnp.sum(numerics.abs_sq(x), keepdims=True)
        elif x.ndim in (2, 3):
            squared = jnp.sum(numerics.abs_sq(x), axis=0, keepdims=True)
        elif x.ndim in (4, 5):
            squared = jnp.sum(numerics.abs_sq(x), axis=tuple(range(x.ndim - 1)), keepdims=True)
        else:
            raise ValueError(
                f"unitwise_norm cannot choose the unit axes of a {x.ndim}-d array of "
                f"shape {x.shape}: pass `axis` explicitly."
            )
    else:
        squared = jnp.sum(numerics.abs_sq(x), axis=axis, keepdims=True)
    return jnp.broadcast_to(jnp.sqrt(squared), x.shape)


def unitwise_clip(
    g_norm: jax.Array,
    max_norm: jax.Array,
    grad: jax.Array,
    div_eps: float = 1e-6,
) -> jax.Array:
    r"""Rescales the units of ``grad`` whose norm exceeds ``max_norm``.

    .. math::
        g \leftarrow \begin{cases} g \cdot m / \max(\|g\|, \epsilon) & \|g\| > m \\
        g & \text{otherwise} \end{cases}

    Args:
      g_norm: the unit norms of ``grad`` (from :func:`unitwise_norm`).
      max_norm: the largest unit norm :math:`m` let through (same shape).
      grad: the gradient to clip.
      div_eps: :math:`\epsilon`, guards the division.
    """
    clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
    return jnp.where(g_norm > max_norm, clipped, grad)


def adaptive_grad_clip(
    clipping: float,
    eps: float = 1e-3,
    axis: Optional[Union[int, Sequence[int]]] = None,
) -> base.GradientTransformation:
    r"""Adaptive gradient clipping (AGC): clips each unit relative to its param norm.

    .. math::
        g \leftarrow \begin{cases} \lambda \frac{\max(\|\theta\|, \epsilon)}{\|g\|} g
        & \|g\| > \lambda \max(\|\theta\|, \epsilon) \\ g & \text{otherwise}\end{cases}

    with unit-wise norms (:func:`unitwise_norm`). Brock et al.,
    `High-Performance Large-Scale Image Recognition Without Normalization
    <https://arxiv.org/abs/2102.06171>`_, 2021.

    Args:
      clipping: :math:`\lambda`, the largest ratio of gradient to param norm.
      eps: :math:`\epsilon`, the smallest param norm used (so zero-initialised
        params can still move).
      axis: the axes of a unit; ``None`` picks them from each leaf's rank.
    """
    validate.check_non_negative("clipping", clipping)
    validate.check_non_negative("eps", eps)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        g_norm = jax.tree.map(lambda g: unitwise_norm(g, axis), updates)
        p_norm = jax.tree.map(lambda p: unitwise_norm(p, axis), params)
        max_norm = jax.tree.map(lambda n: clipping * jnp.maximum(n, eps), p_norm)
        # In the dtype of updates and params promoted, as with Python-float
        # ``clipping`` and ``eps`` (float32 arrays would promote bf16 to float32).
        updates = jax.tree.map(
            lambda n, m, g, p: unitwise_clip(n, m, g).astype(jnp.result_type(g, p)), g_norm, max_norm, updates, params
        )
        return updates, state

    return base.GradientTransformation(base.init_empty_state, update_fn)


def _check_batched(grads: Sequence[jax.Array], fn_name: str) -> int:
    """The shared batch size of ``grads`` (a list of arrays with a leading batch axis)."""
    if not grads:
        raise ValueError(f"{fn_name} expects a non-empty list of per-example gradients.")
    batch_size = grads[0].shape[0] if grads[0].ndim else None
    if batch_size is None or any(g.ndim == 0 or g.shape[0] != batch_size for g in grads):
        raise ValueError(
            f"{fn_name} expects every gradient to have the same batch dimension on "
            f"axis 0, got shapes {[tuple(g.shape) for g in grads]}."
        )
    return batch_size


def _clip_and_sum(grads: Sequence[jax.Array], l2_norm_clip) -> tuple[list[jax.Array], jax.Array]:
    """Clips each example's joint norm over ``grads`` to ``l2_norm_clip``, sums over the batch."""
    squared = sum(jnp.sum(numerics.abs_sq(g).reshape(g.shape[0], -1), axis=1) for g in grads)
    norms = jnp.sqrt(squared)
    # 0/0 (a zero gradient with a zero bound) keeps the example as it is.
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
    num_clipped = jnp.sum(norms > l2_norm_clip).astype(jnp.int32)
    summed = [jnp.tensordot(multipliers.astype(_clipped_dtype(g)), g, axes=(0, 0)) for g in grads]
    return summed, num_clipped


def _clipped_dtype(g: jax.Array):
    # A floating gradient keeps its dtype; an integer one is clipped in float32, as in
    # Optax (cast to the integers, the multipliers in [0, 1] would truncate to 0).
    return g.dtype if jnp.issubdtype(g.dtype, jnp.inexact) else jnp.float32


def per_example_global_norm_clip(
    grads: list[jax.Array], l2_norm_clip: float
) -> tuple[list[jax.Array], jax.Array]:
    r"""Clips each example's gradient to a global l2 norm, then sums over the batch.

    .. math::
        \sum_{i=1}^{B} g_i \min\left(1, \frac{C}{\|g_i\|_2}\right)

    where :math:`\|g_i\|_2` is taken over all arrays of example :math:`i`.
    The clipping step of DP-SGD (Abadi et al., `Deep Learning with Differential
    Privacy <https://arxiv.org/abs/1607.00133>`_, 2016). Not a transformation.

    Args:
      grads: a list of arrays, each with the batch on axis 0.
      l2_norm_clip: :math:`C`, the largest per-example norm.

    Returns:
      The list of clipped gradients summed over the batch, and the number of
      examples that were clipped (int32).
    """
    validate.check_non_negative("l2_norm_clip", l2_norm_clip)
    _check_batched(grads, "per_example_global_norm_clip")
    return _clip_and_sum(grads, l2_norm_clip)


def per_example_layer_norm_clip(
    grads: list[jax.Array], global_l2_norm_clip: float, uniform: bool = True
) -> tuple[list[jax.Array], list[jax.Array]]:
    r"""Clips each example's gradient layer by layer, then sums over the batch.

    Layer :math:`l` is clipped to :math:`C_l` with :math:`\sum_l C_l^2 = C^2`:
    :math:`C_l = C / \sqrt{L}` when ``uniform``, else
    :math:`C_l = C \sqrt{n_l / \sum_k n_k}` (:math:`n_l` the layer size).
    McMahan et al., `A General Approach to Adding Differential Privacy to
    Iterative Training Procedures <https://arxiv.org/abs/1812.06210>`_, 2018.
    Not a transformation.

    Args:
      grads: a list of arrays (one per layer), each with the batch on axis 0.
      global_l2_norm_clip: :math:`C`, the overall norm bound.
      uniform: split the bound equally between layers, else by layer size.

    Returns:
      The list of clipped gradients summed over the batch, and the list of the
      number of examples clipped in each layer (int32).
    """
    validate.check_non_negative("global_l2_norm_clip", global_l2_norm_clip)
    _check_batched(grads, "per_example_layer_norm_clip")
    num_layers = len(grads)
    if uniform:
        thresholds = [global_l2_norm_clip / jnp.sqrt(num_layers)] * num_layers
    else:
        total = sum(g[0].size for g in grads)
        thresholds = [global_l2_norm_clip * jnp.sqrt(g[0].size / total) for g in grads]
    summed, counts = [], []
    for g, threshold in zip(grads, thresholds):
        (layer_sum,), layer_count = _clip_and_sum([g], threshold)
        summed.append(layer_sum)
        counts.append(layer_count)
    return summed, counts
