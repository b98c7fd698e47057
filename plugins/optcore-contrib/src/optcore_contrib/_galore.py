"""GaLore: the base optimizer runs on gradients projected to a low-rank subspace."""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

import optcore
from optcore import base, kit, numerics, validate

from optcore_contrib import _common


class GaLoreDimensionNumbers(NamedTuple):
    """Which axes of a parameter form the rows (reduction) and columns (output) of its matrix.

    Every axis must be in one of the two groups: a parameter of shape
    ``(embed, heads, head_dim)`` with ``reduction_axis=0, output_axis=(1, 2)`` is
    projected as an ``embed x (heads * head_dim)`` matrix.
    """

    reduction_axis: Union[int, Sequence[int]] = 0
    output_axis: Union[int, Sequence[int]] = 1


class GaLoreState(NamedTuple):
    """State of :func:`scale_by_galore`.

    ``base_optimizer_state`` holds the base optimizer's state over the projected
    (low-rank) gradients of the matrices and the full gradients of the other
    params; ``projector`` holds one orthonormal basis per matrix (an empty
    ``(0, 0)`` array for params that are not projected).
    """

    count: jax.Array
    base_optimizer_state: base.OptState
    projector: base.Updates


class _Layout(NamedTuple):
    """How one param becomes a matrix: axis order, rows, cols, and the projection side."""

    order: tuple
    rows: int
    cols: int
    rank: int

    @property
    def left(self) -> bool:
        # Project the longer side away: the low-rank gradient is (rank x cols)
        # when rows >= cols, else (rows x rank), whichever is smaller.
        return self.rows >= self.cols

    @property
    def projector_shape(self) -> tuple:
        return (self.rows, self.rank) if self.left else (self.cols, self.rank)

    @property
    def low_rank_shape(self) -> tuple:
        return (self.rank, self.cols) if self.left else (self.rows, self.rank)


def _axes(value, ndim: int) -> tuple:
    axes = (value,) if isinstance(value, int) else tuple(value)
    for axis in axes:
        operator.index(axis)  # a TypeError for non-integer axes
        if not -ndim <= axis < ndim:
            raise ValueError(f"GaLoreDimensionNumbers: axis {axis} is out of range for a {ndim}-D param.")
    return tuple(a % ndim for a in axes)


def _layout(shape: tuple, numbers: GaLoreDimensionNumbers, rank: int) -> _Layout:
    ndim = len(shape)
    reduction = _axes(numbers.reduction_axis, ndim)
    output = _axes(numbers.output_axis, ndim)
    if set(reduction) & set(output):
        raise ValueError(
            f"GaLoreDimensionNumbers {numbers}: reduction axes {reduction} and output axes {output} "
            f"overlap for a param of shape {shape}."
        )
    if sorted(reduction + output) != list(range(ndim)):
        raise ValueError(
            f"GaLoreDimensionNumbers {numbers}: every axis of a param of shape {shape} must be a "
            f"reduction or an output axis (GaLore has no batch axes)."
        )
    rows = math.prod(shape[a] for a in reduction)
    cols = math.prod(shape[a] for a in output)
    return _Layout(order=reduction + output, rows=rows, cols=cols, rank=min(rank, rows, cols))


def _is_numbers(x) -> bool:
    return x is None or isinstance(x, GaLoreDimensionNumbers)


def _layouts(weight_dimension_numbers, tree, rank):
    """A tree like ``tree`` with a :class:`_Layout` for each projected param and None elsewhere."""
    numbers = weight_dimension_numbers
    if callable(numbers) and not isinstance(numbers, GaLoreDimensionNumbers):
        numbers = numbers(tree)
    if numbers is None:
        numbers = jax.tree.map(lambda x: GaLoreDimensionNumbers() if x.ndim == 2 else None, tree)
    elif isinstance(numbers, GaLoreDimensionNumbers):
        # One spec for all (as Optax 0.2.8): vectors and scalars have no matrix to project.
        spec = numbers
        numbers = jax.tree.map(lambda x: spec if x.ndim >= 2 else None, tree)
    return jax.tree.map(
        lambda dn, x: None if dn is None else _layout(x.shape, dn, rank), numbers, tree, is_leaf=_is_numbers
    )


