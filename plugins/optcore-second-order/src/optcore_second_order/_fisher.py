"""Fisher diagonals: Optax's full-batch one and the per-example empirical Fisher."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from optcore_second_order import _common

Array = jax.Array
LossFn = Callable[[Any, Any, Any], Array]


def fisher_diag(
    negative_log_likelihood: LossFn,
    params: Any,
    inputs: Any,
    targets: Any,
    *,
    as_tree: bool = False,
) -> Any:
    r"""The square of the full-batch gradient, Optax's ``second_order.fisher_diag``.

    .. math::
        F = \big(\nabla_\theta \, \mathrm{NLL}(\theta, x, y)\big)^{\odot 2}

    This keeps Optax 0.2.8's meaning: the gradient of the loss on the whole batch
    is squared elementwise, which is a one-sample (rank-one) approximation of the
    empirical Fisher diagonal. For the mean of squared *per-example* gradients
    (Martens, "New insights and perspectives on the natural gradient method",
    JMLR 2020, section 11) use :func:`empirical_fisher_diag`.

    Args:
      negative_log_likelihood: ``nll(params, inputs, targets) -> scalar``.
      params: the parameters (any pytree of arrays).
      inputs: the inputs passed to ``negative_log_likelihood``.
      targets: the targets passed to ``negative_log_likelihood``.
      as_tree: if ``False`` (as in Optax) return a flat vector in
        ``ravel_pytree`` order; if ``True`` return it shaped like ``params``.

    Returns:
      The squared gradient, flat or shaped like ``params``.
    """
    _common.check_callable("negative_log_likelihood", negative_log_likelihood)
    _common.flatten_params(params)
    return _fisher_diag_compiled(negative_log_likelihood, params, inputs, targets, bool(as_tree))


@functools.partial(jax.jit, static_argnums=(0, 4))
def _fisher_diag_compiled(negative_log_likelihood, params, inputs, targets, as_tree):
    _, unravel = ravel_pytree(params)
    gradient = jax.grad(negative_log_likelihood)(params, inputs, targets)
    return _common.finish(jnp.square(ravel_pytree(gradient)[0]), unravel, as_tree)


def empirical_fisher_diag(
    negative_log_likelihood: LossFn,
    params: Any,
    inputs: Any,
    targets: Any,
    *,
    chunk_size: int | None = None,
    as_tree: bool = False,
) -> Any:
    r"""The diagonal of the empirical Fisher: the mean of squared per-example gradients.

    .. math::
        \operatorname{diag}(F_{\mathrm{emp}}) = \frac{1}{B} \sum_{b=1}^{B}
            \big(\nabla_\theta \, \mathrm{NLL}(\theta, x_b, y_b)\big)^{\odot 2}

    (Martens, "New insights and perspectives on the natural gradient method",
    JMLR 2020, section 11; Kunstner, Hennig and Balles, "Limitations of the
    empirical Fisher approximation", NeurIPS 2019.) Example ``b`` is passed to
    ``negative_log_likelihood`` as a batch of one (``inputs[b:b+1]``,
    ``targets[b:b+1]``, leading axis kept), so the same batched loss function
    serves both this and :func:`fisher_diag`.

    The per-example gradients are never held all at once: a ``lax.scan`` over
    the examples adds up their squares, ``chunk_size`` examples (vmapped) per
    step, in at least float32. Memory is ``O(chunk_size * n)``.

    Args:
      negative_log_likelihood: ``nll(params, inputs, targets) -> scalar`` on a batch.
      params: the parameters (any pytree of arrays).
      inputs: a batch of inputs (an array or pytree whose leaves share a
        leading batch axis).
      targets: the matching batch of targets (same leading axis).
      chunk_size: how many examples to differentiate at once; ``None`` does
        one at a time.
      as_tree: return the diagonal shaped like ``params`` instead of flat.

    Returns:
      The diagonal, flat (``ravel_pytree`` order) or shaped like ``params``.
    """
    _common.check_callable("negative_log_likelihood", negative_log_likelihood)
    _common.check_count("chunk_size", chunk_size, allow_none=True)
    _common.flatten_params(params)
    num_examples = _common.leading_size((inputs, targets), "inputs and targets")
    return _empirical_fisher_compiled(
        negative_log_likelihood, params, inputs, targets, chunk_size, bool(as_tree)
    )


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _empirical_fisher_compiled(negative_log_likelihood, params, inputs, targets, chunk_size, as_tree):
    flat, unravel = ravel_pytree(params)
    num_examples = _common.leading_size((inputs, targets), "inputs and targets")
    gradient = jax.grad(negative_log_likelihood)

    def squared_example_gradient(example):
        batch_of_one = jax.tree.map(lambda leaf: leaf[None], example)
        return jnp.square(ravel_pytree(gradient(params, *batch_of_one))[0])

    total = _common.sum_over_leading_axis(
        squared_example_gradient, (inputs, targets), num_examples, chunk_size, flat
    )
    return _common.finish((total / num_examples).astype(flat.dtype), unravel, as_tree)
