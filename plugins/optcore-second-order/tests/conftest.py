"""Fixtures for the optcore-second-order tests."""

import pytest

from second_order_models import make_linear_problem, make_mlp_problem


@pytest.fixture
def linear_problem():
    return make_linear_problem()


@pytest.fixture
def mlp_problem():
    return make_mlp_problem()
