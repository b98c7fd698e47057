"""Every registered optimizer (plugins included) initialises its state on its params' shardings.

Runs in one subprocess with 8 fake CPU devices (the device count is fixed
before jax is imported; see tests/test_sharding.py), on a 4 x 2
``('fsdp', 'tp')`` mesh. For each optimizer of ``tests/registry_cases.py``:

* ``jax.jit(opt.init)`` with auto mesh axes (GSPMD propagation), the same
  under a mesh with explicit axes (``jax.set_mesh``), and eager
  ``opt.init``: every state leaf shaped like a param carries exactly that
  param's sharding (each param has a distinct shape, so a state leaf names its
  param by shape);
* the values are those of an eager init on one device, bit for bit (+0.0 stays
  +0.0, and the non-finite entries planted in the params give no NaN in
  zero-initialised state);
* tracing ``update`` never calls the state-zeros helper: its extra read of the
  params is paid at init only, never in the step;
* ``optcore.sharding.state_shardings`` gives a sharding for every state leaf
  (the same tree as ``jax.eval_shape(opt.init, params)``), and names no param
  whose split the state drops.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from optcore.testing import fake_devices_env

TESTS = Path(__file__).resolve().parents[1]
DEVICES = 8
# Known failures by (optimizer, check), each with its cause; none at present.
KNOWN_ISSUES: dict = {}
# Arguments that keep a state leaf from being params-shaped by coincidence (a state leaf names its param by
# shape): at its default rank (128) GaLore's projector of a small matrix has the matrix's shape.
BUILD_OVERRIDES = {"galore": {"rank": 2}}
CHECKS = ("jit-auto", "jit-explicit", "eager", "values", "update-cost", "state_shardings")


def _worker() -> dict:
    sys.path.insert(0, str(TESTS))
    import warnings
    from unittest import mock

    import jax
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import optcore
    import registry_cases as rc
    from optcore.tree_utils import _casting

    assert jax.device_count() == DEVICES, jax.devices()
    meshes = {kind: jax.make_mesh((4, 2), ("fsdp", "tp"), axis_types=(kind, kind)) for kind in (AxisType.Auto, AxisType.Explicit)}
    # "big" is large enough for the low-bit plugin to quantize its state.
    specs = {"w1": P("fsdp", "tp"), "w2": P("tp", "fsdp"), "b": P("fsdp"), "s": P(), "big": P("fsdp", "tp")}
    rng = np.random.default_rng(0)
    host = {
        "w1": rng.normal(size=(16, 6)).astype(np.float32),
        "w2": rng.normal(size=(10, 8)).astype(np.float32),
        "b": rng.normal(size=(24,)).astype(np.float32),
        "s": np.array([1.0, -0.5, 2.0, 0.25, -1.5, 3.0, 0.75], np.float32),
        "big": rng.normal(size=(64, 128)).astype(np.float32),
    }
    # Non-finite and negative-zero entries: zero-initialised state must still be +0.0 there.
    host["b"][:3] = [np.inf, np.nan, -0.0]
    by_shape = {v.shape: k for k, v in host.items()}

    def placed(mesh):
        return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in host.items()}

    def sharding_errors(state, label):
        errors, found = [], 0
        for path, leaf in jax.tree_util.tree_leaves_with_path(state):
            key = by_shape.get(getattr(leaf, "shape", None))
            if key is None:
                continue
            found += 1
            expected = NamedSharding(leaf.sharding.mesh if hasattr(leaf.sharding, "mesh") else meshes[AxisType.Auto], specs[key])
            if not leaf.sharding.is_equivalent_to(expected, leaf.ndim):
                errors.append(f"{label}: state{jax.tree_util.keystr(path)} is on "
                              f"{getattr(leaf.sharding, 'spec', leaf.sharding)}, param {key!r} on {specs[key]}")
        return errors, found

    def value_errors(state, reference):
        errors = []
        for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(reference)):
            if jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key):
                got, want = jax.random.key_data(got), jax.random.key_data(want)
            got, want = np.asarray(got), np.asarray(want)
            same = got.shape == want.shape and got.dtype == want.dtype and np.array_equal(got, want, equal_nan=got.dtype.kind in "fc")
            if same and got.dtype.kind == "f":
                same = np.array_equal(np.signbit(got), np.signbit(want))
            if not same:
                errors.append(f"state{jax.tree_util.keystr(path)} differs from a one-device eager init: {got.ravel()[:4]} vs {want.ravel()[:4]}")
        return errors

    report = {}
    for case in rc.optimizer_cases():
        if case.skip:
            report[case.name] = {"skip": case.skip}
            continue
        opt = case.build(**BUILD_OVERRIDES.get(case.name, {}))
        result = {check: [] for check in CHECKS}
        try:
            reference = opt.init(jax.device_put(host, jax.devices()[0]))
            for check, kind in (("jit-auto", AxisType.Auto), ("jit-explicit", AxisType.Explicit), ("eager", AxisType.Auto)):
                params = placed(meshes[kind])
                if check == "jit-explicit":
                    with jax.set_mesh(meshes[kind]):
                        state = jax.jit(opt.init)(params)
                elif check == "jit-auto":
                    state = jax.jit(opt.init)(params)
                else:
                    state = opt.init(params)
                errors, found = sharding_errors(state, check)
                result[check] += errors
                result["params_shaped"] = found
                result["values"] += [f"{check}: {e}" for e in value_errors(state, reference)]

            # The helper's value-derived zeros cost a read of the params: init only, never update.
            calls = []
            original = _casting._state_full_like_leaf
            params = placed(meshes[AxisType.Auto])
            state = opt.init(params)
            with mock.patch.object(_casting, "_state_full_like_leaf", lambda *a: calls.append(1) or original(*a)):
                jax.eval_shape(lambda p, s: rc.update(opt, case.name, p, s, p), params, state)
            if calls:
                result["update-cost"].append(f"update calls optcore.tree_utils.state_full_like {len(calls)} times")

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # params that cannot be split are reported, by design
                shardings = optcore.sharding.state_shardings(opt, placed(meshes[AxisType.Auto]), meshes[AxisType.Auto], axis="fsdp")
            # Every param here is split over "fsdp" (but the 7 entries of "s"): an init whose state drops a split
            # (low-bit blocks across the shards) would leave that state whole on every device.
            result["state_shardings"] += [str(w.message)[:300] for w in caught if "does not keep the split" in str(w.message)]
            shapes = jax.eval_shape(opt.init, host)
            if jax.tree.structure(shardings) != jax.tree.structure(shapes):
                result["state_shardings"].append(f"tree {jax.tree.structure(shardings)} is not the state's {jax.tree.structure(shapes)}")
            elif not all(isinstance(s, NamedSharding) for s in jax.tree.leaves(shardings)):
                result["state_shardings"].append("a leaf is not a NamedSharding")
        except Exception as error:  # noqa: BLE001 -- reported per optimizer, so one failure does not hide the others
            result["error"] = f"{type(error).__name__}: {str(error)[:1500]}"
        report[case.name] = result
    return report


@pytest.fixture(scope="module")
def report():
    proc = subprocess.run([sys.executable, __file__], env=fake_devices_env(DEVICES), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _optimizer_names():
    sys.path.insert(0, str(TESTS))
    import registry_cases as rc

    return [case.name for case in rc.optimizer_cases()]


@pytest.mark.parametrize("name", _optimizer_names())
def test_state_takes_the_params_shardings(report, name):
    result = report[name]
    if "skip" in result:
        pytest.skip(result["skip"])
    assert "error" not in result, result.get("error")
    errors = [e for check in CHECKS for e in result[check] if (name, check) not in KNOWN_ISSUES]
    assert errors == [], "\n".join(errors)


def test_most_optimizers_have_params_shaped_state_to_check(report):
    checked = [name for name, result in report.items() if result.get("params_shaped", 0) > 0]
    assert len(checked) >= len(report) // 2, f"only {checked} have params-shaped state: the shapes do not match"


if __name__ == "__main__":
    print(json.dumps(_worker()))
