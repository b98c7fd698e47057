"""Quantized states keep their params' sharding, on 8 fake CPU devices.

One subprocess (this file run as a script with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: the flag must be set
before JAX starts) prints a JSON report that the tests read. Params are
sharded on a leading axis, on the last axis (rows of 8192, 3072 and 1024
entries, as tensor parallelism splits them), a 1-D param over all devices,
and rows narrower than a block; and a row whose shards hold no whole number
of blocks, on auto and explicit axes. ``jax.jit(init)`` must give the
codes and scales of each param the param's sharding (codes of shape
``(*lead, n_blocks, length)`` split like the param, the block axis taking the
split of the row; rank-1 codes split like the param and each axis's maxima
like that axis), and jitted steps on the mesh must give the numbers of
single-device steps.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from optcore.testing import fake_devices_env

DEVICES = 8


def _report() -> dict:
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import optcore
    import optcore_lowbit

    assert jax.device_count() == DEVICES, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("x",))
    rng = np.random.default_rng(0)
    # "tall" has more rows than one reduction sweeps well: its rank-1 column maxima are taken over groups of rows.
    # "mlp" and "model" are split on the last axis as tensor parallelism splits them: rows of 3072 and 1024
    # entries, whose blocks of the default 256 would run across shards (12 and 4 per row, over 8 devices).
    # "merged" has rows of 20 (blocks run across rows), 32 rows to a device: 640 entries, not whole blocks of 256.
    shapes = {"lead": (64, 4096), "last": (32, 8 * 1024), "flat": (16 * 2048,), "tall": (1024, 32),
              "mlp": (16, 3072), "model": (32, 1024), "merged": (256, 20)}
    param_specs = {"lead": P("x", None), "last": P(None, "x"), "flat": P("x"), "tall": P("x", None),
                   "mlp": P(None, "x"), "model": P(None, "x"), "merged": P("x", None)}
    # The shardings the codes and scales should have: the param's, with the row's split on the block axis
    # (a "tall" row is narrower than a block: its blocks run across rows, 16 to a device's 128 rows).
    code_specs = {"lead": P("x", None, None), "last": P(None, "x", None), "flat": P("x", None), "tall": P("x", None),
                  "mlp": P(None, "x", None), "model": P(None, "x", None), "merged": P("x", None)}
    scale_specs = {"lead": P("x", None), "last": P(None, "x"), "flat": P("x"), "tall": P("x"),
                   "mlp": P(None, "x"), "model": P(None, "x"), "merged": P("x")}
    host = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    sharded = {k: jax.device_put(v, NamedSharding(mesh, param_specs[k])) for k, v in host.items()}
    report = {}
    for name in ("adamw_8bit", "adamw_4bit", "lion_8bit", "sgd_8bit"):
        opt = optcore.get(name)(1e-2)
        state = jax.jit(opt.init)(sharded)
        entry = {"init": {}, "step": {}}
        quantized = lambda x: isinstance(x, (optcore_lowbit.QuantizedArray, optcore_lowbit.Rank1QuantizedArray))  # noqa: E731

        def keeps_sharding(q, k):
            if isinstance(q, optcore_lowbit.QuantizedArray):
                return (q.codes.sharding.is_equivalent_to(NamedSharding(mesh, code_specs[k]), q.codes.ndim)
                        and q.scales.sharding.is_equivalent_to(NamedSharding(mesh, scale_specs[k]), q.scales.ndim))
            # Rank-1 (adamw_4bit's second moment): codes split like the param (pairs packed along the last
            # axis), and the maxima of each axis split like that axis.
            spec = tuple(param_specs[k]) + (None,) * (len(shapes[k]) - len(param_specs[k]))
            return q.codes.sharding.is_equivalent_to(NamedSharding(mesh, P(*spec)), q.codes.ndim) and all(
                m.sharding.is_equivalent_to(NamedSharding(mesh, P(spec[d])), 1) for d, m in enumerate(q.maxima))

        def keeps(state):
            out = {}
            for k, shape in shapes.items():
                qs = [x for x in jax.tree.leaves(state, is_leaf=quantized) if quantized(x) and x.shape == shape]
                out[k] = bool(qs) and all(keeps_sharding(q, k) for q in qs)
            return out

        entry["init"] = keeps(state)
        entry["rank1_shapes"] = sorted(list(x.shape) for x in jax.tree.leaves(state, is_leaf=quantized)
                                       if isinstance(x, optcore_lowbit.Rank1QuantizedArray))

        def step(params, state, grads):
            updates, state = opt.update(grads, state, params)
            return optcore.apply_updates(params, updates), state

        def run(params):
            state = jax.jit(opt.init)(params)
            jitted = jax.jit(step)
            for t in range(3):
                grads = jax.tree.map(lambda p: p * 0.1 + 0.01 * t, params)
                params, state = jitted(params, state, grads)
            return params, state

        p_sharded, s_sharded = run(sharded)
        # What moves between devices in a step: nothing, when every leaf's blocks stay within its shards
        # (4-bit's rank-1 maxima excepted: they are maxima over the split axis).
        hlo = jax.jit(step).lower(sharded, state, sharded).compile().as_text()
        entry["collectives"] = sorted({op for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute")
                                       if f" {op}(" in hlo or f" {op}-start(" in hlo})
        entry["step"] = keeps(s_sharded)
        single = jax.devices()[0]
        p_single, s_single = run({k: jax.device_put(v, single) for k, v in host.items()})
        entry["max_param_diff"] = max(float(np.max(np.abs(np.asarray(p_sharded[k]) - np.asarray(p_single[k]))))
                                      for k in shapes)
        codes = lambda s: [np.asarray(x) for x in jax.tree.leaves(s)]  # noqa: E731
        entry["state_equal"] = all(np.array_equal(a, b) for a, b in zip(codes(s_sharded), codes(s_single)))
        report[name] = entry

    # The tall matrix's rank-1 column maxima (over groups of rows) on mesh axes that are explicit, JAX's
    # default: the reshape into groups must keep each device's rows on that device.
    from jax.sharding import AxisType

    explicit = jax.make_mesh((DEVICES,), ("x",), axis_types=(AxisType.Explicit,))
    opt = optcore.get("adamw_4bit")(1e-2)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.tree.map(lambda x: 0.1 * x, params), state, params)
        return optcore.apply_updates(params, updates), state

    def three_steps(params):
        state = jax.jit(opt.init)(params)
        for _ in range(3):
            params, state = step(params, state)
        return state

    tall = {"tall": host["tall"]}
    want = three_steps(jax.device_put(tall, jax.devices()[0]))
    with jax.set_mesh(explicit):
        got = three_steps(jax.device_put(tall, NamedSharding(explicit, P("x", None))))
    report["explicit_tall"] = {
        "state_equal": all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))),
        "maxima_specs": [str(m.sharding.spec) for q in jax.tree.leaves(got, is_leaf=quantized)
                         if isinstance(q, optcore_lowbit.Rank1QuantizedArray) for m in q.maxima],
    }
    report["crossing"] = _crossing_report()
    report["zero"] = _zero_report()
    return report


def _zero_report() -> dict:
    """ZeRO over 8 devices (``optcore.sharding.state_shardings``): params replicated, the 8-bit state split.
    A (512, 768) param's longest dimension is a row of 768, 96 entries a shard, which blocks of 192 run
    across: its state is split along the rows instead. A (1001, 768) param has no other dimension that
    divides: its state stays whole and it is named in a warning (on explicit axes with the plugin's advice
    too). Three steps on each mesh give one device's numbers."""
    import warnings

    import jax
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import optcore

    rng = np.random.default_rng(2)
    host = {"proj": rng.normal(size=(512, 768)), "embed": rng.normal(size=(1001, 768)), "wide": rng.normal(size=(512, 1024))}
    host = {k: v.astype(np.float32) for k, v in host.items()}
    opt = optcore.get("adamw_8bit")(1e-2)

    def step(params, state):
        updates, state = opt.update(jax.tree.map(lambda x: 0.1 * x + 0.01, params), state, params)
        return optcore.apply_updates(params, updates), state

    def three_steps(params, state, jitted):
        for _ in range(3):
            params, state = jitted(params, state)
        return jax.tree.map(np.asarray, (params, state))

    one = jax.device_put(host, jax.devices()[0])
    p_one, s_one = three_steps(one, opt.init(one), jax.jit(step))
    out = {}
    for kind in ("Auto", "Explicit"):
        mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(getattr(AxisType, kind),))
        replicated = NamedSharding(mesh, P())
        params = jax.device_put(host, replicated)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shardings = optcore.sharding.state_shardings(opt, params, mesh)
        with jax.set_mesh(mesh):
            state = jax.jit(opt.init, out_shardings=shardings)(params)
            jitted = jax.jit(step, in_shardings=(replicated, shardings), out_shardings=(replicated, shardings),
                             donate_argnums=(0, 1))
            p_split, s_split = three_steps(params, state, jitted)
        pairs = list(zip(jax.tree.leaves((p_split, s_split)), jax.tree.leaves((p_one, s_one))))
        out[kind] = {
            "warnings": [str(w.message) for w in caught],
            "split": {k: sorted({"data" in str(s.spec) for s in jax.tree.leaves((shardings[0].mu[k], shardings[0].nu[k]))})
                      for k in host},
            "codes_equal": all(np.array_equal(a, b) for a, b in pairs if a.dtype == np.uint8),
            "max_rel_diff": max(float(np.max(np.abs(a.astype(np.float64) - b) / (np.max(np.abs(b.astype(np.float64))) + 1e-30)))
                                for a, b in pairs),
        }
    # adamw_4bit on a (64, 96) param, whose longest dimension is a row of 96 (12 entries a shard): its rank-1
    # second moment would follow that split, but its first moment's blocks of 128 (across rows) would not.
    opt4 = optcore.get("adamw_4bit")(1e-2)
    mesh = jax.make_mesh((DEVICES,), ("data",), axis_types=(AxisType.Auto,))
    shardings = optcore.sharding.state_shardings(opt4, {"narrow": np.ones((64, 96), np.float32)}, mesh)
    out["adamw_4bit_specs"] = {jax.tree_util.keystr(path): str(s.spec)
                               for path, s in jax.tree_util.tree_leaves_with_path({"mu": shardings[0].mu, "nu": shardings[0].nu})}
    return out


