"""L-BFGS preconditioning: the two-loop recursion over a memory of curvature pairs."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from optcore import base, numerics, tree_utils, validate
from optcore.kit import map_params, static_args
from optcore.tree_utils._tree_math import real_vdot


class ScaleByLBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs`.

    Attributes:
      count: the step count (int32).
      params: the params seen at the previous step.
      updates: the updates (gradients) seen at the previous step.
      diff_params_memory: the last ``memory_size`` differences of params,
        stacked on a leading axis (a circular buffer).
      diff_updates_memory: the matching differences of updates.
      weights_memory: :math:`\\rho_j = 1 / \\langle \\delta w_j, \\delta u_j \\rangle`.
    """

    count: jax.Array
    params: base.Params
    updates: base.Params
    diff_params_memory: base.Params
    diff_updates_memory: base.Params
    weights_memory: jax.Array


def _axpy(alpha, x, y):
    """``alpha * x + y`` leafwise, in the dtype of ``y``."""
    return jax.tree.map(lambda a, b: (alpha * a + b).astype(b.dtype), x, y)


def _row(memory, index):
    return jax.tree.map(lambda m: m[index], memory)


def _set_row(memory, index, value):
    return jax.tree.map(lambda m, v: m.at[index].set(v.astype(m.dtype)), memory, value)


def _weights_dtype(params):
    leaves = jax.tree.leaves(params)
    return jnp.result_type(*leaves) if leaves else jnp.float32


@static_args("memory_size")
def scale_by_lbfgs(memory_size: int = 10, scale_init_precond: bool = True) -> base.GradientTransformation:
    r"""Preconditions the updates by the L-BFGS approximation of the inverse Hessian.

    With :math:`\delta w_j = w_{j+1} - w_j`, :math:`\delta u_j = u_{j+1} - u_j`
    and :math:`\rho_j = 1 / \langle \delta w_j, \delta u_j \rangle` over the last
    :math:`m` steps, the output is :math:`P_k u_k` where

    .. math::
        P_{k,j+1} = V_j^\top P_{k,j} V_j + \rho_j \delta w_j \delta w_j^\top, \quad
        V_j = I - \rho_j \delta u_j \delta w_j^\top, \quad P_{k,k-m} = \gamma_k I

    computed by the two-loop recursion, with
    :math:`\gamma_k = \langle \delta w_{k-1}, \delta u_{k-1}\rangle / \|\delta u_{k-1}\|^2`
    if ``scale_init_precond`` else 1. At the first step, :math:`\gamma_0 =
    \min(1, 1/\|u_0\|)` so the first step stays in the unit ball. Pairs with
    :math:`\langle \delta w, \delta u\rangle = 0` get :math:`\rho = 0` (ignored).
    The sign is kept: chain with a negative learning rate or a line search.

    Nocedal & Wright, *Numerical Optimization*, Algorithms 7.4 and 7.5, 1999;
    Liu & Nocedal, `On the limited memory BFGS method for large scale
    optimization <https://doi.org/10.1007/BF01589116>`_, 1989.

    Args:
      memory_size: :math:`m`, the number of curvature pairs kept.
      scale_init_precond: scale the initial preconditioner by :math:`\gamma_k`.
    """
    validate.check_integer("memory_size", memory_size, 1)

    def init_fn(params):
        # Built once per field: the two memories must not share buffers, or they cannot be donated;
        # from state_zeros_like, so they take the params' shardings under jax.jit(opt.init) too.
        # map_params: a stack replaces a variable wrapping its param (flax.nnx), whose sharding
        # metadata names the param's axes, not the stack's.
        def stack(p):
            zeros = tree_utils.state_zeros_like(p)
            return jnp.broadcast_to(zeros, (memory_size,) + zeros.shape) + jnp.zeros((), zeros.dtype)

        return ScaleByLBFGSState(
            count=jnp.zeros([], jnp.int32),
            params=tree_utils.state_zeros_like(params),
            updates=tree_utils.state_zeros_like(params),
            diff_params_memory=map_params(stack, params),
            diff_updates_memory=map_params(stack, params),
            weights_memory=jnp.zeros(memory_size, _weights_dtype(params)),
        )

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError(base.NO_PARAMS_MSG)
        validate.check_tree_match(updates, state.updates)
        validate.check_tree_match(params, state.params, what="params")
        count = state.count
        index = (count - 1) % memory_size
        is_first = count == 0

        diff_params = jax.tree.map(lambda a, b: a - b, params, state.params)
        diff_updates = jax.tree.map(lambda a, b: a - b, updates, state.updates)
        curvature = real_vdot(diff_params, diff_updates)
        weight = jnp.where(curvature == 0, 0.0, 1.0 / jnp.where(curvature == 0, 1.0, curvature))
        # Nothing is stored at the first step: there is no previous pair.
        weight = jnp.where(is_first, 0.0, weight)
        keep_old = lambda new, old: jnp.where(is_first, old, new)  # noqa: E731
        mem_dw = jax.tree.map(keep_old, _set_row(state.diff_params_memory, index, diff_params), state.diff_params_memory)
        mem_du = jax.tree.map(keep_old, _set_row(state.diff_updates_memory, index, diff_updates), state.diff_updates_memory)
        weights = state.weights_memory.at[index].set(weight.astype(state.weights_memory.dtype))

        # First loop: newest to oldest pair.
        def first_loop(i, carry):
            q, alphas = carry
            j = (index - i) % memory_size
            alpha = weights[j] * real_vdot(_row(mem_dw, j), q)
            return _axpy(-alpha, _row(mem_du, j), q), alphas.at[j].set(alpha)

        q, alphas = lax.fori_loop(0, memory_size, first_loop, (updates, jnp.zeros_like(weights)))

        if scale_init_precond:
            du_norm_sq = real_vdot(diff_updates, diff_updates)
            gamma_later = jnp.where(du_norm_sq > 0, curvature / jnp.where(du_norm_sq > 0, du_norm_sq, 1.0), 1.0)
            gamma_first = jnp.minimum(1.0, 1.0 / jnp.maximum(tree_utils.tree_norm(updates), 1e-30))
            gamma = jnp.where(is_first, gamma_first, gamma_later)
        else:
            gamma = jnp.ones([])
        r = jax.tree.map(lambda x: (gamma * x).astype(x.dtype), q)

        # Second loop: oldest to newest pair.
        def second_loop(i, r):
            j = (index + 1 + i) % memory_size
            beta = weights[j] * real_vdot(_row(mem_du, j), r)
            return _axpy(alphas[j] - beta, _row(mem_dw, j), r)

        direction = lax.fori_loop(0, memory_size, second_loop, r)
        new_state = ScaleByLBFGSState(
            count=numerics.safe_increment(count),
            params=params,
            updates=updates,
            diff_params_memory=mem_dw,
            diff_updates_memory=mem_du,
            weights_memory=weights,
        )
        return direction, new_state

    return base.GradientTransformation(init_fn, update_fn)

