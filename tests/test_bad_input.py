"""Bad input gets a clear error at trace time, naming what is wrong and where.

Gradients whose tree or shapes differ from the params the state was built
from fail in ``update`` (or, for stateless optimizers, in ``apply_updates``)
with the first mismatching path, for every registered optimizer; integer and
boolean params or gradients fail with a ``TypeError`` naming the path and
dtype; a schedule returning a non-scalar fails naming the argument; bad
hyperparameters, masks, labels and configs fail at construction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import registry_cases as rc

CASES = rc.optimizer_cases()



def _cases():
    return rc.case_params(CASES)


def _traced_step(case, params, grads):
    """Traces (without running) init, update and apply_updates."""
    opt = case.build()

    def step(params, grads):
        updates, _ = rc.update(opt, case.name, grads, opt.init(params), params)
        return optcore.apply_updates(params, updates)

    return jax.eval_shape(step, params, grads)


@pytest.mark.parametrize("case", _cases())
def test_transposed_gradient_names_the_path(case):
    params = rc.small_params(case.name)
    grads = jax.tree.map(jnp.zeros_like, params)
    grads["layer1"]["w"] = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match=r"\['layer1'\]\['w'\]: \w+ has shape \(2, 3\), \w+ has shape \((1, )?3, 2\)"):
        _traced_step(case, params, grads)


@pytest.mark.parametrize("case", _cases())
def test_missing_gradient_entry_names_the_path(case):
    params = rc.small_params(case.name)
    grads = {"layer1": jax.tree.map(jnp.zeros_like, params["layer1"])}  # no 'scale'
    with pytest.raises(ValueError, match=r"\['scale'\]"):
        _traced_step(case, params, grads)


@pytest.mark.parametrize("case", _cases())
def test_integer_gradient_names_the_path_and_dtype(case):
    params = rc.small_params(case.name)
    grads = jax.tree.map(jnp.zeros_like, params)
    grads["layer1"]["w"] = jnp.zeros((2, 3), jnp.int32)
    with pytest.raises(TypeError, match=r"\['layer1'\]\['w'\]: gradient has dtype int32"):
        _traced_step(case, params, grads)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_], ids=["int32", "bool"])
@pytest.mark.parametrize("case", _cases())
def test_non_float_params_name_the_path_and_dtype(case, dtype):
    params = rc.small_params(case.name)
    params["layer1"]["w"] = params["layer1"]["w"].astype(dtype)
    grads = jax.tree.map(jnp.zeros_like, params)  # what a user would pass: jax.grad refuses integer inputs
    with pytest.raises(TypeError, match=rf"\['layer1'\]\['w'\]: \w+ has dtype {jnp.dtype(dtype).name}"):
        _traced_step(case, params, grads)


def test_float0_gradient_of_an_integer_leaf_is_refused():
    params = {"w": jnp.ones(3), "step": jnp.array(3)}
    grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2), allow_int=True)(params)
    opt = optcore.adam(1e-3)
    with pytest.raises(TypeError, match=r"\['step'\]: \w+ has dtype (int32|float0)"):
        opt.update(grads, opt.init(params), params)


def test_integer_leaves_masked_out_are_fine():
    """Integer leaves that an optimizer never sees (set_to_zero by label) keep working and keep their dtype."""
    params = {"w": jnp.ones(3), "step": jnp.array(3, jnp.int32)}
    opt = optcore.multi_transform({"train": optcore.adam(0.1), "freeze": optcore.set_to_zero()},
                                  {"w": "train", "step": "freeze"})
    grads = {"w": jnp.full(3, 2.0), "step": jnp.array(0, jnp.int32)}
    updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    new_params = optcore.apply_updates(params, updates)
    assert new_params["step"].dtype == jnp.int32 and int(new_params["step"]) == 3
    np.testing.assert_allclose(np.asarray(new_params["w"]), 0.9, rtol=1e-6)  # Adam's first step: -lr * sign(g)


def _vector_schedule(count):
    return jnp.full((3,), 0.1) * (count + 1)


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: optcore.scale_by_learning_rate(_vector_schedule), "learning_rate"),
        (lambda: optcore.sgd(_vector_schedule), "learning_rate"),
        (lambda: optcore.sgd(_vector_schedule, momentum=0.9), "learning_rate"),
        (lambda: optcore.adam(_vector_schedule), "learning_rate"),
        (lambda: optcore.scale_by_schedule(lambda count: jnp.ones((1,))), "step_size_fn"),
    ],
    ids=["scale_by_learning_rate", "sgd", "sgd_momentum", "adam", "scale_by_schedule"],
)
def test_schedule_returning_a_vector_names_the_argument_at_first_trace(build, argument):
    opt = build()
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=rf"^{argument}: the schedule must return a scalar, but it returned shape"):
        jax.jit(opt.update)(params, opt.init(params), params)


def test_scalar_array_schedule_is_accepted():
    opt = optcore.sgd(lambda count: jnp.asarray(0.5) / (count + 1))
    params = {"w": jnp.ones(3)}
    updates, state = opt.update(params, opt.init(params), params)
    updates, _ = opt.update(params, state, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.25)


def test_vector_learning_rate_fails_at_construction():
    with pytest.raises(ValueError, match="learning_rate must be a scalar or a schedule, got shape \\(2,\\)"):
        optcore.sgd(jnp.array([0.1, 0.2]))


def test_adafactor_without_params_names_the_path():
    """Without params, the factored statistics' shapes still reveal a gradient of another shape."""
    tx = optcore.scale_by_factored_rms(min_dim_size_to_factor=2)
    params = {"w": jnp.ones((4, 3)), "b": jnp.ones(3)}
    state = tx.init(params)
    with pytest.raises(ValueError, match=r"\['w'\]: state v_col has shape \(4,\), but a gradient of shape \(5, 3\)"):
        tx.update({"w": jnp.ones((5, 3)), "b": jnp.ones(3)}, state)
    with pytest.raises(ValueError, match=r"\['b'\]: state has shape \(3,\), gradient has shape \(2,\)"):
        tx.update({"w": jnp.ones((4, 3)), "b": jnp.ones(2)}, state)


