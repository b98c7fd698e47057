"""Clear errors for bad arguments, and the plugin's registration with optcore."""

import jax
import jax.numpy as jnp
import pytest

import optcore
import optcore_second_order
from second_order_models import linear_loss, mlp_predict, softmax_cross_entropy
from optcore_second_order import (
    empirical_fisher_diag,
    fisher_diag,
    gauss_newton_diag,
    hessian_diag,
    hutchinson_hessian_diag,
    hvp,
)

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p, x, y: hessian_diag(linear_loss, p, x, y, chunk_size=0), ValueError, "chunk_size"),
        (lambda p, x, y: hessian_diag(linear_loss, p, x, y, chunk_size=2.5), TypeError, "chunk_size"),
        (lambda p, x, y: hessian_diag(linear_loss, p, x, y, chunk_size=True), TypeError, "chunk_size"),
        (lambda p, x, y: hessian_diag("loss", p, x, y), TypeError, "loss must be callable"),
        (lambda p, x, y: hvp(linear_loss, jnp.ones(3), p, x, y), ValueError, "size 6"),
        (lambda p, x, y: hutchinson_hessian_diag(linear_loss, p, x, y, KEY, num_samples=0),
         ValueError, "num_samples"),
        (lambda p, x, y: hutchinson_hessian_diag(linear_loss, p, x, y, 0), TypeError, "key"),
        (lambda p, x, y: empirical_fisher_diag(linear_loss, p, x, y, chunk_size=-1),
         ValueError, "chunk_size"),
        (lambda p, x, y: empirical_fisher_diag(linear_loss, p, x, y[:3]), ValueError, "batch size"),
        (lambda p, x, y: fisher_diag(None, p, x, y), TypeError, "negative_log_likelihood"),
        (lambda p, x, y: gauss_newton_diag(mlp_predict, 3, p, x, y), TypeError, "output_loss"),
        (lambda p, x, y: hessian_diag(linear_loss, {}, x, y), ValueError, "no entries"),
        (lambda p, x, y: hessian_diag(linear_loss, jnp.arange(3), x, y), TypeError, "floating"),
    ],
)
def test_bad_arguments_raise_clear_errors(linear_problem, call, error, match):
    with pytest.raises(error, match=match):
        call(*linear_problem)


def test_registered_with_optcore():
    assert optcore.second_order is optcore_second_order
    for name in optcore_second_order.__all__:
        obj = getattr(optcore_second_order, name)
        assert optcore.get(name) is obj
        assert getattr(optcore.second_order, name) is obj
        assert getattr(optcore, name) is obj
    kinds = {row.name: row.kind for row in optcore.available() if row.distribution == "optcore-second-order"}
    assert kinds == {**{name: "curvature" for name in optcore_second_order.__all__},
                     "second_order": "namespace"}


def test_catalog_block_matches_registration():
    from optcore.plugins import _catalog  # the core's own table, checked against what we register

    (entry,) = [p for p in _catalog.FIRST_PARTY if p.distribution == "optcore-second-order"]
    assert entry.namespaces == ("second_order",)
    assert set(entry.names) == set(optcore_second_order.__all__)
