"""Compiled structure of fused training steps: the copies and written-out temporaries that cost time.

These pin the performance fixes of issue 8 on XLA:CPU (the backend CI runs):
Lion's donated momentum is updated in place instead of copied first, and
``clip_by_global_norm`` adds no written-out clipped gradient per leaf in front
of Adam. Each also checks the step's numbers against a NumPy reference, so
the structure is not bought with different arithmetic.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore

cpu_only = pytest.mark.skipif(jax.default_backend() != "cpu", reason="fusion decisions are XLA:CPU's")


def _donated_step(opt):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optcore.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def _entry(compiled_text: str) -> str:
    return compiled_text[compiled_text.index("ENTRY") :]


@cpu_only
def test_lion_updates_momentum_in_place_without_copy():
    size = 1 << 17  # above the size from which the copy is avoided
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=size), jnp.float32)}
    grads = {"w": jnp.asarray(rng.normal(size=size), jnp.float32)}
    mu = rng.normal(size=size).astype(np.float32)
    opt = optcore.lion(1e-2, b1=0.9, b2=0.99, weight_decay=1e-3)
    state = opt.init(params)
    state = (state[0]._replace(mu={"w": jnp.asarray(mu)}),) + tuple(state[1:])
    compiled = _donated_step(opt).lower(params, state, grads).compile()
    assert " copy(" not in _entry(compiled.as_text())

    p0, g = np.asarray(params["w"]), np.asarray(grads["w"])
    new_params, new_state = compiled(params, state, grads)
    c = np.float32(0.1) * g + np.float32(0.9) * mu
    expected_params = p0 - np.float32(1e-2) * (np.sign(c) + np.float32(1e-3) * p0)
    expected_mu = np.float32(0.01) * g + np.float32(0.99) * mu
    np.testing.assert_allclose(np.asarray(new_params["w"]), expected_params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(new_state[0].mu["w"]), expected_mu, rtol=1e-6, atol=1e-7)


@cpu_only
def test_clip_by_global_norm_adds_no_clipped_copy_per_leaf():
    leaves = 12
    rng = np.random.default_rng(1)
    params = {f"v{i:02d}": jnp.asarray(rng.normal(size=7), jnp.float32) for i in range(leaves)}
    grads = jax.tree.map(lambda x: 3.0 * x, params)  # global norm ~ 27, so the clip is active
    max_norm = 1.0

    def small_leaf_kernels(opt):
        state = opt.init(params)
        text = _entry(_donated_step(opt).lower(params, state, grads).compile().as_text())
        return len(re.findall(r"= f32\[7\]\{0\} fusion\(", text))

    adam = lambda: optcore.adamw(1e-2, weight_decay=1e-4)  # noqa: E731
    clipped = optcore.chain(optcore.clip_by_global_norm(max_norm), adam())
    # Adam writes params, mu and nu per leaf; the clip only adds a reduction (a scalar).
    assert small_leaf_kernels(clipped) == small_leaf_kernels(adam()) == 3 * leaves

    updates, _ = optcore.clip_by_global_norm(max_norm).update(grads, optcore.EmptyState())
    g = np.concatenate([np.asarray(x, np.float64) for x in jax.tree.leaves(grads)])
    norm = np.sqrt(np.sum(g**2))
    for got, want in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want, np.float64) * max_norm / norm, rtol=2e-6)
    # Within the bound the updates pass through bit for bit.
    small = jax.tree.map(lambda x: 1e-3 * x, grads)
    unchanged, _ = optcore.clip_by_global_norm(max_norm).update(small, optcore.EmptyState())
    for got, want in zip(jax.tree.leaves(unchanged), jax.tree.leaves(small)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@cpu_only
@pytest.mark.skipif(jax.device_count() != 1, reason="small leaves are grouped only on one device")
def test_global_norm_reduces_small_leaves_in_one_kernel():
    # 40 small vectors and one large matrix: the norm costs two reductions, not 41.
    rng = np.random.default_rng(2)
    tree = {f"v{i:02d}": jnp.asarray(rng.normal(size=5 + i), jnp.float32) for i in range(40)}
    tree["matrix"] = jnp.asarray(rng.normal(size=(200, 100)), jnp.float32)
    text = _entry(jax.jit(optcore.tree_utils.tree_norm).lower(tree).compile().as_text())
    reductions = re.findall(r"= f32\[\] (?:fusion|reduce)\(", text)
    assert len(reductions) <= 3, reductions  # small group, matrix, and at most one combining fusion

    flat = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])
    np.testing.assert_allclose(optcore.tree_utils.tree_norm(tree), np.linalg.norm(flat), rtol=1e-6)
