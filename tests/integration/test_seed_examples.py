"""Every code example of the seed document (Optax's README), with `optax` replaced by `optcore`.

Each test runs the example as written and checks its numbers against an
independent computation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import optcore
from optcore import (
    adam,
    chain,
    clip_by_global_norm,
    flatten,
    polynomial_schedule,
    scale,
    scale_by_adam,
    scale_by_rms,
    scale_by_schedule,
)


def test_quickstart_adam_with_l2_loss():
    num_weights, learning_rate = 3, 0.1
    xs = jnp.array([1.0, 2.0, 3.0])
    ys = jnp.array(2.0)

    optimizer = optcore.adam(learning_rate)
    params = {"w": jnp.ones((num_weights,))}
    opt_state = optimizer.init(params)
    compute_loss = lambda params, x, y: optcore.l2_loss(params["w"].dot(x), y)  # noqa: E731
    grads = jax.grad(compute_loss)(params, xs, ys)
    updates, opt_state = optimizer.update(grads, opt_state)
    params = optcore.apply_updates(params, updates)

    # l2_loss = 0.5 (w.x - y)^2, so the gradient is (w.x - y) x = 4 x; Adam's first step is -lr * sign(g).
    np.testing.assert_allclose(grads["w"], 4.0 * np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(params["w"], 1.0 - learning_rate * np.ones(3), rtol=1e-6)


def test_scale_by_rms_example():
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([0.5, 2.0])}
    tx = scale_by_rms()
    state = tx.init(params)  # init stats
    grads, state = tx.update(grads, state, params)  # transform & update stats.
    # nu = 0.1 g^2; u = g / sqrt(nu + eps)
    expected = np.array([0.5, 2.0]) / np.sqrt(0.1 * np.array([0.5, 2.0]) ** 2 + 1e-8)
    np.testing.assert_allclose(grads["w"], expected, rtol=1e-5)


def test_chain_example_and_flatten_example():
    max_norm, learning_rate = 1.0, 0.1
    my_optimiser = chain(clip_by_global_norm(max_norm), scale_by_adam(eps=1e-4), scale(-learning_rate))
    params = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    updates, _ = my_optimiser.update(params, my_optimiser.init(params), params)
    # After clipping to norm 1, Adam's first step is g/|g| per coordinate (up to eps): -lr each.
    np.testing.assert_allclose(updates["a"], [-learning_rate * 0.6 / (0.6 + 1e-4)], rtol=1e-5)

    my_optimiser = flatten(adam(learning_rate))
    state = my_optimiser.init(params)
    flat_updates, _ = my_optimiser.update(params, state)
    plain_updates, _ = adam(learning_rate).update(params, adam(learning_rate).init(params))
    np.testing.assert_allclose(flat_updates["b"], plain_updates["b"], rtol=1e-6)


def test_polynomial_schedule_example(capsys):
    schedule_fn = polynomial_schedule(init_value=1.0, end_value=0.0, power=1, transition_steps=5)
    for step_count in range(6):
        print(schedule_fn(step_count))  # [1., 0.8, 0.6, 0.4, 0.2, 0.]
    printed = [float(line) for line in capsys.readouterr().out.split()]
    np.testing.assert_allclose(printed, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-7)


def test_schedule_inside_chain_example():
    learning_rate, max_norm = 0.1, 1.0
    schedule_fn = polynomial_schedule(init_value=-learning_rate, end_value=0.0, power=1, transition_steps=5)
    optimiser = chain(clip_by_global_norm(max_norm), scale_by_adam(eps=1e-4), scale_by_schedule(schedule_fn))
    params = jnp.array([0.3])
    state = optimiser.init(params)
    steps = []
    for _ in range(6):
        updates, state = optimiser.update(jnp.array([0.3]), state)
        steps.append(float(updates[0]))
    # A constant gradient gives Adam direction ~1, scaled by the schedule -0.1, -0.08, ..., 0.
    np.testing.assert_allclose(steps, [-0.1, -0.08, -0.06, -0.04, -0.02, 0.0], rtol=1e-3, atol=1e-6)


def test_alias_definition_example():
    from optcore import scale_and_decay

    def adamw(learning_rate, b1, b2, eps, weight_decay):
        return chain(
            scale_by_adam(b1=b1, b2=b2, eps=eps),
            scale_and_decay(-learning_rate, weight_decay=weight_decay))

    params = {"w": jnp.array([1.0, 2.0])}
    grads = {"w": jnp.array([0.1, -0.2])}
    mine = adamw(0.01, 0.9, 0.999, 1e-8, 1e-2)
    ours = optcore.adamw(0.01, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2)
    got, _ = mine.update(grads, mine.init(params), params)
    want, _ = ours.update(grads, ours.init(params), params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)


def test_apply_updates_example():
    tx = optcore.sgd(0.5)
    params = {"w": jnp.array([1.0, 2.0], jnp.bfloat16)}
    grads = {"w": jnp.array([1.0, 1.0], jnp.float32)}
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)  # transform & update stats.
    new_params = optcore.apply_updates(params, updates)  # update the parameters.
    assert new_params["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(new_params["w"], np.float32), [0.5, 1.5])


def test_losses_example_huber():
    from optcore import huber_loss

    predictions = jnp.array([0.0, 0.5, 3.0])
    targets = jnp.zeros(3)
    loss = huber_loss(predictions, targets)
    expected = np.array([0.0, 0.125, 2.5])  # 0.5 x^2 inside |x| <= 1, |x| - 0.5 outside
    np.testing.assert_allclose(loss, expected)
    avg_loss = jnp.mean(huber_loss(predictions, targets))
    sum_loss = jnp.sum(huber_loss(predictions, targets))
    np.testing.assert_allclose([avg_loss, sum_loss], [expected.mean(), expected.sum()], rtol=1e-6)


def test_pathwise_jacobians_example():
    from optcore.stochastic import pathwise_jacobians, utils

    rng = jax.random.PRNGKey(0)
    num_samples = 1000
    weights = jnp.array([1.0, -2.0, 0.5])
    mean, log_scale = jnp.zeros(3), jnp.zeros(3)
    optim = optcore.adam(0.1)
    optim_state = optim.init([mean, log_scale])

    dist_params = [mean, log_scale]
    function = lambda x: jnp.sum(x * weights)  # noqa: E731
    jacobians = pathwise_jacobians(function, dist_params, utils.multi_normal, rng, num_samples)
    mean_grads = jnp.mean(jacobians[0], axis=0)
    log_scale_grads = jnp.mean(jacobians[1], axis=0)
    grads = [mean_grads, log_scale_grads]
    optim_update, optim_state = optim.update(grads, optim_state)
    updated_dist_params = optcore.apply_updates(dist_params, optim_update)

    # d/dmu E[w.x] = w exactly for the pathwise estimator of a linear function.
    np.testing.assert_allclose(mean_grads, weights, rtol=1e-5)
    np.testing.assert_allclose(updated_dist_params[0], -0.1 * np.sign(weights), rtol=1e-5)