def _crossing_report() -> dict:
    """A row of 768 split over 8 devices: 96 entries a shard, and adamw_8bit's blocks of 192 run across.
    On auto axes (eager ``init``) and on explicit ones (jitted ``init`` and steps) ``init`` warns with a
    block size that fits; on explicit axes the steps run (the state is kept whole) and give the numbers of
    one device; with the advised block size the state is split like the param, without a warning."""
    import warnings

    import jax
    import numpy as np
    from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

    import optcore
    import optcore_lowbit

    host = {"w": np.random.default_rng(1).normal(size=(64, 768)).astype(np.float32)}

    def run(opt, params):
        @jax.jit
        def step(params, state):
            updates, state = opt.update(jax.tree.map(lambda x: 0.1 * x + 0.01, params), state, params)
            return optcore.apply_updates(params, updates), state

        state = jax.jit(opt.init)(params)
        for _ in range(3):
            params, state = step(params, state)
        return params, state

    def lowbit_warnings(caught):
        return [str(w.message) for w in caught if "optcore_lowbit" in str(w.message)]

    out = {}
    auto = Mesh(np.array(jax.devices()), ("x",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optcore.get("adamw_8bit")(1e-2).init({"w": jax.device_put(host["w"], NamedSharding(auto, P(None, "x")))})
    out["auto_eager_warnings"] = lowbit_warnings(caught)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = optcore_lowbit.quantize_state(optcore.sgd(1e-2, momentum=0.9))
        wrapped.init({"w": jax.device_put(host["w"], NamedSharding(auto, P(None, "x")))})
    out["wrapper_eager_warnings"] = lowbit_warnings(caught)
    explicit = jax.make_mesh((DEVICES,), ("x",), axis_types=(AxisType.Explicit,))
    # FSDP beside tensor parallelism: a (32, 128) param split over both axes of a 4 x 2 mesh. Its rows are
    # narrower than a block (blocks of 256 run across pairs of rows), so the "model" split of each row
    # crosses blocks, while the "data" split (8 rows a shard) does not: the state keeps that one.
    fsdp = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)
    narrow = np.random.default_rng(3).normal(size=(32, 128)).astype(np.float32)
    cases = [("adamw_8bit", {}, explicit, host["w"], P(None, "x")), ("lion_8bit", {}, explicit, host["w"], P(None, "x")),
             ("adamw_8bit_advised", {"block_size": 192}, explicit, host["w"], P(None, "x")),
             ("adamw_8bit_fsdp", {}, fsdp, narrow, P("data", "model"))]
    for name, kwargs, mesh, w, spec in cases:
        opt = optcore.get(name.removesuffix("_advised").removesuffix("_fsdp"))(1e-2, **kwargs)
        p_one, s_one = run(opt, {"w": jax.device_put(w, jax.devices()[0])})
        with jax.set_mesh(mesh), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            p_split, s_split = run(opt, {"w": jax.device_put(w, NamedSharding(mesh, spec))})
        pairs = list(zip(jax.tree.leaves((p_split, s_split)), jax.tree.leaves((p_one, s_one))))
        out[name] = {
            "warnings": lowbit_warnings(caught),
            "codes_equal": all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs if a.dtype == np.uint8),
            "max_rel_diff": max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
                                            / (np.max(np.abs(np.asarray(b, np.float64))) + 1e-30))) for a, b in pairs),
            "param_spec": str(p_split["w"].sharding.spec),
            "code_specs": sorted({str(x.sharding.spec) for x in jax.tree.leaves(s_split) if x.dtype == np.uint8}),
        }
    return out


