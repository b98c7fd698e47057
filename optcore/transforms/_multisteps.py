"""Gradient accumulation: ``MultiSteps`` (and the older ``apply_every``).

Several micro-batch gradients are averaged into one accumulator and the inner
optimizer steps once per ``k`` micro-batches, which reproduces the step of one
batch ``k`` times larger with the memory of one micro-batch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Protocol, Union

import jax
import jax.numpy as jnp

from optcore import base, numerics, tree_utils, validate
from optcore.kit import static_args
from optcore.tree_utils._tree_math import reduce_leaves


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps`.

    Attributes:
      mini_step: int32 index of the current micro-batch in ``[0, k)``.
      gradient_step: int32 number of inner optimizer steps taken so far.
      inner_opt_state: the state of the wrapped optimizer.
      acc_grads: running mean (or sum) of this step's micro-batch gradients,
        in ``accumulator_dtype``; the only params-sized buffer MultiSteps adds.
      skip_state: what ``should_skip_update_fn`` returned last (``()`` without one).
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: Any
    acc_grads: Any
    skip_state: Any = ()


class ShouldSkipUpdateFunction(Protocol):
    """``f(updates, gradient_step, params) -> (should_skip, info)``.

    ``should_skip`` is a boolean scalar; ``info`` is a pytree stored in
    ``MultiStepsState.skip_state`` (its structure must not change between calls).
    """

    def __call__(self, updates: base.Updates, gradient_step: jax.Array, params: Optional[base.Params]) -> tuple[jax.Array, Any]: ...


def skip_not_finite(
    updates: base.Updates, gradient_step: jax.Array, params: Optional[base.Params]
) -> tuple[jax.Array, dict]:
    """Skips a micro-batch whose gradient has a NaN or Inf entry.

    Args:
      updates: the micro-batch gradient.
      gradient_step: unused (part of the :class:`ShouldSkipUpdateFunction` protocol).
      params: unused.

    Returns:
      ``(should_skip, {"should_skip": ..., "num_not_finite": int32 count})``.
    """
    del gradient_step, params
    count_not_finite = functools.partial(jnp.sum, dtype=jnp.int32)
    counts = reduce_leaves(jax.tree.leaves(updates), lambda x: ~jnp.isfinite(x), count_not_finite)
    num_not_finite = sum(counts) if counts else jnp.zeros([], jnp.int32)
    should_skip = num_not_finite > 0
    return should_skip, dict(should_skip=should_skip, num_not_finite=num_not_finite)


def skip_large_updates(
    updates: base.Updates,
    gradient_step: jax.Array,
    params: Optional[base.Params],
    max_squared_norm: float,
) -> tuple[jax.Array, dict]:
    r"""Skips a micro-batch whose squared global norm is not below ``max_squared_norm``.

    .. math::
        \mathrm{skip} = \lnot\left(\textstyle\sum_i \|u_i\|^2 < c\right)

    written so that a NaN norm is skipped too. Bind ``max_squared_norm`` with
    ``functools.partial`` to get a :class:`ShouldSkipUpdateFunction`.

    Args:
      updates: the micro-batch gradient.
      gradient_step: unused.
      params: unused.
      max_squared_norm: the threshold :math:`c` on :math:`\|u\|^2`.

    Returns:
      ``(should_skip, {"should_skip": ..., "norm_squared": ...})``.
    """
    del gradient_step, params
    leaves = jax.tree.leaves(updates)
    norm_squared = sum(jnp.sum(numerics.abs_sq(x)) for x in leaves) if leaves else jnp.zeros([])
    should_skip = jnp.logical_not(norm_squared < max_squared_norm)
    return should_skip, dict(should_skip=should_skip, norm_squared=norm_squared)


def neutral_updates(like: Any) -> Any:
    """Updates that leave every param bit-identical under :func:`apply_updates`.

    ``-0.0`` is the exact additive identity of IEEE floats (``+0.0`` is not:
    ``-0.0 + 0.0 = +0.0``); integer leaves get ``0``.
    """

    def zero(x):
        # *_like keeps the sharding of x, so both branches of lax.switch agree.
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.full_like(x, -0.0)
        return jnp.zeros_like(x)

    return jax.tree.map(zero, like)


class MultiSteps:
    r"""Accumulates gradients over ``k`` micro-batches, then steps the inner optimizer once.

    With ``g_1..g_k`` the micro-batch gradients of one step,

    .. math::
        a_n = a_{n-1} + \frac{g_n - a_{n-1}}{n} \quad (\text{mean}) \qquad
        a_n = a_{n-1} + g_n \quad (\text{sum})

    and on the ``k``-th micro-batch the updates are ``opt(a_k)``; on the others
    they are zeros (exactly ``-0.0``, so params are untouched bit for bit).

    Memory: the state holds one params-sized accumulator ``acc_grads`` besides
    the inner state, and the inner optimizer runs (under ``lax.switch``) only on
    the micro-batch that emits, so no second copy of the gradients or of the
    inner state is built on the other micro-batches.

    Reference: the large-batch-by-accumulation practice, e.g. Ott et al.,
    `Scaling Neural Machine Translation <https://arxiv.org/abs/1806.00187>`_, 2018.

    Args:
      opt: the inner optimizer.
      every_k_schedule: ``k`` (an int >= 1) or a function ``gradient_step -> k``.
      use_grad_mean: average the micro-batch gradients (True) or sum them.
      should_skip_update_fn: optional :class:`ShouldSkipUpdateFunction`; a
        skipped micro-batch changes nothing but ``skip_state``.
      accumulator_dtype: dtype of ``acc_grads``; ``None`` uses each param's dtype.
    """

    def __init__(
        self,
        opt: base.GradientTransformationLike,
        every_k_schedule: Union[int, Callable[[jax.Array], jax.Array]],
        use_grad_mean: bool = True,
        should_skip_update_fn: Optional[ShouldSkipUpdateFunction] = None,
        accumulator_dtype: Any = jnp.float32,
    ):
        base.check_gradient_transformation(opt, "MultiSteps opt")
        if not callable(every_k_schedule):
            validate.check_range("every_k_schedule", every_k_schedule, low=1)
        self._opt = base.with_extra_args_support(opt)
        self._every_k_schedule = every_k_schedule
        self._use_grad_mean = use_grad_mean
        self._should_skip_update_fn = should_skip_update_fn
        self._accumulator_dtype = accumulator_dtype

    @property
    def inner_opt(self) -> base.GradientTransformationExtraArgs:
        """The wrapped optimizer."""
        return self._opt

    def _k(self, gradient_step):
        if callable(self._every_k_schedule):
            return jnp.asarray(self._every_k_schedule(gradient_step), jnp.int32)
        return jnp.asarray(self._every_k_schedule, jnp.int32)

    def init(self, params: base.Params) -> MultiStepsState:
        """Zero counters, the inner state and a zero accumulator."""
        dtype = self._accumulator_dtype
        skip_state = ()
        if self._should_skip_update_fn is not None:
            zeros = jax.tree.map(jnp.zeros_like, params)
            _, skip_state = self._should_skip_update_fn(zeros, jnp.zeros([], jnp.int32), params)
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=jnp.zeros([], jnp.int32),
            inner_opt_state=self._opt.init(params),
            acc_grads=tree_utils.state_zeros_like(params, dtype=dtype),
            skip_state=skip_state,
        )

    def update(self, updates, state: MultiStepsState, params=None, **extra_args):
        """Accumulates ``updates``; steps the inner optimizer on the ``k``-th call."""
        k = self._k(state.gradient_step)
        if self._should_skip_update_fn is not None:
            should_skip, skip_state = self._should_skip_update_fn(updates, state.gradient_step, params)
        else:
            should_skip, skip_state = jnp.asarray(False), ()

        def accumulate(acc_grads):
            def one(g, a):
                g = g.astype(a.dtype)
                if self._use_grad_mean:
                    return a + (g - a) / (state.mini_step + 1).astype(a.dtype)
                return a + g

            return jax.tree.map(one, updates, acc_grads)

        def inner_grads(acc_grads):
            return jax.tree.map(lambda a, u: a.astype(u.dtype), acc_grads, updates)

        # The emitted updates' types, so that every branch returns the same types.
        out_types = jax.eval_shape(
            lambda: self._opt.update(inner_grads(state.acc_grads), state.inner_opt_state, params, **extra_args)[0]
        )

        def skip_branch(_):
            return neutral_updates(out_types), state._replace(skip_state=skip_state)

        def accumulate_branch(_):
            new_state = state._replace(
                mini_step=numerics.safe_increment(state.mini_step),
                acc_grads=accumulate(state.acc_grads),
                skip_state=skip_state,
            )
            return neutral_updates(out_types), new_state

        def emit_branch(_):
            acc_grads = accumulate(state.acc_grads)
            new_updates, inner_state = self._opt.update(
                inner_grads(acc_grads), state.inner_opt_state, params, **extra_args
            )
            new_state = MultiStepsState(
                mini_step=jnp.zeros([], jnp.int32),
                gradient_step=numerics.safe_increment(state.gradient_step),
                inner_opt_state=inner_state,
                acc_grads=jax.tree.map(jnp.zeros_like, acc_grads),
                skip_state=skip_state,
            )
            return new_updates, new_state

        emit = state.mini_step >= k - 1
        branch = jnp.where(should_skip, 0, jnp.where(emit, 2, 1))
        return jax.lax.switch(branch, (skip_branch, accumulate_branch, emit_branch), None)

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """True right after a call that stepped the inner optimizer."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> base.GradientTransformationExtraArgs:
        """This wrapper as a plain ``(init, update)`` pair, e.g. for :func:`chain`."""
        return base.GradientTransformationExtraArgs(init=self.init, update=self.update)


