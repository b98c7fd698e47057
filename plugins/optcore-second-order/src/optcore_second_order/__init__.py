"""optcore-second-order: curvature information without quadratic memory.

Optax-compatible ``hvp``, ``hessian_diag`` and ``fisher_diag`` (the deprecated
``optax.second_order`` of 0.2.8, same signatures and results), with exact
diagonals computed in memory linear in the parameter count, plus an empirical
Fisher diagonal, Hutchinson's stochastic Hessian diagonal and a Gauss-Newton
diagonal. Every diagonal takes ``as_tree=True`` to come back shaped like
``params`` (one block per leaf) instead of as one flat vector.

Reached as ``optcore.second_order`` once installed.
"""

from optcore_second_order._fisher import empirical_fisher_diag, fisher_diag
from optcore_second_order._gauss_newton import gauss_newton_diag
from optcore_second_order._hessian import hessian_diag, hutchinson_hessian_diag, hvp

__version__ = "0.1.0"

__all__ = [
    "empirical_fisher_diag",
    "fisher_diag",
    "gauss_newton_diag",
    "hessian_diag",
    "hutchinson_hessian_diag",
    "hvp",
]
