"""Runs an optcore optimizer and its Optax twin side by side (used by test_oracle_contrib)."""

import jax
import jax.numpy as jnp
import numpy as np


def make_problem(dtype=jnp.float32):
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.normal(size=(4, 3)), dtype),
        "b": jnp.asarray(rng.normal(size=(3,)), dtype),
    }
    target = {k: jnp.asarray(rng.normal(size=v.shape), dtype) for k, v in params.items()}
    scales = {k: jnp.asarray(rng.uniform(0.5, 2.0, size=v.shape), dtype) for k, v in params.items()}

    def loss(p):
        return sum(jnp.sum(scales[k] * (p[k] - target[k]) ** 2) for k in p) + 0.1

    return params, loss


def layout(state):
    """The nesting of NamedTuple class names and field names of a state."""
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return (type(state).__name__, tuple(state._fields), tuple(layout(x) for x in state))
    if isinstance(state, (tuple, list)):
        return tuple(layout(x) for x in state)
    if isinstance(state, dict):
        return {k: layout(v) for k, v in sorted(state.items())}
    return "leaf"


def run(opt, params, loss, steps, extra):
    state = opt.init(params)
    history = []

    @jax.jit
    def step(params, state):
        value, grad = jax.value_and_grad(loss)(params)
        kwargs = extra(value, loss)
        updates, state = opt.update(grad, state, params, **kwargs)
        new_params = jax.tree.map(lambda p, u: p + u, params, updates)
        return new_params, state, updates

    for _ in range(steps):
        params, state, updates = step(params, state)
        history.append(updates)
    return params, state, history
