"""Scale-out: optimizers on params sharded over a mesh of 8 (fake CPU) devices.

The device count must be fixed before jax is imported, so every case runs in
ONE subprocess (this file run as a script, with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``) that prints a JSON
report; the tests below read it. For each optimizer and each layout
(``replicated``: data-parallel, params replicated; ``sharded``: fully sharded,
params split over a 4 x 2 ``('fsdp', 'tp')`` mesh with
``NamedSharding``/``PartitionSpec``, explicit axes; ``sharded-auto``: the same
with auto axes, i.e. GSPMD propagation) it checks:

* init gives every params-shaped state leaf exactly its param's sharding,
  both under ``jax.jit(opt.init)`` (with auto axes too, where only sharding
  propagation can place the state: optcore's ``tree_utils.state_zeros_like``
  derives the zeros from the params' values so that it does; Optax's zeros
  carry no sharding there) and eagerly, and
  ``jax.jit(opt.init, out_shardings=...)`` gives the shardings asked for;
* the compiled optimizer step (``update`` + ``apply_updates``) moves no params
  or state between devices: its HLO has no all-gather, all-to-all,
  collective-permute or reduce-scatter, and an all-reduce only where the
  math needs a global reduction (a global norm; Adafactor's row/column means
  and RMS);
* the step returns params and params-shaped state with their params' shardings;
* with ``out_shardings`` read off its inputs (the sharding guide's recipe) the
  step compiles once over two calls;
* five training steps give the same numbers as a single-device run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from optcore.testing import fake_devices_env

DEVICES = 8
CASES = ["adam", "adamw", "adafactor", "lion", "multi_steps", "clip_by_global_norm"]
LAYOUTS = ["replicated", "sharded", "sharded-auto"]
# Known failures by (case, layout), each with its cause; none at present.
KNOWN_ISSUES: dict = {}
# The only collectives a correct step may contain; which one depends on the math.
MOVING_COLLECTIVES = ("all-gather", "all-to-all", "collective-permute", "reduce-scatter")


# --------------------------------------------------------------------------- worker (subprocess side)


def _optimizer(name):
    """``(optimizer, needs_global_reduction)``, or ``(None, reason)`` if optcore lacks it."""
    import optcore

    factories = {
        "adam": (lambda: optcore.adam(1e-2), False),
        "adamw": (lambda: optcore.adamw(1e-2, weight_decay=1e-2), False),
        # Small min_dim_size_to_factor so the two matrices get factored (v_row, v_col) state.
        "adafactor": (lambda: optcore.adafactor(1e-2, min_dim_size_to_factor=8), True),
        "lion": (lambda: optcore.lion(1e-3), False),
        "multi_steps": (lambda: optcore.MultiSteps(optcore.adam(1e-2), every_k_schedule=2), False),
        # Clipping has no state of its own; chained with adamw so there is state to check.
        "clip_by_global_norm": (lambda: optcore.chain(optcore.clip_by_global_norm(0.5), optcore.adamw(1e-2)), True),
    }
    required = {"multi_steps": "MultiSteps"}
    attribute = required.get(name, name)
    if not hasattr(optcore, attribute):
        return None, f"optcore.{attribute} does not exist yet"
    factory, reduces = factories[name]
    return factory(), reduces


def _worker() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import optcore

    assert jax.device_count() == DEVICES, jax.devices()
    meshes = {
        explicit: jax.make_mesh((4, 2), ("fsdp", "tp"), axis_types=(kind, kind))
        for explicit, kind in ((True, AxisType.Explicit), (False, AxisType.Auto))
    }
    # Every param has a distinct shape, so a params-shaped state leaf names its param by shape.
    fsdp = {"w1": P("fsdp", "tp"), "w2": P("tp", "fsdp"), "b": P("fsdp"), "scale": P()}
    layouts = {  # name: (specs, explicit mesh axes?)
        "replicated": ({"w1": P(), "w2": P(), "b": P(), "scale": P()}, True),
        "sharded": (fsdp, True),
        "sharded-auto": (fsdp, False),
    }
    rng = np.random.default_rng(0)
    host_params = {
        "w1": rng.normal(size=(64, 32)).astype(np.float32) / 8,
        "w2": rng.normal(size=(32, 16)).astype(np.float32) / 6,
        "b": rng.normal(size=(24,)).astype(np.float32),
        "scale": np.array([1.0, -0.5, 2.0], np.float32),
    }
    batches = [rng.normal(size=(16, 64)).astype(np.float32) for _ in range(5)]

    def loss(params, x, gather):
        if gather:  # explicit axes: the forward pass gathers each weight (FSDP); its transpose scatters grads back
            params = {k: jax.sharding.reshard(v, P()) for k, v in params.items()}
        h = jnp.tanh(x @ params["w1"]) @ params["w2"]
        return jnp.mean(h**2) + jnp.sum(jnp.sin(params["b"])) * 0.1 + jnp.sum((params["scale"] - 1.0) ** 2)

    def train(opt, params, state, batch_sharding, gather=False):
        @jax.jit
        def train_step(params, state, x):
            grads = jax.grad(loss)(params, x, gather)
            updates, state = opt.update(grads, state, params)
            return optcore.apply_updates(params, updates), state

        for x in batches:
            params, state = train_step(params, state, jax.device_put(x, batch_sharding))
        return jax.tree.map(np.asarray, params)

    def optimizer_step(opt, **jit_kwargs):
        def step(params, state, grads):
            updates, state = opt.update(grads, state, params)
            return optcore.apply_updates(params, updates), state

        return jax.jit(step, **jit_kwargs)

    def check(name, opt, reduces, layout, reference):
        specs, explicit = layouts[layout]
        mesh = meshes[explicit]
        errors = []
        shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
        params = {k: jax.device_put(v, shardings[k]) for k, v in host_params.items()}
        by_shape = {v.shape: k for k, v in params.items()}

        # 1. init puts each params-shaped state leaf on its param's sharding, jitted or not; with
        # out_shardings, jit puts every leaf where it is asked to.
        eager = opt.init(params)
        params_shaped = 0
        for how, state in (("jit(init)", jax.jit(opt.init)(params)), ("init", eager)):
            for path, leaf in jax.tree_util.tree_leaves_with_path(state):
                key = by_shape.get(getattr(leaf, "shape", None))
                if key is None:
                    continue
                params_shaped += 1
                if not leaf.sharding.is_equivalent_to(shardings[key], leaf.ndim):
                    errors.append(f"{how}: state{jax.tree_util.keystr(path)} has spec "
                                  f"{getattr(leaf.sharding, 'spec', leaf.sharding)}, param {key!r} has {specs[key]}")
        if params_shaped == 0:
            errors.append("init: no params-shaped state leaf found")
        wanted = jax.tree.map(lambda leaf: NamedSharding(mesh, P(*([None] * (leaf.ndim - 1) + ["tp"])))
                              if leaf.ndim and leaf.shape[-1] % 2 == 0 else NamedSharding(mesh, P()), eager)
        pinned = jax.jit(opt.init, out_shardings=wanted)(params)
        for (path, leaf), want in zip(jax.tree_util.tree_leaves_with_path(pinned), jax.tree.leaves(wanted)):
            if not leaf.sharding.is_equivalent_to(want, leaf.ndim):
                errors.append(f"jit(init, out_shardings): state{jax.tree_util.keystr(path)} is on {leaf.sharding}, asked {want}")
        state = jax.jit(opt.init)(params)  # the steps below start from the jitted init's state

        # 2. The compiled step moves nothing between devices (a global reduction only where needed).
        grads = jax.tree.map(lambda p: p * 0.5, params)
        compiled = optimizer_step(opt).lower(params, state, grads).compile()
        hlo = compiled.as_text()
        for op in MOVING_COLLECTIVES:
            if f" {op}(" in hlo or f" {op}-start(" in hlo:
                lines = [line.strip()[:160] for line in hlo.splitlines() if f" {op}" in line][:3]
                errors.append(f"step HLO has {op}: {lines}")
        all_reduce = " all-reduce(" in hlo or " all-reduce-start(" in hlo
        if layout == "replicated" and all_reduce:
            errors.append("step HLO has an all-reduce although params are replicated")
        if all_reduce and not reduces:
            errors.append("step HLO has an all-reduce but this optimizer needs no global reduction")

        # 3. The step keeps params and state where they are.
        new_params, new_state = compiled(params, state, grads)
        for key, leaf in new_params.items():
            if not leaf.sharding.is_equivalent_to(shardings[key], leaf.ndim):
                errors.append(f"step: new params[{key!r}] has {leaf.sharding}, expected {shardings[key]}")
        for path, new in jax.tree_util.tree_leaves_with_path(new_state):
            key = by_shape.get(getattr(new, "shape", None))
            if key is not None and not new.sharding.is_equivalent_to(shardings[key], new.ndim):
                errors.append(f"step: state{jax.tree_util.keystr(path)} is on {getattr(new.sharding, 'spec', new.sharding)} "
                              f"after a step, param {key!r} on {specs[key]}")

        # 4. With out_shardings read off its inputs (the sharding guide's recipe) the step compiles once:
        # its outputs come back with the very shardings that went in, so the next call hits the cache.
        def shardings_of(tree):
            replicated = NamedSharding(mesh, P())
            return jax.tree.map(lambda leaf: leaf.sharding if isinstance(leaf.sharding, NamedSharding) else replicated, tree)

        pinned_step = optimizer_step(opt, out_shardings=(shardings_of(params), shardings_of(state)))
        pinned_params, pinned_state = pinned_step(params, state, grads)
        pinned_step(pinned_params, pinned_state, grads)
        if pinned_step._cache_size() != 1:  # pylint: disable=protected-access
            errors.append(f"step with out_shardings: compiled {pinned_step._cache_size()} times in two calls")

        # 5. Five steps on the mesh (batch split over 'fsdp') equal the single-device run.
        result = train(opt, params, state, NamedSharding(mesh, P("fsdp", None)), gather=explicit)
        for key in host_params:
            if not np.allclose(result[key], reference[key], rtol=2e-5, atol=2e-6):
                gap = float(np.max(np.abs(result[key] - reference[key])))
                errors.append(f"training: params[{key!r}] differs from the single-device run by {gap:.3g}")
        return {"errors": errors, "params_shaped_state_leaves": params_shaped}

    report = {}
    for name in CASES:
        opt, reduces = _optimizer(name)
        if opt is None:
            report[name] = {"missing": reduces}
            continue
        single = jax.device_put(host_params, jax.devices()[0])
        reference = train(opt, single, opt.init(single), jax.devices()[0])
        for layout, (_, explicit) in layouts.items():
            try:
                if explicit:
                    with jax.set_mesh(meshes[True]):
                        report[f"{name}/{layout}"] = check(name, opt, reduces, layout, reference)
                else:
                    report[f"{name}/{layout}"] = check(name, opt, reduces, layout, reference)
            except Exception as error:  # noqa: BLE001 -- reported per case, so one failure does not hide the others
                report[f"{name}/{layout}"] = {"errors": [f"{type(error).__name__}: {str(error)[:1500]}"]}
    return report


# --------------------------------------------------------------------------- tests (pytest side)


@pytest.fixture(scope="module")
def report():
    proc = subprocess.run([sys.executable, __file__], env=fake_devices_env(DEVICES), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", CASES)
def test_sharded_step(report, name, layout):
    if "missing" in report.get(name, {}):
        pytest.skip(report[name]["missing"])
    case = report[f"{name}/{layout}"]
    if case["errors"] and (name, layout) in KNOWN_ISSUES:
        pytest.xfail(KNOWN_ISSUES[name, layout] + " | " + "; ".join(case["errors"])[:600])
    assert case["errors"] == [], "\n".join(case["errors"])


if __name__ == "__main__":
    print(json.dumps(_worker()))
