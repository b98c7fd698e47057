"""The diagonal of the (generalized) Gauss-Newton matrix."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from optcore_second_order import _common

Array = jax.Array


def gauss_newton_diag(
    predict: Callable[[Any, Any], Any],
    output_loss: Callable[[Any, Any], Array],
    params: Any,
    inputs: Any,
    targets: Any,
    *,
    chunk_size: int | None = None,
    as_tree: bool = False,
) -> Any:
    r"""The exact diagonal of the generalized Gauss-Newton matrix of a composite loss.

    For a loss of the form ``output_loss(predict(params, inputs), targets)``,
    with :math:`z = f(\theta, x)` the model outputs and :math:`J = \partial z /
    \partial \theta` their Jacobian,

    .. math::
        G = J^\top \, \nabla^2_z \ell(z, y) \, J, \qquad
        \operatorname{diag}(G)_i = (J e_i)^\top \, \nabla^2_z \ell(z, y) \, (J e_i)

    (Schraudolph, "Fast curvature matrix-vector products for second-order
    gradient descent", Neural Computation 2002; Martens, JMLR 2020, section 8).
    ``G`` drops the term of the Hessian that involves the model's second
    derivative, so it is positive semi-definite whenever ``output_loss`` is
    convex in the outputs, and equals the Hessian for a model linear in
    ``params``. ``output_loss`` may couple outputs of different examples.

    Each entry is one Jacobian-vector product through the model and one
    Hessian-vector product of ``output_loss`` in output space (no second
    derivative through the model); the basis vectors ``e_i`` are built inside a
    ``lax.map`` loop, ``chunk_size`` at a time, so memory is
    ``O(chunk_size * (n + outputs))``.

    Args:
      predict: ``predict(params, inputs) -> outputs`` (an array or pytree).
      output_loss: ``output_loss(outputs, targets) -> scalar``.
      params: the parameters (any pytree of arrays).
      inputs: the inputs passed to ``predict``.
      targets: the targets passed to ``output_loss``.
      chunk_size: how many basis vectors to push through at once (vmapped);
        ``None`` does one at a time.
      as_tree: return the diagonal shaped like ``params`` instead of flat.

    Returns:
      The diagonal, flat (``ravel_pytree`` order) or shaped like ``params``.
    """
    _common.check_callable("predict", predict)
    _common.check_callable("output_loss", output_loss)
    _common.check_count("chunk_size", chunk_size, allow_none=True)
    _common.flatten_params(params)
    return _gauss_newton_compiled(
        predict, output_loss, params, inputs, targets, chunk_size, bool(as_tree)
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 5, 6))
def _gauss_newton_compiled(predict, output_loss, params, inputs, targets, chunk_size, as_tree):
    flat, unravel = ravel_pytree(params)
    # Linearize once: the loop then reuses the model's forward residuals.
    outputs, model_jvp = jax.linearize(lambda p: predict(p, inputs), params)
    _, output_hvp = jax.linearize(jax.grad(lambda z: output_loss(z, targets)), outputs)

    def quadratic_form(basis_vector):
        output_tangent = model_jvp(unravel(basis_vector))
        curved = output_hvp(output_tangent)
        terms = jax.tree.map(lambda a, b: jnp.vdot(a, b), output_tangent, curved)
        return sum(jax.tree.leaves(terms))

    diagonal = _common.diagonal_by_basis(quadratic_form, flat.size, flat.dtype, chunk_size)
    return _common.finish(diagonal.astype(flat.dtype), unravel, as_tree)
