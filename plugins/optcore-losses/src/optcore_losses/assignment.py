"""Linear assignment: the Hungarian algorithm, jit-compilable.

``optcore.assignment`` is this module once the optcore-losses plugin is
installed.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from optcore_losses import _checks


class _Search(NamedTuple):
    """State of the shortest augmenting path search for one new row."""

    row_potential: jax.Array  # u, [rows + 1]
    col_potential: jax.Array  # v, [cols + 1]
    row_of_col: jax.Array  # p, [cols + 1]: matched row (1-based), 0 = free
    previous_col: jax.Array  # way, [cols + 1]: predecessor on the path
    min_slack: jax.Array  # minv, [cols + 1]
    visited: jax.Array  # used, [cols + 1]
    col: jax.Array  # j0, the column reached last


def _vectorized_step(cost, s: _Search) -> _Search:
    """One Dijkstra step over all columns at once."""
    visited = s.visited.at[s.col].set(True)
    row = s.row_of_col[s.col]
    slack = cost[row] - s.row_potential[row] - s.col_potential
    improves = ~visited & (slack < s.min_slack)
    min_slack = jnp.where(improves, slack, s.min_slack)
    previous_col = jnp.where(improves, s.col, s.previous_col)
    candidates = jnp.where(visited, jnp.inf, min_slack)
    next_col = jnp.argmin(candidates).astype(jnp.int32)
    delta = candidates[next_col]
    # Visited columns' rows are distinct, so the scatter-add never collides on
    # a non-zero increment.
    row_potential = s.row_potential.at[s.row_of_col].add(jnp.where(visited, delta, 0.0))
    col_potential = jnp.where(visited, s.col_potential - delta, s.col_potential)
    min_slack = jnp.where(visited, min_slack, min_slack - delta)
    return _Search(row_potential, col_potential, s.row_of_col, previous_col, min_slack, visited, next_col)


def _scalar_step(cost, s: _Search) -> _Search:
    """The same step with an explicit loop over columns (the reference)."""
    num_cols = cost.shape[1]
    visited = s.visited.at[s.col].set(True)
    row = s.row_of_col[s.col]

    def scan_column(j, carry):
        min_slack, previous_col, delta, next_col = carry
        slack = cost[row, j] - s.row_potential[row] - s.col_potential[j]
        improves = ~visited[j] & (slack < min_slack[j])
        min_slack = min_slack.at[j].set(jnp.where(improves, slack, min_slack[j]))
        previous_col = previous_col.at[j].set(jnp.where(improves, s.col, previous_col[j]))
        closer = ~visited[j] & (min_slack[j] < delta)
        return min_slack, previous_col, jnp.where(closer, min_slack[j], delta), jnp.where(closer, j, next_col)

    init = (s.min_slack, s.previous_col, jnp.asarray(jnp.inf, cost.dtype), jnp.int32(0))
    min_slack, previous_col, delta, next_col = jax.lax.fori_loop(1, num_cols, scan_column, init)

    def update_potentials(j, carry):
        row_potential, col_potential, min_slack = carry
        row_potential = row_potential.at[s.row_of_col[j]].add(jnp.where(visited[j], delta, 0.0))
        col_potential = col_potential.at[j].add(jnp.where(visited[j], -delta, 0.0))
        min_slack = min_slack.at[j].add(jnp.where(visited[j], 0.0, -delta))
        return row_potential, col_potential, min_slack

    row_potential, col_potential, min_slack = jax.lax.fori_loop(
        0, num_cols, update_potentials, (s.row_potential, s.col_potential, min_slack)
    )
    return _Search(row_potential, col_potential, s.row_of_col, previous_col, min_slack, visited, next_col)


def _solve_wide(cost: jax.Array, step) -> jax.Array:
    """Column assigned to each row of a ``[n, m]`` cost with ``n <= m``."""
    num_rows, num_cols = cost.shape
    # 1-based rows and columns; index 0 is the virtual start of every path.
    padded = jnp.zeros((num_rows + 1, num_cols + 1), cost.dtype).at[1:, 1:].set(cost)
    step = jax.tree_util.Partial(step, padded)

    def add_row(row, carry):
        row_potential, col_potential, row_of_col, previous_col = carry
        search = _Search(
            row_potential,
            col_potential,
            row_of_col.at[0].set(row),
            previous_col,
            jnp.full((num_cols + 1,), jnp.inf, cost.dtype),
            jnp.zeros((num_cols + 1,), bool),
            jnp.int32(0),
        )
        search = step(search)  # do ... while the reached column is matched
        search = jax.lax.while_loop(lambda s: s.row_of_col[s.col] != 0, step, search)

        def flip(state):
            row_of_col, col = state
            prev = search.previous_col[col]
            return row_of_col.at[col].set(row_of_col[prev]), prev

        row_of_col, _ = jax.lax.while_loop(lambda st: st[1] != 0, flip, (search.row_of_col, search.col))
        return search.row_potential, search.col_potential, row_of_col, search.previous_col

    init = (
        jnp.zeros((num_rows + 1,), cost.dtype),
        jnp.zeros((num_cols + 1,), cost.dtype),
        jnp.zeros((num_cols + 1,), jnp.int32),
        jnp.zeros((num_cols + 1,), jnp.int32),
    )
    _, _, row_of_col, _ = jax.lax.fori_loop(1, num_rows + 1, add_row, init)
    # Free columns (row 0) all write to slot 0, which is dropped.
    col_of_row = jnp.zeros((num_rows + 1,), jnp.int32).at[row_of_col[1:]].set(jnp.arange(num_cols, dtype=jnp.int32))
    return col_of_row[1:]


def _assign(cost_matrix, step) -> tuple[jax.Array, jax.Array]:
    cost = jnp.asarray(cost_matrix)
    if cost.ndim != 2:
        raise ValueError(f"cost_matrix must be 2-D, got cost_matrix.shape={cost.shape}.")
    if jnp.issubdtype(cost.dtype, jnp.complexfloating):
        raise TypeError("cost_matrix must be real, got a complex dtype.")
    if not jnp.issubdtype(cost.dtype, jnp.floating):
        cost = cost.astype(jnp.float32)
    cost = _checks.upcast(cost)
    num_rows, num_cols = cost.shape
    if num_rows == 0 or num_cols == 0:
        empty = jnp.zeros((0,), jnp.int32)
        return empty, empty
    if num_rows <= num_cols:
        return jnp.arange(num_rows, dtype=jnp.int32), _solve_wide(cost, step)
    # More rows than columns: assign every column to a row, then list the
    # pairs in row order.
    row_of_col = _solve_wide(cost.T, step)
    order = jnp.argsort(row_of_col)
    return row_of_col[order], jnp.arange(num_cols, dtype=jnp.int32)[order]


def hungarian_algorithm(cost_matrix) -> tuple[jax.Array, jax.Array]:
    r"""Minimum-cost assignment of rows to columns (Hungarian algorithm).

    Finds the injective matching :math:`\sigma` of the smaller side into the
    larger one minimising

    .. math::
      \sum_{i} C_{i, \sigma(i)}

    by successive shortest augmenting paths with dual potentials
    (Jonker-Volgenant form, :math:`O(n^2 m)`), all in ``lax`` loops so it
    runs under ``jax.jit``.

    References:
      H. W. Kuhn, `The Hungarian method for the assignment problem
      <https://doi.org/10.1002/nav.3800020109>`_, 1955; R. Jonker and
      A. Volgenant, `A shortest augmenting path algorithm for dense and
      sparse linear assignment problems <https://doi.org/10.1007/BF02278710>`_, 1987.

    Args:
      cost_matrix: finite real ``[n, m]`` costs.

    Returns:
      ``(rows, cols)``, int32 arrays of length ``min(n, m)`` with rows
      increasing: row ``rows[k]`` is assigned column ``cols[k]``, as in
      ``scipy.optimize.linear_sum_assignment``.
    """
    return _assign(cost_matrix, _vectorized_step)


def base_hungarian_algorithm(cost_matrix) -> tuple[jax.Array, jax.Array]:
    r"""Reference Hungarian algorithm with explicit per-column loops.

    Solves the same problem as :func:`hungarian_algorithm`,

    .. math::
      \min_\sigma \sum_{i} C_{i, \sigma(i)},

    visiting the columns one at a time instead of with vector operations:
    slower, and useful to cross-check the vectorised version. Jit-compilable.

    References:
      H. W. Kuhn, `The Hungarian method for the assignment problem
      <https://doi.org/10.1002/nav.3800020109>`_, 1955.

    Args:
      cost_matrix: finite real ``[n, m]`` costs.

    Returns:
      ``(rows, cols)``, int32 arrays of length ``min(n, m)`` with rows
      increasing.
    """
    return _assign(cost_matrix, _scalar_step)


__all__ = ["base_hungarian_algorithm", "hungarian_algorithm"]
