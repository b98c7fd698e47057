"""Shared statistics for the tests of optcore-stochastic.

Monte Carlo results are checked against analytic values with bounds derived
from the samples themselves: the sample mean of ``N`` per-sample Jacobians has
standard error ``std / sqrt(N)``, and a correct estimator lies within 4 of them
except with probability about 6e-5 per entry (Gaussian limit).
"""

import numpy as np
import pytest


def assert_mean_within_standard_errors(per_sample, expected, num_se=4.0, floor=1e-5):
    """Checks ``mean(per_sample, 0)`` against ``expected`` entrywise, to ``num_se`` standard errors.

    ``floor`` covers entries whose samples are all equal (zero spread), where
    only float rounding separates the mean from the exact value.
    """
    per_sample = np.asarray(per_sample, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    num = per_sample.shape[0]
    mean = per_sample.mean(axis=0)
    standard_error = per_sample.std(axis=0, ddof=1) / np.sqrt(num)
    bound = num_se * standard_error + floor * (1.0 + np.abs(expected))
    excess = np.abs(mean - expected) - bound
    assert np.all(excess <= 0), (
        f"mean {mean} differs from {expected} by more than {num_se} standard errors {standard_error}"
    )


@pytest.fixture
def within_se():
    return assert_mean_within_standard_errors
