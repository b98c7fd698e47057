"""optcore-stochastic: Monte Carlo gradient estimators and control variates for optcore.

The estimators of Optax's former ``monte_carlo`` module (Optax 0.1.8 to 0.2.6)
and Optax's perturbation smoothing (``optax.perturbations``). Once installed,
everything is reachable as ``optcore.stochastic.<name>``, ``optcore.<name>``
and ``optcore.get("<name>")``; the perturbations also as ``optcore.perturbations``.

Submodules: :mod:`~optcore_stochastic.stochastic_gradient_estimators`,
:mod:`~optcore_stochastic.control_variates`, :mod:`~optcore_stochastic.utils`
(``multi_normal``) and :mod:`~optcore_stochastic.perturbations`.
"""

from optcore_stochastic import control_variates, perturbations, stochastic_gradient_estimators, utils
from optcore_stochastic.control_variates import (
    control_delta_method,
    control_variates_jacobians,
    estimate_control_variate_coefficients,
    moving_avg_baseline,
)
from optcore_stochastic.perturbations import Gumbel, Normal, make_perturbed_fun
from optcore_stochastic.stochastic_gradient_estimators import (
    measure_valued_estimation_mean,
    measure_valued_estimation_std,
    measure_valued_jacobians,
    pathwise_jacobians,
    score_function_jacobians,
)
from optcore_stochastic.utils import multi_normal

__version__ = "0.1.0"

ESTIMATORS = (
    "measure_valued_estimation_mean",
    "measure_valued_estimation_std",
    "measure_valued_jacobians",
    "pathwise_jacobians",
    "score_function_jacobians",
)
CONTROL_VARIATES = (
    "control_delta_method",
    "control_variates_jacobians",
    "estimate_control_variate_coefficients",
    "moving_avg_baseline",
)
UTILITIES = ("Gumbel", "Normal", "make_perturbed_fun", "multi_normal")

__all__ = sorted(ESTIMATORS + CONTROL_VARIATES + UTILITIES)
