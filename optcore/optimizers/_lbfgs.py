"""The L-BFGS optimizer: L-BFGS directions with a zoom line search."""

from __future__ import annotations

from typing import Optional

from optcore import base
from optcore.kit import static_args
from optcore.transforms import chain, scale, scale_by_learning_rate, scale_by_lbfgs, scale_by_zoom_linesearch


@static_args("memory_size")
def lbfgs(
    learning_rate: Optional[base.ScalarOrSchedule] = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: Optional[base.GradientTransformationExtraArgs] = scale_by_zoom_linesearch(
        max_linesearch_steps=20, initial_guess_strategy="one"
    ),
) -> base.GradientTransformationExtraArgs:
    r"""L-BFGS: quasi-Newton directions scaled by a line search.

    .. math::
        w_{k+1} = w_k - \eta_k P_k \nabla f(w_k)

    with :math:`P_k` the L-BFGS inverse-Hessian approximation
    (:func:`optcore.scale_by_lbfgs`) and :math:`\eta_k` from the line search
    (or ``learning_rate``). ``update`` needs the extra arguments ``value``,
    ``grad`` and ``value_fn``; :func:`optcore.value_and_grad_from_state` reuses
    the value and gradient the line search computed. Nocedal & Wright,
    *Numerical Optimization*, Algorithm 7.5, 1999.

    Args:
      learning_rate: a fixed step or schedule; ``None`` uses -1 (the sign flip)
        and leaves the step to the line search.
      memory_size: the number of curvature pairs kept.
      scale_init_precond: scale the initial preconditioner (see
        :func:`optcore.scale_by_lbfgs`).
      linesearch: the line search applied to the direction, or ``None``.
    """
    if learning_rate is None:
        base_scaling = scale(-1.0)
    else:
        base_scaling = scale_by_learning_rate(learning_rate)
    members = [scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond), base_scaling]
    if linesearch is not None:
        members.append(linesearch)
    return chain(*members)