def _is_layout(x) -> bool:
    return x is None or isinstance(x, _Layout)


def _map(fn, layouts, *trees):
    return jax.tree.map(fn, layouts, *trees, is_leaf=_is_layout)


def _as_matrix(x, layout: _Layout):
    return jnp.transpose(x, layout.order).reshape(layout.rows, layout.cols)


def _from_matrix(m, layout: _Layout, shape: tuple):
    moved_shape = tuple(shape[a] for a in layout.order)
    inverse = tuple(layout.order.index(a) for a in range(len(shape)))
    return jnp.transpose(m.reshape(moved_shape), inverse)


def _top_singular_vectors(g, layout: _Layout):
    """The ``rank`` leading left (or right) singular vectors of the gradient matrix."""
    # The SVD runs in at least float32 (LAPACK has no bf16/f16); the basis is
    # stored in the param's dtype.
    work_dtype = jnp.promote_types(g.dtype, jnp.float32)
    u, _, vt = jnp.linalg.svd(_as_matrix(g, layout).astype(work_dtype), full_matrices=False)
    basis = u[:, : layout.rank] if layout.left else jnp.swapaxes(vt[: layout.rank], 0, 1)
    return basis.astype(g.dtype)


def _project(g, p, layout: _Layout):
    """R = P^T G (left) or R = G Q (right)."""
    matrix = _as_matrix(g, layout)
    return jnp.swapaxes(p, 0, 1) @ matrix if layout.left else matrix @ p


def _project_back(r, p, layout: _Layout, shape: tuple):
    """P R (left) or R Q^T (right), in the param's shape."""
    matrix = p @ r if layout.left else r @ jnp.swapaxes(p, 0, 1)
    return _from_matrix(matrix, layout, shape)


