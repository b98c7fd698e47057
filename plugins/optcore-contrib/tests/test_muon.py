"""Muon's preconditionings against NumPy norms, and the polar factor they all converge to."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore_contrib as cc

RNG = np.random.default_rng(5)
IDENTITY_ITERATION = ((1.0, 0.0, 0.0),)  # X_1 = X_0: the update is the preconditioned momentum


def _preconditioned(g, preconditioning, eps=1e-8):
    tx = cc.scale_by_muon(IDENTITY_ITERATION, beta=0.0, eps=eps, nesterov=False, preconditioning=preconditioning)
    update, _ = tx.update(jnp.asarray(g), tx.init(jnp.asarray(g)))
    return np.asarray(update, np.float64)


def _numpy_preconditioned(g, preconditioning, eps=1e-8):
    g = g.astype(np.float64)
    wide = g if g.shape[0] <= g.shape[1] else g.T  # the iteration works on X with rows <= cols
    singular_values = np.linalg.svd(wide, compute_uv=False)
    if preconditioning == "frobenius":
        out = wide / (np.sqrt(np.sum(singular_values**2)) + eps)
    elif preconditioning == "spectral":
        out = wide / (singular_values[0] + eps)
    elif preconditioning == "schatten":  # (sum sigma^4)^(1/4), squared norm floored at 1e-8
        out = wide / np.sqrt(max(np.sqrt(np.sum(singular_values**4)), 1e-8))
    else:  # AOL: row i over sqrt(sum_j |X X^T|_ij)
        row_sums = np.abs(wide @ wide.T).sum(axis=1, keepdims=True)
        out = wide / np.sqrt(np.maximum(row_sums, 1e-8))
    return out if g.shape[0] <= g.shape[1] else out.T


@pytest.mark.parametrize("shape", [(3, 5), (6, 4)])
@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol", "schatten"])
def test_preconditioning_matches_numpy_norms(preconditioning, shape):
    g = RNG.normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(_preconditioned(g, preconditioning), _numpy_preconditioned(g, preconditioning), rtol=1e-5)
    # Every rescaling bounds the spectral norm by 1, so Newton-Schulz converges.
    assert np.linalg.norm(_preconditioned(g, preconditioning), 2) <= 1 + 1e-5


@pytest.mark.parametrize("preconditioning", ["aol", "schatten"])
def test_vanishing_momentum_gives_zero_or_bounded_updates(preconditioning):
    assert np.all(_preconditioned(np.zeros((3, 4), np.float32), preconditioning) == 0)
    tiny = RNG.normal(size=(3, 4)).astype(np.float32) * 1e-12
    np.testing.assert_allclose(_preconditioned(tiny, preconditioning), tiny * 1e4, rtol=1e-5)  # scale capped at 1e4


@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol", "schatten"])
def test_every_preconditioning_converges_to_the_polar_factor(preconditioning):
    g = RNG.normal(size=(6, 4)).astype(np.float32)
    tx = cc.scale_by_muon(((2.0, -1.5, 0.5),) * 30, nesterov=False, preconditioning=preconditioning)
    u, _ = tx.update(jnp.asarray(g), tx.init(jnp.asarray(g)))
    # The norms rescale G as a whole; AOL rescales its rows, so its limit is the
    # polar factor of the row-scaled matrix D G instead.
    target = _numpy_preconditioned(g, "aol") if preconditioning == "aol" else g
    left, _, vt = np.linalg.svd(target, full_matrices=False)
    np.testing.assert_allclose(u, left @ vt, atol=1e-3)


@pytest.mark.parametrize("preconditioning", ["frobenius", "aol"])
def test_ns_steps_as_an_array_iterates_as_many_times(preconditioning):
    """A traced ns_steps (optax.inject_hyperparams without static_args) loops that many times: same numbers."""
    m = jnp.asarray(np.random.default_rng(3).normal(size=(6, 9)), jnp.float32)
    params = {"w": m}

    def update(ns_steps):
        tx = cc.scale_by_muon(ns_steps=ns_steps, preconditioning=preconditioning)
        return tx.update(params, tx.init(params), params)[0]["w"]

    static = jax.jit(lambda: update(3))()
    traced = jax.jit(update)(jnp.asarray(3))
    np.testing.assert_allclose(traced, static, rtol=1e-6, atol=1e-7)
    assert not np.allclose(jax.jit(update)(jnp.asarray(1)), static, atol=1e-3)  # the count is really used


def test_an_unknown_preconditioning_is_named_with_the_choices():
    with pytest.raises(ValueError, match=r"preconditioning must be one of \(.*'frobenius'.*\), got 'polar'"):
        cc.scale_by_muon(preconditioning="polar")


@pytest.mark.parametrize("shape", [(), (4,)])
def test_scale_by_muon_names_a_leaf_that_is_not_a_matrix(shape):
    params = {"w": jnp.ones((3, 4)), "b": jnp.ones(shape)}
    tx = cc.scale_by_muon()
    with pytest.raises(ValueError, match=re.escape(f"shape {shape}") + r".*use muon\(\)"):
        tx.update(params, tx.init(params), params)
    # muon() routes the non-matrix leaf to Adam; None in weight_dimension_numbers passes its
    # bias-corrected momentum through, which at the first step (no Nesterov) is the gradient.
    numbers = {"w": cc.MuonDimensionNumbers(), "b": None}
    u, _ = cc.scale_by_muon(nesterov=False, weight_dimension_numbers=numbers).update(params, tx.init(params), params)
    np.testing.assert_allclose(u["b"], params["b"], rtol=1e-6)
    assert cc.muon(0.1).update(params, cc.muon(0.1).init(params), params)[0]["b"].shape == shape
