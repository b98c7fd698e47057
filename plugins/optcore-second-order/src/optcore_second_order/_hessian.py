"""Hessian-vector products and Hessian diagonals in memory linear in the parameter count."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from optcore_second_order import _common

Array = jax.Array
LossFn = Callable[[Any, Any, Any], Array]


def _linearized_hvp(loss: LossFn, params: Any, inputs: Any, targets: Any) -> Callable[[Any], Any]:
    """``v -> H v`` for the Hessian of ``loss`` at ``params``.

    The gradient is linearized once (forward-over-reverse), so a loop of products
    reuses the forward and backward residuals instead of recomputing them.
    """
    gradient = jax.grad(lambda p: loss(p, inputs, targets))
    _, product = jax.linearize(gradient, params)
    return product


def hvp(loss: LossFn, v: Array, params: Any, inputs: Any, targets: Any) -> Any:
    r"""The product of the Hessian of ``loss`` with a vector ``v``.

    .. math::
        H v = \nabla^2_\theta \, \ell(\theta, x, y) \, v
            = \frac{\partial}{\partial \epsilon} \nabla_\theta \ell(\theta + \epsilon v, x, y)
              \Big|_{\epsilon = 0}

    computed as a forward-mode derivative of the reverse-mode gradient
    (Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation
    1994), at the cost of about two gradient evaluations and without forming
    ``H``. Same signature and result as Optax 0.2.8's ``second_order.hvp``.

    Args:
      loss: ``loss(params, inputs, targets) -> scalar``.
      v: a vector with as many entries as ``params`` has in total, in the order
        of ``jax.flatten_util.ravel_pytree(params)``.
      params: the point at which the Hessian is taken (any pytree of arrays).
      inputs: the inputs passed to ``loss``.
      targets: the targets passed to ``loss``.

    Returns:
      ``H v`` as a pytree shaped like ``params``.
    """
    _common.check_callable("loss", loss)
    flat, unravel = _common.flatten_params(params)
    if jnp.shape(v) != flat.shape:
        raise ValueError(
            f"v must be a vector of size {flat.size} (the number of entries of params), "
            f"got shape {jnp.shape(v)}."
        )
    return _hvp_compiled(loss, v, params, inputs, targets)


@functools.partial(jax.jit, static_argnums=0)
def _hvp_compiled(loss, v, params, inputs, targets):
    _, unravel = ravel_pytree(params)
    gradient = jax.grad(lambda p: loss(p, inputs, targets))
    return jax.jvp(gradient, (params,), (unravel(v),))[1]


def hessian_diag(
    loss: LossFn,
    params: Any,
    inputs: Any,
    targets: Any,
    *,
    chunk_size: int | None = None,
    as_tree: bool = False,
) -> Any:
    r"""The exact diagonal of the Hessian of ``loss``, in memory linear in ``n``.

    .. math::
        \operatorname{diag}(H)_i = e_i^\top \, \nabla^2_\theta \ell(\theta, x, y) \, e_i,
        \qquad i = 1, \dots, n

    Each entry is one Hessian-vector product (Pearlmutter 1994) with the basis
    vector ``e_i``; the basis vectors are built one (or one chunk) at a time
    inside a ``lax.map`` loop. Optax's version vmaps over an ``n``-by-``n``
    identity, which needs ``O(n^2)`` memory; this one needs
    ``O(chunk_size * n)`` on top of one linearized gradient. The time is ``n``
    Hessian-vector products either way: for large models prefer
    :func:`hutchinson_hessian_diag`.

    Args:
      loss: ``loss(params, inputs, targets) -> scalar``.
      params: the point at which the Hessian is taken (any pytree of arrays).
      inputs: the inputs passed to ``loss``.
      targets: the targets passed to ``loss``.
      chunk_size: how many basis vectors to push through at once (vmapped).
        ``None`` (the default) does one at a time: least memory. Larger chunks
        run faster on parallel hardware and use ``chunk_size`` times the memory
        of one product.
      as_tree: if ``False`` (the default, as in Optax) return the flat diagonal
        of size ``n`` in ``ravel_pytree`` order; if ``True`` return it shaped and
        typed like ``params`` (one block per leaf).

    Returns:
      The diagonal, flat or shaped like ``params`` (see ``as_tree``).
    """
    _common.check_callable("loss", loss)
    _common.check_count("chunk_size", chunk_size, allow_none=True)
    _common.flatten_params(params)
    return _hessian_diag_compiled(loss, params, inputs, targets, chunk_size, bool(as_tree))


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _hessian_diag_compiled(loss, params, inputs, targets, chunk_size, as_tree):
    flat, unravel = ravel_pytree(params)
    product = _linearized_hvp(loss, params, inputs, targets)

    def quadratic_form(basis_vector):
        return jnp.vdot(basis_vector, ravel_pytree(product(unravel(basis_vector)))[0])

    diagonal = _common.diagonal_by_basis(quadratic_form, flat.size, flat.dtype, chunk_size)
    return _common.finish(diagonal.astype(flat.dtype), unravel, as_tree)


def hutchinson_hessian_diag(
    loss: LossFn,
    params: Any,
    inputs: Any,
    targets: Any,
    key: Array,
    *,
    num_samples: int = 32,
    chunk_size: int | None = None,
    as_tree: bool = False,
) -> Any:
    r"""An unbiased stochastic estimate of the Hessian diagonal (Hutchinson's estimator).

    .. math::
        \widehat{\operatorname{diag}(H)} = \frac{1}{S} \sum_{s=1}^{S} z_s \odot (H z_s),
        \qquad z_s \in \{-1, +1\}^n \text{ Rademacher}

    Since :math:`\mathbb{E}[z z^\top] = I`, the estimate is unbiased, and the
    variance of entry ``i`` is :math:`\sum_{j \ne i} H_{ij}^2 / S`: the error
    falls like :math:`1/\sqrt{S}` and vanishes for a diagonal Hessian.
    Bekas, Kokiopoulou and Saad, "An estimator for the diagonal of a matrix",
    Applied Numerical Mathematics 2007; Hutchinson, "A stochastic estimator of
    the trace of the influence matrix", 1990.

    Costs ``num_samples`` Hessian-vector products instead of ``n``; the
    products are summed in a ``lax.scan``, so memory is ``O(chunk_size * n)``.

    Args:
      loss: ``loss(params, inputs, targets) -> scalar``.
      params: the point at which the Hessian is taken (any pytree of arrays).
      inputs: the inputs passed to ``loss``.
      targets: the targets passed to ``loss``.
      key: a JAX random key (``jax.random.key`` or ``jax.random.PRNGKey``).
      num_samples: the number ``S`` of Rademacher probes (a positive integer).
      chunk_size: how many probes to push through at once (vmapped); ``None``
        does one at a time.
      as_tree: return the estimate shaped like ``params`` instead of flat.

    Returns:
      The estimated diagonal, flat (``ravel_pytree`` order) or shaped like ``params``.
    """
    _common.check_callable("loss", loss)
    _common.check_count("num_samples", num_samples)
    _common.check_count("chunk_size", chunk_size, allow_none=True)
    if isinstance(key, int) or not hasattr(key, "shape"):
        raise TypeError(f"key must be a JAX random key, got {type(key).__name__}.")
    _common.flatten_params(params)
    return _hutchinson_compiled(
        loss, params, inputs, targets, key, int(num_samples), chunk_size, bool(as_tree)
    )


@functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
def _hutchinson_compiled(loss, params, inputs, targets, key, num_samples, chunk_size, as_tree):
    flat, unravel = ravel_pytree(params)
    product = _linearized_hvp(loss, params, inputs, targets)

    def probe_term(probe_key):
        probe = jax.random.rademacher(probe_key, flat.shape, flat.dtype)
        return probe * ravel_pytree(product(unravel(probe)))[0]

    keys = jax.random.split(key, num_samples)
    total = _common.sum_over_leading_axis(probe_term, keys, num_samples, chunk_size, flat)
    return _common.finish((total / num_samples).astype(flat.dtype), unravel, as_tree)
