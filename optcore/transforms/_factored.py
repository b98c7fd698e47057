"""Adafactor's factored second-moment estimate."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from optcore import base, numerics, tree_utils, validate
from optcore.kit import f32, hyperparameter_dtype, map_params, static_args


class FactoredState(NamedTuple):
    """State of :func:`scale_by_factored_rms`.

    A factored leaf keeps its row and column statistics in ``v_row``/``v_col``
    (and a placeholder of shape ``(1,)`` in ``v``); any other leaf keeps its full
    statistic in ``v`` (and placeholders in ``v_row``/``v_col``).
    """

    count: jax.Array  # shape=(), dtype=int32
    v_row: base.Updates
    v_col: base.Updates
    v: base.Updates


def _decay_rate_pow(i, exponent: float = 0.8):
    r"""Adafactor's increasing decay :math:`\hat\beta_{2,t} = 1 - (i + 1)^{-c}`."""
    t = jnp.asarray(i, jnp.float32) + 1.0
    return 1.0 - t ** (-f32(exponent))


def _factored_dims(shape, factored: bool, min_dim_size_to_factor: int) -> Optional[tuple[int, int]]:
    """The two largest axes ``(second, largest)`` if the leaf is factored, else None."""
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _check_against_state(updates, state: FactoredState, factored: bool, min_dim_size_to_factor: int) -> None:
    """The path of the first gradient leaf whose shape differs from the one its statistics were built for.

    Without the params, the expected shape of a factored leaf is only known
    through its row and column statistics, which drop one axis each.
    """
    validate.check_tree_match(updates, state.v, shapes=False)
    leaves = jax.tree_util.tree_flatten_with_path(updates)[0]
    treedef = jax.tree.structure(updates)
    for (path, g), row, col, v in zip(
        leaves, treedef.flatten_up_to(state.v_row), treedef.flatten_up_to(state.v_col), treedef.flatten_up_to(state.v)
    ):
        where = jax.tree_util.keystr(path)
        dims = _factored_dims(g.shape, factored, min_dim_size_to_factor)
        if dims is None:
            if v.shape != g.shape:
                raise ValueError(f"{where}: state has shape {tuple(v.shape)}, gradient has shape {tuple(g.shape)}.")
            continue
        # A transposed factored leaf has the same statistics' shapes: only
        # apply_updates (against the params) can tell it apart.
        d0, d1 = dims
        reduced = lambda axis: tuple(n for i, n in enumerate(g.shape) if i != axis)  # noqa: E731
        for field, have, want in (("v_row", row.shape, reduced(d1)), ("v_col", col.shape, reduced(d0))):
            if tuple(have) != want:
                raise ValueError(
                    f"{where}: state {field} has shape {tuple(have)}, but a gradient of shape {tuple(g.shape)} "
                    f"needs {field} of shape {want} (the gradient does not match the params the state was built from)."
                )