def test_per_example_gradients_need_one_batch_axis():
    if "dpsgd" not in {case.name for case in CASES}:
        pytest.skip("dpsgd is in optcore-contrib, which is not installed")
    dpsgd = optcore.get("dpsgd", learning_rate=0.1, l2_norm_clip=1.0, noise_multiplier=0.1, seed=0)
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones(())}
    state = dpsgd.init(params)
    with pytest.raises(ValueError, match=r"\['b'\]: batch axis has 5 examples, but \['a'\] has 4"):
        dpsgd.update({"a": jnp.ones((4, 2, 3)), "b": jnp.ones(5)}, state, params)
    updates, _ = dpsgd.update({"a": jnp.ones((4, 2, 3)), "b": jnp.ones(4)}, state, params)
    assert jax.tree.map(jnp.shape, updates) == {"a": (2, 3), "b": ()}


def test_moment_update_message_is_exact():
    opt = optcore.adam(1e-3)
    params = {"layer1": {"w": jnp.zeros((64, 32))}}
    with pytest.raises(ValueError) as info:
        opt.update({"layer1": {"w": jnp.zeros((32, 64))}}, opt.init(params))
    assert str(info.value) == "['layer1']['w']: state has shape (64, 32), gradient has shape (32, 64)."


def test_missing_entry_message_is_exact_against_the_state_and_the_params():
    params = {"w": jnp.zeros(3), "b": jnp.zeros(2)}
    grads = {"w": jnp.zeros(3)}
    opt = optcore.adam(1e-3)
    with pytest.raises(ValueError) as info:
        opt.update(grads, opt.init(params))
    assert str(info.value) == ("['b']: the state has an entry here that the gradient lacks "
                               "(the gradient tree does not match the params the state was built from).")
    decay = optcore.add_decayed_weights(0.1)
    with pytest.raises(ValueError) as info:
        decay.update(grads, decay.init(params), params)
    assert str(info.value) == ("['b']: the params has an entry here that the gradient lacks "
                               "(the gradient tree does not match the params).")


def test_apply_updates_refuses_to_broadcast():
    with pytest.raises(ValueError, match=r"\['w'\]: params has shape \(3,\), updates has shape \(\)"):
        optcore.apply_updates({"w": jnp.zeros(3)}, {"w": jnp.zeros(())})


@pytest.mark.parametrize(
    "build, argument",
    [
        (lambda: optcore.adam(1e-3, b1=1.5), "b1"),
        (lambda: optcore.adam(1e-3, b2=-0.1), "b2"),
        (lambda: optcore.adam(1e-3, eps=-1.0), "eps"),
        (lambda: optcore.sgd(1e-3, momentum=2.0), "decay"),
        (lambda: optcore.add_decayed_weights(float("nan")), "weight_decay"),
        (lambda: optcore.apply_if_finite(optcore.sgd(0.1), max_consecutive_errors=-1), "max_consecutive_errors"),
    ],
)
def test_invalid_hyperparameters_fail_at_construction(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


def test_mask_with_wrong_structure_fails_at_first_trace():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    opt = optcore.masked(optcore.sgd(0.1), {"a": True})
    with pytest.raises(ValueError):
        jax.eval_shape(lambda p: opt.update(p, opt.init(p), p), params)


def test_multi_transform_label_without_transform_fails():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    opt = optcore.multi_transform({"x": optcore.sgd(0.1)}, {"a": "x", "b": "y"})
    with pytest.raises(ValueError, match="y"):
        opt.init(params)


@pytest.mark.parametrize(
    "config, pattern",
    [
        ({"name": "adam", "learning_rate": 1e-3, "beta1": 0.9}, "beta1"),
        ({"name": "adam"}, "learning_rate"),
        ({"learning_rate": 1e-3}, "name"),
        ({"name": 3}, "name"),
        ({"name": "adam", "learning_rate": 1e-3, "args": "oops"}, "args"),
        ({"name": "chain", "args": [{"name": "scale", "stepsize": 1.0}]}, "stepsize"),
    ],
)
def test_malformed_configs_name_the_key(config, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern):
        optcore.from_config(config)


def test_complex_params_match_a_real_reference():
    """Adam on complex params equals Adam on (real, imag) pairs with |g|^2 = re^2 + im^2."""
    z = jnp.array([1.0 + 2.0j, -0.5 + 0.25j], jnp.complex64)
    g = jnp.array([0.3 - 0.1j, -0.2 + 0.4j], jnp.complex64)
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    opt = optcore.adam(lr, b1=b1, b2=b2, eps=eps)
    state = opt.init(z)
    params = z
    m = np.zeros(2, np.complex128)
    v = np.zeros(2)
    expected = np.asarray(z, np.complex128)
    for t in range(1, 4):
        updates, state = opt.update(g, state, params)
        params = optcore.apply_updates(params, updates)
        gn = np.asarray(g, np.complex128)
        m = b1 * m + (1 - b1) * gn
        v = b2 * v + (1 - b2) * np.abs(gn) ** 2
        expected = expected - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    assert params.dtype == jnp.complex64
    np.testing.assert_allclose(np.asarray(params), expected, rtol=1e-5)
