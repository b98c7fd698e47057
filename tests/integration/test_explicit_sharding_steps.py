"""Every registered optimizer (plugins included) steps on JAX's default mesh, whose axes are explicit.

``jax.make_mesh`` gives mesh axes of ``AxisType.Explicit`` (JAX 0.7 and
later): there an array's split is part of its type, and JAX refuses what it
would otherwise leave to the compiler, such as a contraction over a split axis
(an inner product, a matrix product, an SVD) or adding arrays that a reshape
left split differently (a block-quantized state dequantized next to its
gradient). For each optimizer of ``tests/registry_cases.py``, on 8 fake CPU
devices in a 4 x 2 ``('fsdp', 'tp')`` mesh under ``jax.set_mesh``:

* ``jax.jit(opt.init)`` and ``STEPS`` steps carried through ``lax.scan``
  (the state must keep its type: a carry cannot change its split) run;
* the params keep their shardings and equal those of the same scan on one
  device (up to the order of the sharded additions);
* every state leaf keeps the split ``init`` gave it.

The params include a (64, 128) matrix split on both axes, which the low-bit
plugin quantizes in blocks that span two rows, across the split of the
columns. The low-bit wrapper ``quantize_state``, which no registry name
builds, runs too. The optimizers are split into chunks, one subprocess each, so that
pytest-xdist workers share the work rather than each running all of it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from optcore.testing import fake_devices_env

TESTS = Path(__file__).resolve().parents[1]
DEVICES = 8
STEPS = 3
CHUNKS = 4
# Transformations no registry name builds: optcore_lowbit.quantize_state(optcore.adamw(...), **arguments).
QUANTIZE_STATE = {
    "quantize_state(adamw, bits=8)": {"bits": 8},
    "quantize_state(adamw, bits=4, rank1, stochastic)": {"bits": 4, "nonnegative_scaling": "rank1",
                                                         "rounding": "stochastic"},
}


def _names() -> list:
    sys.path.insert(0, str(TESTS))
    import registry_cases as rc

    extra = sorted(QUANTIZE_STATE) if importlib.util.find_spec("optcore_lowbit") else []
    return [case.name for case in rc.optimizer_cases() if not case.skip] + extra


def _build(name: str, cases: dict):
    if name in QUANTIZE_STATE:
        import optcore
        import optcore_lowbit

        return optcore_lowbit.quantize_state(optcore.adamw(0.01), **QUANTIZE_STATE[name])
    return cases[name].build()


def _worker(names: list) -> dict:
    import jax
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    sys.path.insert(0, str(TESTS))
    import registry_cases as rc

    assert jax.device_count() == DEVICES, jax.devices()
    mesh = jax.make_mesh((4, 2), ("fsdp", "tp"), axis_types=(AxisType.Explicit,) * 2)
    specs = {"w1": P("fsdp", "tp"), "w2": P("tp", "fsdp"), "b": P("fsdp"), "s": P(), "big": P("fsdp", "tp")}
    rng = np.random.default_rng(0)
    host = {
        "w1": rng.normal(size=(16, 6)).astype(np.float32),
        "w2": rng.normal(size=(10, 8)).astype(np.float32),
        "b": rng.normal(size=(24,)).astype(np.float32),
        "s": np.float32(0.7),
        "big": rng.normal(size=(64, 128)).astype(np.float32),
    }
    cases = {case.name: case for case in rc.optimizer_cases()}
    report = {}
    for name in names:
        errors = []
        try:
            opt = _build(name, cases)
            harness = rc.harness_of(name, opt)

            @jax.jit
            def run(params, state, harness=harness):
                return jax.lax.scan(lambda carry, _: (harness.step(*carry), None), (params, state), None, length=STEPS)[0]

            single = jax.device_put(host, jax.devices()[0])
            want, _ = run(single, opt.init(single))
            with jax.set_mesh(mesh):
                params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in host.items()}
                state = jax.jit(opt.init)(params)
                got, new_state = run(params, state)
            for key in host:
                if not got[key].sharding.is_equivalent_to(NamedSharding(mesh, specs[key]), got[key].ndim):
                    errors.append(f"param {key!r} left {specs[key]} for {got[key].sharding.spec}")
                gap = float(np.max(np.abs(np.asarray(got[key]) - np.asarray(want[key]))))
                if not gap <= 1e-5 * (1 + float(np.max(np.abs(np.asarray(want[key]))))):
                    errors.append(f"param {key!r} is {gap:.3g} from the one-device run")
            for (path, before), after in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(new_state)):
                if not after.sharding.is_equivalent_to(before.sharding, before.ndim):
                    errors.append(f"state{jax.tree_util.keystr(path)} left {before.sharding.spec} for {after.sharding.spec}")
        except Exception as error:  # noqa: BLE001 -- reported per optimizer, so one failure does not hide the others
            errors.append(f"{type(error).__name__}: {str(error)[:1500]}")
        report[name] = errors
    return report


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_optimizer_steps_on_a_mesh_with_explicit_axes(chunk):
    names = _names()[chunk::CHUNKS]
    proc = subprocess.run([sys.executable, __file__, *names], env=fake_devices_env(DEVICES),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(names)
    failures = {name: errors for name, errors in report.items() if errors}
    assert failures == {}, "\n".join(f"{name}: {'; '.join(errors)}" for name, errors in failures.items())


if __name__ == "__main__":
    print(json.dumps(_worker(sys.argv[1:])))