@static_args("step_offset", "min_dim_size_to_factor")
def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float = 1e-30,
    decay_rate_fn: Callable[[jax.Array, float], jax.Array] = _decay_rate_pow,
) -> base.GradientTransformation:
    r"""Rescales updates by a factored estimate of the root mean square gradient.

    With :math:`\hat\beta_t` = ``decay_rate_fn(t - step_offset, decay_rate)``
    and :math:`G_t = g_t^2 + \epsilon`: for a matrix-like leaf (the two largest
    axes at least ``min_dim_size_to_factor``), with row and column means
    :math:`R_t = \hat\beta_t R_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{col}(G_t)` and
    :math:`C_t = \hat\beta_t C_{t-1} + (1-\hat\beta_t)\,\mathrm{mean}_{row}(G_t)`,

    .. math::
        u_t = g_t \Big/ \sqrt{\frac{R_t\, C_t}{\mathrm{mean}(R_t)}}

    and for any other leaf :math:`V_t = \hat\beta_t V_{t-1} + (1-\hat\beta_t) G_t`,
    :math:`u_t = g_t / \sqrt{V_t}`.

    Shazeer & Stern, `Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost <https://arxiv.org/abs/1804.04235>`_, 2018.

    Args:
      factored: factor the second moment of matrix-like leaves.
      decay_rate: the exponent :math:`c` given to ``decay_rate_fn``.
      step_offset: subtracted from the step count before ``decay_rate_fn``.
      min_dim_size_to_factor: factor only leaves whose two largest axes are at
        least this long.
      epsilon: :math:`\epsilon`, added to the squared gradients.
      decay_rate_fn: ``(step, decay_rate) -> decay``; the default is
        :math:`1 - (step+1)^{-decay\_rate}`.
    """
    validate.check_non_negative("epsilon", epsilon)
    validate.check_non_negative("decay_rate", decay_rate)
    if not callable(decay_rate_fn):
        raise TypeError("decay_rate_fn must be a function (step, decay_rate) -> decay.")
    if int(min_dim_size_to_factor) < 0:
        raise ValueError(f"min_dim_size_to_factor must be >= 0, got {min_dim_size_to_factor!r}.")

    def init_fn(params):
        def leaf_state(p):
            dims = _factored_dims(p.shape, factored, min_dim_size_to_factor)
            # A fresh buffer per unused slot: one array shared by two state leaves
            # cannot be donated (XLA: "donate the same buffer twice").
            placeholder = lambda: jnp.zeros((1,), p.dtype)  # noqa: E731
            if dims is None:
                return placeholder(), placeholder(), tree_utils.state_zeros_like(p)
            d0, d1 = dims
            # The param's zeros reduced like the moments they stand for, so that the
            # factored moments take the sharding of the param's remaining axes (under jit too).
            zeros = tree_utils.state_zeros_like(p)
            return jnp.sum(zeros, axis=d1), jnp.sum(zeros, axis=d0), placeholder()

        # One field at a time through map_params: a factored vector or a placeholder replaces a
        # variable wrapping its param (flax.nnx), whose sharding metadata names the param's axes.
        field = lambda i: map_params(lambda p: leaf_state(p)[i], params)  # noqa: E731
        return FactoredState(count=jnp.zeros([], jnp.int32), v_row=field(0), v_col=field(1), v=field(2))

    def update_fn(updates, state, params=None):
        hyper_dtype = hyperparameter_dtype(updates)
        if params is not None:
            validate.check_tree_match(updates, params, against="params")
        else:
            _check_against_state(updates, state, factored, min_dim_size_to_factor)
        del params  # the shapes come from the updates
        decay_t = jnp.asarray(decay_rate_fn(state.count - step_offset, decay_rate), jnp.float32)
        eps_ = f32(epsilon, hyper_dtype)

        def leaf_update(g, v_row, v_col, v):
            g_sq = numerics.abs_sq(g) + eps_
            dims = _factored_dims(g.shape, factored, min_dim_size_to_factor)
            if dims is None:
                new_v = decay_t * v + (1 - decay_t) * g_sq
                return (g * jax.lax.rsqrt(new_v)).astype(g.dtype), v_row, v_col, new_v.astype(v.dtype)
            d0, d1 = dims
            new_row = decay_t * v_row + (1 - decay_t) * jnp.mean(g_sq, axis=d1)
            new_col = decay_t * v_col + (1 - decay_t) * jnp.mean(g_sq, axis=d0)
            # Removing axis d1 shifts d0 left when d0 > d1; the row statistic's
            # remaining copy of axis d0 is where its mean is taken.
            row_axis = d0 - 1 if d0 > d1 else d0
            row_mean = jnp.mean(new_row, axis=row_axis, keepdims=True)
            row_factor = jax.lax.rsqrt(new_row / row_mean)
            col_factor = jax.lax.rsqrt(new_col)
            u = g * jnp.expand_dims(row_factor, d1) * jnp.expand_dims(col_factor, d0)
            return u.astype(g.dtype), new_row.astype(v_row.dtype), new_col.astype(v_col.dtype), v

        leaves, treedef = jax.tree.flatten(updates)
        results = [
            leaf_update(g, r, c, v)
            for g, r, c, v in zip(
                leaves, treedef.flatten_up_to(state.v_row), treedef.flatten_up_to(state.v_col), treedef.flatten_up_to(state.v)
            )
        ]
        unflatten = lambda i: jax.tree.unflatten(treedef, [r[i] for r in results])  # noqa: E731
        return unflatten(0), FactoredState(
            count=numerics.safe_increment(state.count), v_row=unflatten(1), v_col=unflatten(2), v=unflatten(3)
        )

    return base.GradientTransformation(init_fn, update_fn)