@pytest.fixture(scope="module")
def report():
    out = subprocess.run([sys.executable, __file__], env=fake_devices_env(DEVICES), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["adamw_8bit", "adamw_4bit", "lion_8bit", "sgd_8bit"])
def test_init_under_jit_keeps_the_params_sharding(report, name):
    assert report[name]["init"] == dict.fromkeys(["lead", "last", "flat", "tall", "mlp", "model", "merged"], True)


def test_the_4bit_second_moment_of_matrices_is_rank1_normalized(report):
    assert report["adamw_4bit"]["rank1_shapes"] == [[32, 1024], [32, 8192], [64, 4096], [256, 20], [1024, 32]]
    assert report["adamw_8bit"]["rank1_shapes"] == []


@pytest.mark.parametrize("name", ["adamw_8bit", "adamw_4bit", "lion_8bit", "sgd_8bit"])
def test_sharded_steps_give_the_single_device_numbers(report, name):
    assert report[name]["max_param_diff"] <= 1e-6
    assert report[name]["state_equal"]


@pytest.mark.parametrize("name", ["adamw_8bit", "lion_8bit", "sgd_8bit"])
def test_block_quantized_steps_move_nothing_between_devices(report, name):
    """Every leaf's blocks lie within its shards, so a step needs no collective: a block that ran across a
    shard boundary would gather (or replicate) the leaf's state. (adamw_4bit's rank-1 second moment takes
    maxima over the split axis; it is left out.)"""
    assert report[name]["collectives"] == []


