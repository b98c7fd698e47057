"""ZeRO (``optcore.sharding.state_shardings``) for Optax's own optimizers and for chains mixing them with ours.

Optax's inits make their moments with ``jnp.zeros_like``, which ignores the
param's value: to XLA they are constants, and its sharding propagation left
them whole on every device (``state_shardings(optax.adamw(...))`` split
nothing, silently). They now take the layout of the params of their shape.
One subprocess with 8 fake CPU devices (see tests/test_zero_sharding.py) runs
``optax.adamw`` alone and inside an optcore chain on a transformer-shaped
tree: every params-shaped state leaf must be split over ``data`` (about 1/8
of the replicated state per device), and five jitted steps on those
shardings must give the numbers of the same optimizer on one device.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from optcore.testing import fake_devices_env

pytest.importorskip("optax")

DEVICES = 8
CASES = ["optax.adamw", "optcore.chain(clip, optax.adamw)"]


def _worker() -> dict:
    import jax
    import numpy as np
    import optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import optcore
    from test_zero_sharding import transformer_params

    host = transformer_params(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), host) for _ in range(5)]
    mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(AxisType.Auto,))
    replicated = NamedSharding(mesh, P())
    shapes = {p.shape for p in jax.tree.leaves(host)}
    report = {}
    for name in CASES:
        opt = optax.adamw(1e-2) if name == "optax.adamw" else optcore.chain(optcore.clip_by_global_norm(1.0), optax.adamw(1e-2))

        def step(params, state, g, opt=opt):
            updates, state = opt.update(g, state, params)
            return optcore.apply_updates(params, updates), state

        params, state = jax.device_put(host, jax.devices()[0]), None
        state = opt.init(params)
        for g in grads:
            params, state = jax.jit(step)(params, state, g)
        want = jax.tree.map(np.asarray, params)

        params = jax.device_put(host, replicated)
        shardings = optcore.sharding.state_shardings(opt, params, mesh)
        errors = []
        for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(jax.eval_shape(opt.init, host)),
                                          jax.tree.leaves(shardings)):
            if leaf.shape in shapes and leaf.size >= DEVICES and "data" not in str(sharding.spec):
                errors.append(f"state{jax.tree_util.keystr(path)} {leaf.shape} on {sharding.spec}: not split")
        state = jax.jit(opt.init, out_shardings=shardings)(params)
        whole = jax.jit(opt.init, out_shardings=replicated)(params)
        per_device = [sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(s)) for s in (state, whole)]
        jitted = jax.jit(step, in_shardings=(replicated, shardings, replicated), out_shardings=(replicated, shardings),
                         donate_argnums=(0, 1))
        for g in grads:
            params, state = jitted(params, state, jax.device_put(g, replicated))
        for (path, got), expected in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(want)):
            if not np.allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-7):
                errors.append(f"params{jax.tree_util.keystr(path)} differs from one device")
        for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(shardings)):
            if not leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
                errors.append(f"state{jax.tree_util.keystr(path)} moved to {leaf.sharding.spec}")
        report[name] = {"errors": errors, "ratio": per_device[0] / per_device[1]}
    return report


@pytest.fixture(scope="module")
def report():
    proc = subprocess.run([sys.executable, __file__], env=fake_devices_env(DEVICES), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", CASES)
def test_optax_state_is_split_over_the_data_axis_and_steps_as_on_one_device(report, name):
    case = report[name]
    assert case["errors"] == [], "\n".join(case["errors"])
    assert 1 / 8 <= case["ratio"] < 1 / 8 * 1.05  # the counts and the clip's empty state are replicated


if __name__ == "__main__":
    print(json.dumps(_worker()))
