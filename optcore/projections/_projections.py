"""Euclidean projections of pytrees onto convex sets.

Each function returns :math:`\\arg\\min_{y \\in C} \\|y - x\\|_2`, the point of
the set :math:`C` nearest to ``x``, where ``x`` is a pytree treated as one
vector (all leaves together). Used for projected gradient descent::

    params = optcore.apply_updates(params, updates)
    params = optcore.projections.projection_non_negative(params)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from optcore import base, tree_utils
from optcore.tree_utils._tree_math import real_vdot



def _broadcast_like(bound: Any, tree: Any) -> Any:
    """``bound`` as a tree shaped like ``tree``: a scalar is used for every leaf."""
    if jax.tree.structure(bound) == jax.tree.structure(tree):
        return bound
    if len(jax.tree.leaves(bound)) == 1 and jnp.ndim(jax.tree.leaves(bound)[0]) == 0:
        value = jax.tree.leaves(bound)[0]
        return jax.tree.map(lambda _: value, tree)
    raise ValueError(
        "A bound must be a scalar or a pytree with the same structure as the tree projected; "
        f"got {jax.tree.structure(bound)} for {jax.tree.structure(tree)}."
    )


def _in_dtype_of(value: jax.Array, leaf: Any) -> jax.Array:
    """``value`` cast to the dtype of ``leaf``, which may be a Python scalar (as Optax accepts):
    ``jnp.result_type`` gives a Python float the default float dtype, where ``leaf.dtype`` fails."""
    return jnp.asarray(value).astype(jnp.result_type(leaf))


def _add_scaled(x: Any, scalar: jax.Array, y: Any) -> Any:
    """``x + scalar * y`` leafwise, keeping the dtypes of ``x``."""
    return jax.tree.map(lambda a, b: _in_dtype_of(a + scalar * b, a), x, y)


def projection_non_negative(tree: base.Params) -> base.Params:
    r"""Projects onto the non-negative orthant.

    .. math::
        \operatorname{proj}(x) = \max(x, 0)

    Args:
      tree: the pytree to project.
    """
    return jax.tree.map(jax.nn.relu, tree)


def projection_box(tree: base.Params, lower: Any, upper: Any) -> base.Params:
    r"""Projects onto the box :math:`\{y : l \le y \le u\}`.

    .. math::
        \operatorname{proj}(x) = \min(\max(x, l), u)

    Args:
      tree: the pytree to project.
      lower: :math:`l`, a scalar or a pytree shaped like ``tree``.
      upper: :math:`u`, a scalar or a pytree shaped like ``tree``.
    """
    lower = _broadcast_like(lower, tree)
    upper = _broadcast_like(upper, tree)
    return jax.tree.map(lambda x, lo, hi: _in_dtype_of(jnp.clip(x, lo, hi), x), tree, lower, upper)


def projection_hypercube(tree: base.Params, scale: Any = 1) -> base.Params:
    r"""Projects onto the hypercube :math:`\{y : 0 \le y \le s\}`.

    .. math::
        \operatorname{proj}(x) = \min(\max(x, 0), s)

    Args:
      tree: the pytree to project.
      scale: :math:`s`, the side of the cube (a scalar or a pytree like ``tree``).
    """
    return projection_box(tree, lower=0.0, upper=scale)


def projection_linf_ball(tree: base.Params, scale: Any = 1) -> base.Params:
    r"""Projects onto the l-infinity ball :math:`\{y : \|y\|_\infty \le s\}`.

    .. math::
        \operatorname{proj}(x) = \min(\max(x, -s), s)

    Args:
      tree: the pytree to project.
      scale: :math:`s`, the radius of the ball.
    """
    return jax.tree.map(lambda x: _in_dtype_of(jnp.clip(x, -scale, scale), x), tree)


def _simplex_vector(x: jax.Array, scale: Any) -> jax.Array:
    """Projects a 1-d array onto ``{y >= 0, sum(y) = scale}`` by sorting."""
    # Michelot / Held et al.: the projection is max(x - theta, 0) with theta
    # fixed by the largest rho such that u_rho > (sum_{j<=rho} u_j - s) / rho.
    u = jnp.sort(x)[::-1]
    cumulative = jnp.cumsum(u) - scale
    index = jnp.arange(1, x.shape[0] + 1, dtype=x.dtype)
    support = u - cumulative / index > 0
    rho = jnp.sum(support)
    theta = cumulative[rho - 1] / rho.astype(x.dtype)
    return jnp.maximum(x - theta, 0)


def projection_simplex(tree: base.Params, scale: Any = 1) -> base.Params:
    r"""Projects onto the simplex :math:`\{y : y \ge 0, \sum_i y_i = s\}`.

    .. math::
        \operatorname{proj}(x) = \max(x - \tau, 0), \quad
        \tau \text{ such that } \textstyle\sum_i \max(x_i - \tau, 0) = s

    found by sorting (Held et al., `Validation of subgradient optimization
    <https://doi.org/10.1007/BF01580223>`_, 1974; Duchi et al., `Efficient
    Projections onto the l1-Ball for Learning in High Dimensions
    <https://dl.acm.org/doi/10.1145/1390156.1390191>`_, 2008). All leaves form
    one vector.

    Args:
      tree: the pytree to project.
      scale: :math:`s > 0`, the sum of the result.
    """
    flat, unravel = ravel_pytree(tree)
    return unravel(_simplex_vector(flat, scale))


def projection_l1_sphere(tree: base.Params, scale: Any = 1) -> base.Params:
    r"""Projects onto the l1 sphere :math:`\{y : \|y\|_1 = s\}`.

    .. math::
        \operatorname{proj}(x) = \operatorname{sign}(x) \odot
        \operatorname{proj}_{\Delta_s}(|x|)

    with :math:`\Delta_s` the simplex of sum :math:`s` (Duchi et al., 2008).
    A zero input has no sign and is returned as zero.

    Args:
      tree: the pytree to project.
      scale: :math:`s`, the radius of the sphere.
    """
    magnitudes = projection_simplex(jax.tree.map(jnp.abs, tree), scale)
    return jax.tree.map(lambda x, m: jnp.sign(x) * m, tree, magnitudes)


def projection_l1_ball(tree: base.Params, scale: Any = 1) -> base.Params:
    r"""Projects onto the l1 ball :math:`\{y : \|y\|_1 \le s\}`.

    .. math::
        \operatorname{proj}(x) = \begin{cases} x & \|x\|_1 \le s \\
        \operatorname{proj}_{\|\cdot\|_1 = s}(x) & \text{otherwise} \end{cases}

    Duchi et al., `Efficient Projections onto the l1-Ball for Learning in High
    Dimensions <https://dl.acm.org/doi/10.1145/1390156.1390191>`_, 2008.

    Args:
      tree: the pytree to project.
      scale: :math:`s`, the radius of the ball.
    """
    inside = tree_utils.tree_norm(tree, ord=1) <= scale
    on_sphere = projection_l1_sphere(tree, scale)
    return jax.tree.map(lambda x, y: jnp.where(inside, x, y), tree, on_sphere)


def projection_l2_sphere(tree: base.Params, scale: Any = 1) -> base.Params:
    r"""Projects onto the l2 sphere :math:`\{y : \|y\|_2 = s\}`.

    .. math::
        \operatorname{proj}(x) = s \, \frac{x}{\|x\|_2}

    The projection of zero is not unique; zero is returned (not NaN).

    Args:
      tree: the pytree to project.
      scale: :math:`s`, the radius of the sphere.
    """
    norm = tree_utils.tree_norm(tree)
    factor = jnp.where(norm > 0, scale / jnp.where(norm > 0, norm, 1.0), 0.0)
    return jax.tree.map(lambda x: _in_dtype_of(factor * x, x), tree)


def projection_l2_ball(tree: base.Params, scale: Any = 1) -> base.Params:
    r"""Projects onto the l2 ball :math:`\{y : \|y\|_2 \le s\}`.

    .. math::
        \operatorname{proj}(x) = x \cdot \min\left(1, \frac{s}{\|x\|_2}\right)

    Args:
      tree: the pytree to project.
      scale: :math:`s`, the radius of the ball.
    """
    # From the squared norm: the norm's derivative at zero is 0/0, which would reach the
    # gradient through the branch not taken (NaN at x = 0, where the projection is x).
    squared_norm = tree_utils.tree_norm(tree, squared=True)
    inside = squared_norm <= jnp.square(scale)
    factor = jnp.where(inside, 1.0, scale / jnp.sqrt(jnp.where(inside, 1.0, squared_norm)))
    return jax.tree.map(lambda x: _in_dtype_of(factor * x, x), tree)


def projection_hyperplane(x: base.Params, a: base.Params, b: Any) -> base.Params:
    r"""Projects onto the hyperplane :math:`\{y : \langle a, y \rangle = b\}`.

    .. math::
        \operatorname{proj}(x) = x - \frac{\langle a, x \rangle - b}{\|a\|_2^2} a

    Args:
      x: the pytree to project.
      a: the normal of the hyperplane (a pytree like ``x``, non-zero).
      b: the offset, a scalar.
    """
    scalar = (real_vdot(a, x) - b) / real_vdot(a, a)
    return _add_scaled(x, -scalar, a)


def projection_halfspace(x: base.Params, a: base.Params, b: Any) -> base.Params:
    r"""Projects onto the half-space :math:`\{y : \langle a, y \rangle \le b\}`.

    .. math::
        \operatorname{proj}(x) = x - \frac{\max(\langle a, x \rangle - b, 0)}{\|a\|_2^2} a

    Args:
      x: the pytree to project.
      a: the normal of the boundary (a pytree like ``x``, non-zero).
      b: the offset, a scalar.
    """
    scalar = jax.nn.relu(real_vdot(a, x) - b) / real_vdot(a, a)
    return _add_scaled(x, -scalar, a)


def projection_vector(x: base.Params, a: base.Params) -> base.Params:
    r"""Projects onto the line spanned by ``a``: :math:`\{t a : t \in \mathbb{R}\}`.

    .. math::
        \operatorname{proj}(x) = \frac{\langle a, x \rangle}{\|a\|_2^2} a

    Args:
      x: the pytree to project.
      a: the direction (a pytree like ``x``, non-zero).
    """
    scalar = real_vdot(a, x) / real_vdot(a, a)
    return jax.tree.map(lambda v: _in_dtype_of(scalar * v, v), a)
