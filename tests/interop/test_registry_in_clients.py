"""Every registered optimizer inside the real clients: ``flax.nnx.Optimizer`` and Orbax.

The other client tests compare chosen recipes with Optax. These walk the
registry, so plugins' optimizers (and later ones) are covered without editing
the test: each one must train inside ``nnx.Optimizer`` exactly as it trains in
a plain jitted loop, and its state must survive an Orbax checkpoint (restored
into the abstract target ``jax.eval_shape(opt.init, params)``) bit for bit.

The model has a (64, 80) matrix, large enough for the low-bit plugin to
quantize its state (block-wise, and rank-1 for ``adamw_4bit``'s second
moment), and a scalar.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import optcore
import optcore.testing as kit
import registry_cases
from _interop import assert_moved

STEPS = 3


class Model(nnx.Module):
    def __init__(self):
        self.w = nnx.Param(jnp.linspace(-1.0, 1.0, 64 * 80, dtype=jnp.float32).reshape(64, 80))
        self.scale = nnx.Param(jnp.float32(1.5))


def _pure_params(model):
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def _assert_same_leaves(actual, expected, what):
    """Leaf by leaf (the nnx state's containers are ``State`` where the plain run has dicts): dtype and bytes."""
    actual, expected = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} leaves vs {len(expected)}"
    for index, (a, e) in enumerate(zip(actual, expected)):
        a, e = kit.raw(a), kit.raw(e)
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what} leaf {index}: {a.dtype}{a.shape} vs {e.dtype}{e.shape}"
        assert a.tobytes() == e.tobytes(), f"{what} leaf {index} differs"


# Limits of the clients themselves, not of optcore: strict, so that a client release that lifts one shows.
CLIENT_LIMITS = {
    ("orbax", "galore"): "Orbax 0.12.8 cannot save zero-size arrays, and GaLore's state holds a (0, 0) projector "
                         "for each param of fewer than two axes (Optax 0.2.8's layout, kept for drop-in checkpoints)",
}


def _cases(client):
    out = []
    for case in registry_cases.optimizer_cases():
        marks = [pytest.mark.skip(case.skip)] if case.skip else []
        if (client, case.name) in CLIENT_LIMITS:
            marks.append(pytest.mark.xfail(reason=CLIENT_LIMITS[client, case.name], strict=True))
        out.append(pytest.param(case, id=case.name, marks=marks))
    return out


def _harness(case):
    # The objective's value, gradient and value_fn go to every update (those that take none ignore them),
    # per-example optimizers get a batch of one.
    return registry_cases.harness_of(case.name, case.build())


def _plain_run(harness, params, state=None):
    """The reference: ``STEPS`` jitted steps on the plain params dict, the gradient taken inside the step
    (as the nnx step takes it), so that XLA compiles the same arithmetic and the results agree bit for bit."""
    step = jax.jit(harness.step)
    state = harness.opt.init(params) if state is None else state
    for _ in range(STEPS):
        params, state = step(params, state)
    return params, state


def _assert_nnx_matches_plain_loop(harness):
    model = Model()
    optimizer = nnx.Optimizer(model, harness.opt, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer):
        params = nnx.as_pure(nnx.state(model, nnx.Param))
        grads = nnx.grad(lambda m: kit.objective(nnx.state(m, nnx.Param)))(model)
        optimizer.update(model, harness.gradient(grads), **harness.extra_args(params, nnx.as_pure(grads)))

    for _ in range(STEPS):
        nnx_step(model, optimizer)
    reference_params, reference_state = _plain_run(harness, _pure_params(Model()))
    _assert_same_leaves(_pure_params(model), reference_params, "params")
    _assert_same_leaves(nnx.as_pure(optimizer.opt_state), reference_state, "optimizer state")
    assert_moved(_pure_params(Model()), reference_params)


@pytest.mark.parametrize("case", _cases("nnx"))
def test_every_optimizer_trains_inside_nnx_optimizer_as_in_a_plain_loop(case):
    """``nnx.Optimizer`` stores the state in ``OptState`` variables and writes each step's new state back
    path by path: a state node nested inside a variable would come back as a plain mapping."""
    _assert_nnx_matches_plain_loop(_harness(case))


QUANTIZE_STATE = {
    "blocks": {"bits": 8},
    "rank1_stochastic": {"bits": 4, "nonnegative_scaling": "rank1", "rounding": "stochastic"},
}


@pytest.mark.parametrize("inner", ["adamw", "sm3"])
@pytest.mark.parametrize("variant", sorted(QUANTIZE_STATE))
def test_quantize_state_trains_inside_nnx_optimizer_as_in_a_plain_loop(variant, inner):
    """The low-bit wrapper quantizes an inner state built inside nnx variables (sm3: a list per param)."""
    lowbit = pytest.importorskip("optcore_lowbit")
    tx = lowbit.quantize_state(optcore.get(inner)(1e-2), **QUANTIZE_STATE[variant])
    _assert_nnx_matches_plain_loop(registry_cases.harness_of(inner, tx))


@pytest.mark.parametrize("case", _cases("orbax"))
def test_every_optimizer_state_survives_an_orbax_checkpoint(tmp_path, case):
    harness = _harness(case)
    tx = harness.opt
    params, state = _plain_run(harness, _pure_params(Model()))
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", {"params": params, "state": state})
    checkpointer.wait_until_finished()
    target = jax.eval_shape(lambda p: {"params": p, "state": tx.init(p)}, params)
    restored = checkpointer.restore(tmp_path / "ckpt", target)
    kit.assert_bitwise_equal(restored, {"params": params, "state": state}, "restored checkpoint")
    kit.assert_bitwise_equal(_plain_run(harness, restored["params"], restored["state"]),
                             _plain_run(harness, params, state), "training continued from the checkpoint")
