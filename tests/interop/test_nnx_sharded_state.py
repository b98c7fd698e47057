"""Every registered optimizer's state inside a sharded ``flax.nnx`` model is split as its param.

Flax 0.12 shards a model's variables when they are created under a mesh
(``jax.set_mesh``; Flax's FLIP 4844, "eager sharding"), and ``nnx.Optimizer``
builds the state from them. A state leaf derived from a split param must stay
split, at ``init`` and after a jitted step: a state replicated on every device
costs its full size per device (for the low-bit plugin, its codes and scales
replace the variable that wraps the param, see ``optcore.kit.map_params``, so
they keep the split only if they are computed from the param).

The device count is fixed when JAX starts, so the walk runs in a subprocess
with 4 CPU devices (a 2x2 mesh). It walks the registry: plugins' optimizers,
and later ones, are covered without editing the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]  # registry_cases.py, imported in the subprocess

DEVICES = 4
KERNEL = (32, 512)


def _split_failures(opt_state, params):
    """The state leaves not split as their param (``params``: name -> the param's array).

    A leaf whose trailing axes are its param's (moments, stacks of past
    updates) must have the param's shard shape on them and its leading axes
    whole; a leaf in another layout (the low-bit plugin's blocks) must be cut
    into as many shards. Leaves smaller than a quarter of their param (scalars,
    factored vectors, block scales) may be replicated.
    """
    import jax
    from flax import nnx

    failures = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.as_pure(opt_state)):
        names = [getattr(key, "key", getattr(key, "name", None)) for key in path]
        owner = next((params[name] for name in names if isinstance(name, str) and name in params), None)
        if owner is None or getattr(leaf, "size", 0) * 4 < owner.size:
            continue
        shard, param_shard = leaf.sharding.shard_shape(leaf.shape), owner.sharding.shard_shape(owner.shape)
        lead = leaf.ndim - owner.ndim
        if lead >= 0 and leaf.shape[lead:] == owner.shape:
            split_as_param = shard[lead:] == param_shard and shard[:lead] == leaf.shape[:lead]
        else:
            split_as_param = leaf.size // int(np.prod(shard)) == owner.size // int(np.prod(param_shard))
        if not split_as_param:
            failures.append(f"{jax.tree_util.keystr(path)}{leaf.shape}: {leaf.sharding.spec}")
    return failures


def _walk() -> dict:
    """The failures per optimizer name (run in the subprocess)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import optcore.testing as kit
    import registry_cases

    class Model(nnx.Module):
        def __init__(self):
            kernel = jnp.linspace(-1.0, 1.0, KERNEL[0] * KERNEL[1], dtype=jnp.float32).reshape(KERNEL)
            self.w = nnx.Param(kernel, out_sharding=("data", "model"))
            self.b = nnx.Param(jnp.zeros(KERNEL[1:]), out_sharding=("model",))

    mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    failures = {}
    for case in registry_cases.optimizer_cases():
        if case.skip:
            continue
        harness = registry_cases.harness_of(case.name, case.build())

        @nnx.jit
        def step(model, optimizer):
            params = nnx.as_pure(nnx.state(model, nnx.Param))
            grads = nnx.grad(lambda m: kit.objective(nnx.state(m, nnx.Param)))(model)
            optimizer.update(model, harness.gradient(grads), **harness.extra_args(params, nnx.as_pure(grads)))

        try:
            with jax.set_mesh(mesh):
                model = Model()
                params = {"w": model.w.get_value(), "b": model.b.get_value()}
                assert params["w"].sharding.shard_shape(KERNEL) == (KERNEL[0] // 2, KERNEL[1] // 2), "no split"
                optimizer = nnx.Optimizer(model, harness.opt, wrt=nnx.Param)
                found = [f"init: {f}" for f in _split_failures(optimizer.opt_state, params)]
                step(model, optimizer)
                found += [f"after a step: {f}" for f in _split_failures(optimizer.opt_state, params)]
        except Exception as err:  # noqa: BLE001 (reported per optimizer, with its type)
            found = [f"{type(err).__name__}: {err}"[:300]]
        if found:
            failures[case.name] = found
    return failures


def test_every_optimizer_state_keeps_the_split_of_an_eagerly_sharded_nnx_model():
    from optcore.testing import fake_devices_env

    out = subprocess.run([sys.executable, __file__], env=fake_devices_env(DEVICES), capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["walked"] > 0, result
    assert result["failures"] == {}, json.dumps(result["failures"], indent=1)


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    import registry_cases

    walked = sum(not case.skip for case in registry_cases.optimizer_cases())
    print(json.dumps({"walked": walked, "failures": _walk()}))