class ApplyEvery(NamedTuple):
    """State of :func:`apply_every`: the step count modulo ``k`` and the gradient sum."""

    count: jax.Array
    grad_acc: Any


@static_args("k")
def apply_every(k: int = 1) -> base.GradientTransformation:
    r"""Sums ``k`` consecutive updates and emits the sum every ``k`` steps (zeros otherwise).

    .. math::
        s_t = g_t + [t \bmod k \neq 0]\, s_{t-1}, \qquad
        u_t = [t \bmod k = k-1]\, s_t

    Prefer :class:`MultiSteps`, which steps the whole inner optimizer once per
    ``k`` micro-batches rather than gating only its output.

    Args:
      k: the number of updates to accumulate (an int >= 1).
    """
    validate.check_range("k", k, low=1)

    def init_fn(params):
        return ApplyEvery(count=jnp.zeros([], jnp.int32), grad_acc=tree_utils.state_zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        position = state.count % k
        keep = position != 0
        grad_acc = jax.tree.map(lambda g, s: jnp.where(keep, s + g, g).astype(s.dtype), updates, state.grad_acc)
        emit = position == k - 1
        new_updates = jax.tree.map(lambda s: jnp.where(emit, s, jnp.zeros_like(s)), grad_acc)
        count = numerics.safe_increment(state.count) % k
        return new_updates, ApplyEvery(count=count, grad_acc=grad_acc)

    return base.GradientTransformation(init_fn, update_fn)
