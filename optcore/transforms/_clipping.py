"""Clipping updates by value or norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from optcore import validate, base, tree_utils

ClipByGlobalNormState = base.EmptyState


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
        # One scalar factor for all leaves: the clipped gradient is never
        # written out separately from the scaled one.
        trigger = g_norm < max_norm
        factor = jnp.where(trigger, 1.0, max_norm / jnp.where(trigger, 1.0, g_norm))
        updates = jax.tree.map(lambda t: (t * factor).astype(t.dtype), updates)
        return updates, state

    return base.GradientTransformation(base.init_empty_state, update_fn)
