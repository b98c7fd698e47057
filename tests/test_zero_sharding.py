"""ZeRO-style state sharding with ``optcore.sharding.state_shardings`` on 8 (fake CPU) devices.

One subprocess (this file run as a script, with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``; see
tests/test_sharding.py for why) prints a JSON report that the tests read. On a
small transformer-like tree, for Adam and (factored) Adafactor, and for two
layouts:

* ``zero``: data parallel on a ``('data',)`` mesh of 8: params replicated, the
  state split over ``data``;
* ``zero+fsdp``: a ``('data', 'fsdp')`` mesh of 4 x 2, params split over
  ``fsdp`` (FSDP) and the state over both axes;

it measures the state's bytes per device against the replicated layout (about
1/8), compiles the optimizer step and reads its collectives from the HLO (the
only all-gather is of the updates, at most the params' size per device: the
state is never gathered; no all-to-all or collective-permute), and trains five
steps that must equal a single-device run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from optcore.testing import fake_devices_env

DEVICES = 8
OPTIMIZERS = ["adam", "adafactor"]
LAYOUTS = ["zero", "zero+fsdp"]
BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
         "s8": 1, "u8": 1, "pred": 1}


def transformer_params(rng, width=64, layers=2, vocab=256):
    """A transformer-shaped tree: embedding, per-layer attention and MLP matrices, layer norms."""
    import numpy as np

    def dense(n_in, n_out):
        return (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)

    params = {"embed": dense(vocab, width), "final_norm": {"scale": np.ones(width, np.float32)}}
    for i in range(layers):
        params[f"layer{i}"] = {
            "qkv": dense(width, 3 * width), "out": dense(width, width),
            "mlp_in": dense(width, 4 * width), "mlp_out": dense(4 * width, width),
            "norm": {"scale": np.ones(width, np.float32), "bias": np.zeros(width, np.float32)},
        }
    return params


def gathered_bytes(hlo: str) -> int:
    """Bytes of the results of every all-gather in an HLO module (per device, after partitioning)."""
    total = 0
    for line in hlo.splitlines():
        match = re.search(r"= (.*?) all-gather(-start)?\(", line)
        if not match:
            continue
        shapes = re.findall(r"(\w+)\[([\d,]*)\]", match.group(1))
        if match.group(2):  # async start: (operands, results); count the results
            shapes = shapes[len(shapes) // 2:]
        for dtype, dims in shapes:
            size = 1
            for d in filter(None, dims.split(",")):
                size *= int(d)
            total += size * BYTES.get(dtype, 4)
    return total


def _worker() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import optcore

    assert jax.device_count() == DEVICES, jax.devices()
    rng = np.random.default_rng(0)
    host_params = transformer_params(rng)
    batches = [rng.normal(size=(16, 64)).astype(np.float32) for _ in range(5)]
    optimizers = {
        "adam": optcore.adam(1e-2),
        # Factored: every matrix here has both axes >= 32, so its second moment is a row and a column vector;
        # the momentum is the params-shaped state that ZeRO splits (the factored moments are tiny).
        "adafactor": optcore.adafactor(1e-2, min_dim_size_to_factor=32, momentum=0.9),
    }

    def loss(params, x):
        h = x
        for i in range(2):
            layer = params[f"layer{i}"]
            h = h + jnp.tanh(h @ layer["qkv"])[:, :64] @ layer["out"]
            h = h * layer["norm"]["scale"] + layer["norm"]["bias"]
            h = h + jnp.tanh(h @ layer["mlp_in"]) @ layer["mlp_out"]
        logits = (h * params["final_norm"]["scale"]) @ params["embed"].T
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

    def per_device_bytes(tree):
        return sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(tree))

    def run(name, layout, reference_grads):
        opt = optimizers[name]
        if layout == "zero":
            mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
            param_specs = jax.tree.map(lambda p: P(), host_params)
        else:
            mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
            param_specs = jax.tree.map(lambda p: P("fsdp", *([None] * (p.ndim - 1))), host_params)
        param_shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs)
        params = jax.device_put(host_params, param_shardings)
        state_shardings = optcore.sharding.state_shardings(opt, params, mesh, axis="data")
        state = jax.jit(opt.init, out_shardings=state_shardings)(params)
        replicated = jax.jit(opt.init, out_shardings=NamedSharding(mesh, P()))(params)
        errors = []
        for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(state_shardings)):
            if not leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
                errors.append(f"init: state{jax.tree_util.keystr(path)} on {leaf.sharding}, asked {sharding}")
        ratio = per_device_bytes(state) / per_device_bytes(replicated)

        def step(params, state, grads):
            updates, state = opt.update(grads, state, params)
            return optcore.apply_updates(params, updates), state

        compiled = jax.jit(step, in_shardings=(param_shardings, state_shardings, param_shardings),
                           out_shardings=(param_shardings, state_shardings)).lower(params, state, params).compile()
        hlo = compiled.as_text()
        collectives = sorted({op for op in ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
                              if re.search(rf" {op}(-start)?\(", hlo)})
        gathered, params_bytes = gathered_bytes(hlo), per_device_bytes(params)
        if gathered > params_bytes:
            errors.append(f"step gathers {gathered} bytes per device, more than the params' {params_bytes}: it gathers state")
        if "all-gather" not in collectives:
            errors.append("step has no all-gather: the updates computed on the state's slices never reach the params")
        moving = {"all-to-all", "collective-permute"} & set(collectives)
        if moving:
            errors.append(f"step has {sorted(moving)}")
        if name == "adam" and "all-reduce" in collectives:
            errors.append("step has an all-reduce, but Adam is element-wise")

        # The single-device run's gradients, fed to the sharded step: any difference is the optimizer's.
        for grads in reference_grads:
            params, state = compiled(params, state, jax.device_put(grads, param_shardings))
        for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(state_shardings)):
            if not leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
                errors.append(f"training: state{jax.tree_util.keystr(path)} moved to {leaf.sharding}")
        return jax.tree.map(np.asarray, params), {
            "errors": errors, "state_bytes_ratio": ratio, "collectives": collectives,
            "gathered_bytes": gathered, "params_bytes_per_device": params_bytes,
            "state_bytes_per_device": per_device_bytes(state), "replicated_state_bytes": per_device_bytes(replicated),
        }

    def single_device(name):
        opt, device = optimizers[name], jax.devices()[0]
        params = jax.device_put(host_params, device)
        state = opt.init(params)

        @jax.jit
        def train_step(params, state, grads):
            updates, state = opt.update(grads, state, params)
            return optcore.apply_updates(params, updates), state

        grads_seen = []
        for x in batches:
            grads = jax.grad(loss)(params, jax.device_put(x, device))
            grads_seen.append(jax.tree.map(np.asarray, grads))
            params, state = train_step(params, state, grads)
        return jax.tree.map(np.asarray, params), grads_seen

    def uneven():
        """A param no dimension of which divides into 8 is named in a warning, and its state replicated."""
        import warnings

        mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
        params = {"odd": np.ones((9, 5), np.float32), "tiny": np.ones(3, np.float32), "even": np.ones((4, 16), np.float32)}
        errors = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shardings = optcore.sharding.state_shardings(optcore.adam(1e-3), params, mesh)
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if len(messages) != 1 or "params['odd'] (9, 5)" not in messages[0] or "params['tiny']" in messages[0] or "params['even']" in messages[0]:
            errors.append(f"expected one warning naming params['odd'] only, got {messages}")
        mu = shardings[0].mu
        if mu["odd"].spec != P(None, None) and mu["odd"].spec != P():
            errors.append(f"mu['odd'] is on {mu['odd'].spec}, expected replicated")
        if mu["even"].spec != P(None, "data"):
            errors.append(f"mu['even'] is on {mu['even'].spec}, expected split along its longest dimension")
        try:
            optcore.sharding.state_shardings(optcore.adam(1e-3), params, mesh, axis="batch")
            errors.append("an axis the mesh lacks gave no error")
        except ValueError as error:
            if "'batch'" not in str(error) or "data" not in str(error):
                errors.append(f"unclear error: {error}")
        return {"errors": errors}

    def rows_only():
        """A state that follows a split of the rows only (one running mean of the squared gradient per row):
        split along the longest dimension first, the columns, it would stay whole; the next dimension that
        divides, the rows, is taken instead. With no other dimension (9 rows), the param is named in a warning."""
        import warnings

        def init(params):
            return jax.tree.map(lambda p: jnp.sum(optcore.tree_utils.state_zeros_like(p), axis=1), params)

        def update(updates, state, params=None):
            state = jax.tree.map(lambda v, g: 0.9 * v + 0.1 * jnp.mean(g * g, axis=1), state, updates)
            return jax.tree.map(lambda g, v: g / jnp.sqrt(v[:, None] + 1e-8), updates, state), state

        row_rms = optcore.GradientTransformation(init, update)
        mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
        params = {"wide": np.ones((16, 64), np.float32), "odd_rows": np.ones((9, 64), np.float32)}
        errors = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shardings = optcore.sharding.state_shardings(row_rms, params, mesh)
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if (len(messages) != 1 or "does not keep the split" not in messages[0]
                or "params['odd_rows'] (9, 64)" not in messages[0] or "params['wide']" in messages[0]):
            errors.append(f"expected one warning naming params['odd_rows'] only, got {messages}")
        if shardings["wide"].spec != P("data"):
            errors.append(f"state['wide'] is on {shardings['wide'].spec}, expected split along the rows")
        if "data" in str(shardings["odd_rows"].spec):
            errors.append(f"state['odd_rows'] is on {shardings['odd_rows'].spec}, expected whole")
        state = jax.jit(row_rms.init, out_shardings=shardings)(jax.device_put(params, NamedSharding(mesh, P())))
        grads = {k: np.arange(v.size, dtype=np.float32).reshape(v.shape) for k, v in params.items()}
        _, state = jax.jit(row_rms.update)(grads, state)
        want = {k: 0.1 * np.mean(g * g, axis=1) for k, g in grads.items()}
        if not all(np.allclose(state[k], want[k], rtol=1e-6) for k in want):
            errors.append("the row-split state does not hold the rows' means")
        # A state with a params-sized copy that is always whole (the warning names the param) and the columns'
        # sums: of the dimensions tried, the split is left where that state costs least, the columns (the first).
        def whole_copy_and_column_sums(params):
            def state(p):
                copy = jax.lax.with_sharding_constraint(optcore.tree_utils.state_zeros_like(p), NamedSharding(mesh, P()))
                return copy, jnp.sum(optcore.tree_utils.state_zeros_like(p), axis=0)
            return jax.tree.map(state, params)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mixed = optcore.sharding.state_shardings(optcore.GradientTransformation(whole_copy_and_column_sums, update),
                                                     {"wide": params["wide"]}, mesh)
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        if len(messages) != 1 or "params['wide'] (16, 64)" not in messages[0]:
            errors.append(f"expected one warning naming params['wide'], got {messages}")
        if mixed["wide"][1].spec != P("data") or "data" in str(mixed["wide"][0].spec):
            errors.append(f"expected a whole copy and split column sums, got {mixed['wide']}")
        # A state of constants, as Optax's inits make it (jnp.zeros_like ignores the param's value): propagation
        # has nothing to follow, so each leaf takes the layout of the params of its shape.
        constants = optcore.sharding.state_shardings(
            optcore.GradientTransformation(lambda params: jax.tree.map(jnp.zeros_like, params), update), params, mesh)
        if constants != {k: NamedSharding(mesh, P(None, "data")) for k in params}:
            errors.append(f"a state of constants should be split like its params: {constants}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            adam = optcore.sharding.state_shardings(optcore.adam(1e-3), params, mesh)
        if caught or adam[0].mu["wide"].spec != P(None, "data") or adam[0].mu["odd_rows"].spec != P(None, "data"):
            errors.append(f"Adam's state should stay split along the longest dimension, silently: {adam[0].mu}, "
                          f"{[str(w.message) for w in caught]}")
        return {"errors": errors}

    report = {"uneven": uneven(), "rows_only": rows_only()}
    for name in OPTIMIZERS:
        reference, grads = single_device(name)
        for layout in LAYOUTS:
            try:
                result, case = run(name, layout, grads)
                for (path, got), want, start in zip(jax.tree_util.tree_leaves_with_path(result), jax.tree.leaves(reference),
                                                    jax.tree.leaves(host_params)):
                    if not np.allclose(got, want, rtol=1e-6, atol=1e-7):
                        case["errors"].append(f"params{jax.tree_util.keystr(path)} differs from one device by "
                                              f"{float(np.max(np.abs(got - want))):.3g}")
                    if np.array_equal(want, start) and not np.all(want == 0):
                        case["errors"].append(f"params{jax.tree_util.keystr(path)} did not move: a vacuous comparison")
            except Exception as error:  # noqa: BLE001 -- reported per case
                case = {"errors": [f"{type(error).__name__}: {str(error)[:1500]}"]}
            report[f"{name}/{layout}"] = case
    return report


@pytest.fixture(scope="module")
def report():
    proc = subprocess.run([sys.executable, __file__], env=fake_devices_env(DEVICES), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_split_over_the_data_axis(report, name, layout):
    case = report[f"{name}/{layout}"]
    assert case["errors"] == [], "\n".join(case["errors"])
    print(f"{name}/{layout}: state {case['state_bytes_per_device']} B per device vs {case['replicated_state_bytes']} B "
          f"replicated (ratio {case['state_bytes_ratio']:.4f}); step collectives {case['collectives']}, "
          f"all-gather {case['gathered_bytes']} B per device (params {case['params_bytes_per_device']} B)")
    # 1/8 of the replicated layout, plus the few leaves too small to split (counts, Adafactor's placeholders).
    assert 1 / 8 <= case["state_bytes_ratio"] < 1 / 8 * 1.05


def test_unsplittable_params_are_named_and_their_state_replicated(report):
    assert report["uneven"]["errors"] == [], "\n".join(report["uneven"]["errors"])


def test_a_split_the_state_cannot_follow_moves_to_another_dimension_or_is_named(report):
    assert report["rows_only"]["errors"] == [], "\n".join(report["rows_only"]["errors"])


def test_the_state_of_a_param_is_read_from_init_through_calls_but_not_through_loops():
    """Which inputs each output of ``init`` is computed from: through ``jit`` and ``checkpoint`` calls exactly;
    through a loop, all of its inputs (a carry can pass any of them to any output over the iterations: here
    two swaps bring ``a`` back, which one iteration's reading would miss)."""
    import jax

    from optcore.sharding import _inputs_of_outputs

    def init(a, b, c):
        def swap(carry, _):
            return carry[::-1], None

        (x, _), _ = jax.lax.scan(swap, (a, b), None, length=2)
        return jax.jit(lambda u: 2 * u)(c), x, jax.checkpoint(lambda u: u + 1)(a), a, 1.0 + 0 * b

    assert _inputs_of_outputs(jax.make_jaxpr(init)(1.0, 2.0, 3.0).jaxpr) == [{2}, {0, 1}, {0}, {0}, {1}]


def test_the_example_shows_what_each_layout_costs_per_device():
    example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "sharded_training.py")
    proc = subprocess.run([sys.executable, example, "--steps", "3"], env=fake_devices_env(None), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    costs = re.findall(r"\[(\w+)\] mesh .*\nper device: params (\d+) B of (\d+) B, optimizer state (\d+) B of (\d+) B",
                       proc.stdout)
    costs = {layout: [int(n) for n in numbers] for layout, *numbers in costs}
    assert set(costs) == {"fsdp", "zero"}, proc.stdout
    params, all_params, state, all_state = costs["zero"]
    assert params == all_params and abs(state * 8 / all_state - 1) < 0.01  # params replicated, state split 8 ways
    params, all_params, state, all_state = costs["fsdp"]
    assert params < all_params / 4 and state < all_state / 4  # both split over the 4 x 2 mesh (small biases aside)


if __name__ == "__main__":
    print(json.dumps(_worker()))