def test_rank1_maxima_of_a_tall_matrix_on_explicit_axes(report):
    """Its column maxima, taken over groups of rows, on a mesh with explicit axes: the one-device state, and
    each axis's maxima split like that axis."""
    assert report["explicit_tall"] == {"state_equal": True, "maxima_specs": ["P('x',)", "P(None,)"]}


@pytest.mark.parametrize("name", ["adamw_8bit", "adamw_4bit", "lion_8bit", "sgd_8bit"])
def test_steps_jitted_without_out_shardings_keep_the_sharding(report, name):
    """A step jitted without ``out_shardings`` keeps the split of every layout: a leading axis, the last axis
    (whole blocks per shard) and a 1-D param. (Mesh axes that are explicit, JAX's default ``jax.make_mesh``,
    are covered by the core's ``tests/integration/test_explicit_sharding_steps.py``.)"""
    assert report[name]["step"] == dict.fromkeys(["lead", "last", "flat", "tall", "mlp", "model", "merged"], True)


def test_blocks_across_shards_warn_with_a_block_size_that_fits(report):
    crossing = report["crossing"]
    advice = "block_size=192 (blocks of 96) keeps whole blocks within shards"
    seen = ["auto_eager_warnings", "wrapper_eager_warnings"]
    for warnings_seen in [crossing[k] for k in seen] + [crossing[k]["warnings"] for k in ("adamw_8bit", "lion_8bit")]:
        assert warnings_seen and all("(64, 768)" in w and "blocks of 192" in w and advice in w for w in warnings_seen)
    assert crossing["adamw_8bit_advised"]["warnings"] == []