@kit.static_args("rank", "update_proj_gap")
def scale_by_galore(
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: Optional[base.GradientTransformationLike] = None,
    weight_dimension_numbers: Any = None,
) -> base.GradientTransformation:
    r"""Runs ``base_optimizer`` on gradients projected to a low-rank subspace (GaLore).

    For a gradient matrix :math:`G_t \in \mathbb{R}^{m \times n}` and
    :math:`r = \min(\text{rank}, m, n)`, every ``update_proj_gap`` steps (from
    step 0) the projector is refreshed from the SVD :math:`G_t = U \Sigma V^\top`:
    :math:`P = U_{:, :r}` if :math:`m \ge n`, else :math:`Q = V_{:, :r}`. Then

    .. math::
        R_t = P^\top G_t \ (\text{or } G_t Q), \quad
        N_t = \rho(R_t), \quad
        u_t = \alpha\, P N_t \ (\text{or } \alpha\, N_t Q^\top),

    where :math:`\rho` is the base optimizer (its state lives in the
    :math:`r \times n` or :math:`m \times r` subspace and is kept across
    refreshes) and :math:`\alpha` is ``scale``. Params that are not projected
    go through :math:`\rho` in full (:math:`u_t = \rho(G_t)`, without :math:`\alpha`).

    Zhao et al., `GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
    Projection <https://arxiv.org/abs/2403.03507>`_, 2024.

    Args:
      rank: the target rank :math:`r` (capped by the matrix's smaller side).
      update_proj_gap: steps between projector refreshes.
      scale: :math:`\alpha`, multiplies the updates of the projected params.
      base_optimizer: :math:`\rho`, a transformation that does not need the
        params (e.g. ``scale_by_adam``, the default); it sees low-rank shapes.
      weight_dimension_numbers: which params are matrices: None projects the 2-D
        params; one :class:`GaLoreDimensionNumbers` applies to every param with at
        least two axes (the others go through :math:`\rho` in full); or a tree of
        them (None for params not to project), or a function of the params
        returning that tree.
    """
    kit.check_integer("rank", rank, 1)
    kit.check_integer("update_proj_gap", update_proj_gap, 1)
    if base_optimizer is None:
        base_optimizer = optcore.scale_by_adam()
    optcore.check_gradient_transformation(base_optimizer, "galore base_optimizer")

    def init_fn(params):
        layouts = _layouts(weight_dimension_numbers, params, rank)
        low_rank = _map(
            lambda lo, p: p if lo is None else jnp.zeros(lo.low_rank_shape, p.dtype), layouts, params
        )
        projector = _map(
            lambda lo, p: jnp.zeros((0, 0) if lo is None else lo.projector_shape, p.dtype), layouts, params
        )
        return GaLoreState(
            count=kit.zero_count(),
            base_optimizer_state=base_optimizer.init(low_rank),
            projector=projector,
        )

    def update_fn(updates, state, params=None):
        if params is not None:
            # A transposed gradient would otherwise be silently reshaped into the param's matrix.
            validate.check_tree_match(updates, params, against="params")
        layouts = _layouts(weight_dimension_numbers, updates if params is None else params, rank)
        # The SVD and the projections work on whole matrices: gathered where the split is explicit.
        matrices = _map(lambda lo, g: g if lo is None else kit.whole(g), layouts, updates)

        def refreshed():
            return _map(
                lambda lo, g, p: p if lo is None else _top_singular_vectors(g, lo), layouts, matrices, state.projector
            )

        # The SVD only runs on refresh steps.
        projector = jax.lax.cond(state.count % update_proj_gap == 0, refreshed, lambda: state.projector)
        low_rank = _map(lambda lo, g, p: g if lo is None else _project(g, p, lo), layouts, matrices, projector)
        # The base optimizer sees low-rank shapes, so it gets no params.
        base_updates, base_state = base_optimizer.update(low_rank, state.base_optimizer_state)
        new_updates = _map(
            lambda lo, n, p, g: (
                n if lo is None else kit.reshard_like(scale * _project_back(n, p, lo, g.shape), g)
            ).astype(g.dtype),
            layouts,
            base_updates,
            projector,
            updates,
        )
        return new_updates, GaLoreState(
            count=numerics.safe_increment(state.count),
            base_optimizer_state=base_state,
            projector=projector,
        )

    return base.GradientTransformation(init_fn, update_fn)


@kit.static_args("rank", "update_proj_gap", "mask")
def galore(
    learning_rate: base.ScalarOrSchedule,
    rank: int = 128,
    update_proj_gap: int = 200,
    scale: float = 1.0,
    base_optimizer: Optional[base.GradientTransformationLike] = None,
    weight_decay: base.ScalarOrSchedule = 0.0,
    mask: Optional[Any] = None,
    weight_dimension_numbers: Any = None,
) -> base.GradientTransformationExtraArgs:
    r"""GaLore: :func:`scale_by_galore`, decoupled weight decay, then the learning rate.

    .. math::
        \theta_{t+1} = \theta_t - \eta_t \left(u_t + \lambda \theta_t\right),

    with :math:`u_t` the GaLore update of :func:`scale_by_galore` (by default Adam
    in the low-rank subspace) and the decay applied in the full param space.

    Zhao et al., `GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
    Projection <https://arxiv.org/abs/2403.03507>`_, 2024.

    Args:
      learning_rate: :math:`\eta_t`, a scalar or schedule (use 1.0 if the base
        optimizer already has a learning rate).
      rank: the target rank of the projection.
      update_proj_gap: steps between projector refreshes.
      scale: multiplies the updates of the projected params.
      base_optimizer: the transformation run in the subspace (default
        ``scale_by_adam()``); it must not need the params.
      weight_decay: :math:`\lambda`. A number or a schedule of the step count.
      mask: which params to decay (a tree of bools or a function of the params).
      weight_dimension_numbers: which params are matrices (see :func:`scale_by_galore`).
    """
    validate.check_not_nan("weight_decay", weight_decay)
    return _common.with_decay_and_lr(
        scale_by_galore(rank, update_proj_gap, scale, base_optimizer, weight_dimension_numbers),
        learning_rate,
        weight_decay,
        mask,
    )
