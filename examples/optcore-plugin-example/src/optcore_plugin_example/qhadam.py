"""QHAdam: quasi-hyperbolic Adam, written against optcore's public API only (its author's kit)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

import optcore
from optcore import kit


class ScaleByQHAdamState(NamedTuple):
    count: jax.Array
    mu: optcore.Updates
    nu: optcore.Updates


def scale_by_qhadam(
    b1: float = 0.999, b2: float = 0.999, nu1: float = 0.7, nu2: float = 1.0, eps: float = 1e-8
) -> optcore.GradientTransformation:
    r"""Rescales updates with QHAdam's quasi-hyperbolic moments.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \\
        u_t = \frac{(1-\nu_1) g_t + \nu_1 \hat m_t}{\sqrt{(1-\nu_2) g_t^2 + \nu_2 \hat v_t} + \epsilon}

    with :math:`\hat m_t = m_t/(1-\beta_1^t)` and :math:`\hat v_t = v_t/(1-\beta_2^t)`. With
    :math:`\nu_1 = \nu_2 = 1` this is Adam.

    Ma & Yarats, `Quasi-hyperbolic momentum and Adam for deep learning
    <https://arxiv.org/abs/1810.06801>`_, 2019.
    """
    # b1 and b2 are bias-corrected (1 - b**t divides): [0, 1). nu1 and nu2 are weights: [0, 1].
    kit.check_beta("b1", b1)
    kit.check_beta("b2", b2)
    kit.check_decay("nu1", nu1)
    kit.check_decay("nu2", nu2)
    kit.check_non_negative("eps", eps)

    def init_fn(params):
        # state_zeros_like: the moments take the params' shardings, under jax.jit(opt.init) too.
        return ScaleByQHAdamState(
            count=kit.zero_count(),
            mu=optcore.tree_utils.state_zeros_like(params),
            nu=optcore.tree_utils.state_zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        # A gradient that does not match the state fails here naming the path, not in a tree map.
        optcore.validate.check_tree_match(updates, state.mu)
        # Every hyperparameter as a float32 array before any arithmetic with it
        # (``1 - b1`` included): a Python float and an injected array then give
        # the same bits.
        b1_, b2_, nu1_, nu2_, eps_ = (kit.f32(x) for x in (b1, b2, nu1, nu2, eps))
        count = optcore.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: b1_ * m + (1 - b1_) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2_ * v + (1 - b2_) * g * g, state.nu, updates)
        c1 = 1 - b1_ ** count.astype(jnp.float32)
        c2 = 1 - b2_ ** count.astype(jnp.float32)

        def direction(g, m, v):
            numerator = (1 - nu1_) * g + nu1_ * m / c1
            denominator = jnp.sqrt((1 - nu2_) * g * g + nu2_ * v / c2) + eps_
            return (numerator / denominator).astype(g.dtype)

        new_updates = jax.tree.map(direction, updates, mu, nu)
        # The moments keep their dtypes (the params'), e.g. bfloat16.
        return new_updates, ScaleByQHAdamState(count, kit.cast_like(mu, state.mu), kit.cast_like(nu, state.nu))

    return optcore.GradientTransformation(init_fn, update_fn)


def qhadam(
    learning_rate: optcore.ScalarOrSchedule,
    b1: float = 0.999,
    b2: float = 0.999,
    nu1: float = 0.7,
    nu2: float = 1.0,
    eps: float = 1e-8,
) -> optcore.GradientTransformationExtraArgs:
    """QHAdam (see :func:`scale_by_qhadam`) followed by the learning rate."""
    return optcore.chain(
        scale_by_qhadam(b1=b1, b2=b2, nu1=nu1, nu2=nu2, eps=eps),
        optcore.scale_by_learning_rate(learning_rate),
    )