def test_blocks_across_one_axis_keep_the_split_of_the_others(report):
    """FSDP and tensor parallelism on explicit axes, where only the tensor-parallel split crosses blocks: the
    state drops that split and keeps the FSDP one (not whole on every device), and says so; the steps give one
    device's numbers."""
    entry = report["crossing"]["adamw_8bit_fsdp"]
    assert entry["code_specs"] == ["P('data', None)"] and entry["param_spec"] == "P('data', 'model')"
    assert entry["codes_equal"] and entry["max_rel_diff"] <= 1e-6
    assert entry["warnings"] and all("split only as P('data', None)" in w for w in entry["warnings"])


@pytest.mark.parametrize("name", ["adamw_8bit", "lion_8bit", "adamw_8bit_advised"])
def test_blocks_across_shards_on_explicit_axes_still_step(report, name):
    """JAX refuses a reshape into blocks that cross shards on explicit axes; the state is kept whole
    instead (as XLA does on auto axes), the params keep their split, and the numbers are one device's
    (up to an ulp: the two programs fuse differently). With the advised block size the state is split."""
    entry = report["crossing"][name]
    assert entry["codes_equal"] and entry["max_rel_diff"] <= 1e-6
    assert entry["param_spec"] == "P(None, 'x')"
    want = ["P(None, 'x', None)"] if name.endswith("advised") else ["P(None, None, None)"]
    assert entry["code_specs"] == want


@pytest.mark.parametrize("kind", ["Auto", "Explicit"])
def test_zero_splits_the_state_along_a_dimension_whose_blocks_stay_within_shards(report, kind):
    """``state_shardings`` splits each param's longest dimension first; where the 8-bit blocks of that row
    would cross shards it takes the rows instead, and names the param whose only dimension that divides
    is such a row. (Without that, the (512, 768) state stayed whole, silently on auto axes.)"""
    zero = report["zero"][kind]
    assert zero["split"] == {"proj": [True], "wide": [True], "embed": [False]}
    core = [w for w in zero["warnings"] if w.startswith("state_shardings")]
    assert len(core) == 1 and "params['embed'] (1001, 768)" in core[0] and "proj" not in core[0]
    advice = [w for w in zero["warnings"] if w.startswith("optcore_lowbit")]
    if kind == "Explicit":  # the split is in the param's type: the plugin sees it, and names a block size that fits
        assert advice and all("(1001, 768)" in w and "block_size=192 (blocks of 96)" in w for w in advice)
    else:
        assert advice == []
    assert zero["codes_equal"] and zero["max_rel_diff"] <= 1e-6


def test_zero_splits_a_4bit_state_where_its_first_moment_follows(report):
    """A split the rank-1 second moment follows but the first moment's codes (half the param's entries)
    do not is moved to the leading axis: every leaf is split but the column maxima, a reduction over it."""
    assert report["zero"]["adamw_4bit_specs"] == {
        "['mu']['narrow'].codes": "P('data', None)", "['mu']['narrow'].scales": "P('data',)",
        "['nu']['narrow'].codes": "P('data', None)", "['nu']['narrow'].maxima[0]": "P('data',)",
        "['nu']['narrow'].maxima[1]": "P()",
    }


def test_the_sharded_training_example_runs_zero_with_8bit_states():
    """``examples/sharded_training.py --optimizer adamw_8bit``: ZeRO over 8 devices keeps 1/8 of the 8-bit
    state per device. Its (32, 128) matrix's rows are one block each, which a split of the 128 columns would
    cut, so ``state_shardings`` splits the rows."""
    import os
    import re

    example = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "sharded_training.py")
    proc = subprocess.run([sys.executable, example, "--layout", "zero", "--optimizer", "adamw_8bit", "--steps", "3"],
                          env=fake_devices_env(None), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state, all_state = map(int, re.search(r"optimizer state (\d+) B of (\d+) B", proc.stdout).groups())
    assert abs(state * 8 / all_state - 1) < 0.01, proc.stdout
    assert "state[1][0].nu['w1'].codes uint8 P('data',): (2, 256) per device" in proc.stdout, proc.stdout
    assert "state_shardings" not in proc.stderr, proc.stderr  # no param left whole


if __name__ == "__main__":
    print(json.dumps(_report()))
