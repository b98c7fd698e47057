"""Adding to the updates: weight decay and momentum traces."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp

from optcore import validate, base, tree_utils
from optcore.transforms._masking import masked

AddDecayedWeightsState = base.EmptyState


class TraceState(NamedTuple):
    """State of :func:`trace`: the momentum buffer, shaped like the params."""

    trace: base.Params


def add_decayed_weights(
    weight_decay: Union[float, jax.Array] = 0.0,
    mask: Optional[Union[Any, Callable[[base.Params], Any]]] = None,
) -> base.GradientTransformation:
    r"""Adds decoupled weight decay: :math:`u \leftarrow u + \lambda \theta`.

    Loshchilov & Hutter, `Decoupled Weight Decay Regularization
    <https://arxiv.org/abs/1711.05101>`_, 2019.

    Args:
      weight_decay: :math:`\lambda`.
      mask: a tree of booleans (or a function of the params returning one)
        selecting the params to decay; ``None`` decays all.
    """
    validate.check_non_negative("weight_decay", weight_decay)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        updates = jax.tree.map(
            lambda g, p: None if g is None else g + weight_decay * p,
            updates,
            params,
            is_leaf=lambda x: x is None,
        )
        return updates, state

    tx = base.GradientTransformation(base.init_empty_state, update_fn)
    if mask is not None:
        return masked(tx, mask)
    return tx


def trace(
    decay: float,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
) -> base.GradientTransformation:
    r"""Momentum: :math:`m \leftarrow g + \beta m`, returning :math:`m`.

    With ``nesterov=True`` the update is :math:`g + \beta m` with the new
    :math:`m` (Sutskever et al., `On the importance of initialization and
    momentum in deep learning <http://proceedings.mlr.press/v28/sutskever13.pdf>`_, 2013).

    Args:
      decay: the momentum coefficient :math:`\beta`.
      nesterov: use Nesterov momentum.
      accumulator_dtype: dtype of the buffer (default: that of the params).
    """
    validate.check_decay("decay", decay)
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    def init_fn(params):
        return TraceState(trace=tree_utils.tree_zeros_like(params, dtype=accumulator_dtype))

    def update_fn(updates, state, params=None):
        del params
        new_trace = jax.tree.map(lambda g, t: g + decay * t, updates, state.trace)
        if nesterov:
            updates = jax.tree.map(lambda g, t: g + decay * t, updates, new_trace)
        else:
            updates = new_trace
        return updates, TraceState(trace=tree_utils.tree_cast(new_trace, accumulator_dtype))

    return base.GradientTransformation(init_fn, update_fn)
