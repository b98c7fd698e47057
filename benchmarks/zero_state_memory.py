"""Optimizer state per device under ZeRO (``optcore.sharding.state_shardings``), float32 and low-bit.

A GPT-2-shaped tree of params (by default GPT-2 small: 12 layers, width 768,
vocabulary 50257, context 1024; 124M params), replicated over a data-parallel
mesh of fake CPU devices (8 by default), with its optimizer state split over
the mesh by ``state_shardings``. For each optimizer the script reports the
state's total bytes, its bytes on one device, and the ratio of those to Optax's
and optcore's float32 AdamW, side by side in one run; and which params
``state_shardings`` names as left whole.

Nothing is allocated: the params are abstract (``jax.ShapeDtypeStruct``), the
state's shapes come from ``jax.eval_shape`` and its layout from the shardings.
The embedding is the interesting leaf: 50257 rows do not divide by 8, so only
its rows of 768 can be split, 96 entries a device, across which the 8-bit
blocks of 192 run.

Usage: python benchmarks/zero_state_memory.py [--devices 8] [--smoke] [--json FILE]
Not part of the test suite (``tox -e bench-smoke`` runs ``--smoke``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8, help="fake CPU devices on the data axis")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--smoke", action="store_true", help="2 layers and a vocabulary of 1001: seconds")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def gpt2_params(layers, width, vocab, context, sharding):
    """The params of a GPT-2-shaped model, abstract and laid out by ``sharding``."""
    import jax
    import jax.numpy as jnp

    def leaf(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)

    def norm():
        return {"scale": leaf(width), "bias": leaf(width)}

    params = {"embed": leaf(vocab, width), "positions": leaf(context, width), "final_norm": norm()}
    for i in range(layers):
        params[f"layer{i}"] = {
            "norm1": norm(), "qkv": {"w": leaf(width, 3 * width), "b": leaf(3 * width)},
            "out": {"w": leaf(width, width), "b": leaf(width)}, "norm2": norm(),
            "mlp_in": {"w": leaf(width, 4 * width), "b": leaf(4 * width)},
            "mlp_out": {"w": leaf(4 * width, width), "b": leaf(width)},
        }
    return params


def optimizers():
    """Name -> optimizer, Optax's AdamW first where Optax is importable (a benchmark oracle only)."""
    import jax

    import optcore

    rows = {}
    try:
        import optax

        rows["optax adamw"] = optax.adamw(1e-3)
    except ImportError:
        pass
    rows["adamw"] = optcore.adamw(1e-3)
    rows["adamw_8bit"] = optcore.get("adamw_8bit", learning_rate=1e-3)
    rows["adamw_8bit block_size=192"] = optcore.get("adamw_8bit", learning_rate=1e-3, block_size=192)

    def embedding_apart(params):
        return jax.tree_util.tree_map_with_path(
            lambda path, _: "float32" if jax.tree_util.keystr(path).startswith("['embed']") else "8bit", params)

    rows["embed adamw, rest adamw_8bit"] = optcore.partition(
        {"float32": optcore.adamw(1e-3), "8bit": optcore.get("adamw_8bit", learning_rate=1e-3)}, embedding_apart)
    rows["adamw_4bit"] = optcore.get("adamw_4bit", learning_rate=1e-3)
    return rows


def measure(opt, params, mesh) -> dict:
    import jax

    import optcore

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shardings = optcore.sharding.state_shardings(opt, params, mesh)
    shapes = jax.eval_shape(opt.init, params)
    total = per_device = 0
    for shape, sharding in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)):
        total += shape.size * shape.dtype.itemsize
        per_device += math.prod(sharding.shard_shape(shape.shape)) * shape.dtype.itemsize
    named = [str(w.message) for w in caught if str(w.message).startswith("state_shardings")]
    return {"total_bytes": total, "per_device_bytes": per_device, "warnings": named}


def main(argv=None) -> int:
    args = parse_args(argv)
    if "jax" in sys.modules:
        raise RuntimeError("run this file as a script: the device count is set before jax is imported")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}"
    if args.smoke:
        args.layers, args.vocab = 2, 1001

    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((args.devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    params = gpt2_params(args.layers, args.width, args.vocab, args.context, NamedSharding(mesh, PartitionSpec()))
    n_params = sum(p.size for p in jax.tree.leaves(params))
    print(f"{n_params / 1e6:.1f}M params ({args.layers} layers, width {args.width}, vocabulary {args.vocab}), "
          f"replicated on {args.devices} devices; the state split over them by state_shardings")
    results = {name: measure(opt, params, mesh) for name, opt in optimizers().items()}
    references = [name for name in ("optax adamw", "adamw") if name in results]
    header = f"{'optimizer':30s} {'state MB':>9s} {'per device MB':>14s}" + "".join(f" {'/ ' + r:>13s}" for r in references)
    print(header)
    for name, row in results.items():
        ratios = "".join(f" {row['per_device_bytes'] / results[r]['per_device_bytes']:13.3f}" for r in references)
        print(f"{name:30s} {row['total_bytes'] / 1e6:9.1f} {row['per_device_bytes'] / 1e6:14.1f}{ratios}")
        for message in row["warnings"]:  # each ends with the params it names
            print(f"    named by state_shardings: {message.rsplit('): ', 1)[-1]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "params": n_params, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
