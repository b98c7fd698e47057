"""Sharded training with optcore: params, optimizer state and data split over a device mesh.

By default it fakes 8 CPU devices, so it runs on a laptop:

    python examples/sharded_training.py                 # 8 fake CPU devices, both layouts
    python examples/sharded_training.py --layout zero   # one layout
    python examples/sharded_training.py --cpu-devices 0 # the real devices: every GPU/TPU jax sees
    python examples/sharded_training.py --optimizer adamw_8bit  # any registered optimizer (here optcore-lowbit's)

Two layouts of the same MLP, each printing what a device holds:

* ``fsdp``: the mesh has a ``data`` axis (the batch is split over it) and a
  ``model`` axis; each weight matrix is split over both (fully sharded), so
  every device holds 1/N of the params and of Adam's moments. optcore's state
  takes each param's sharding and the update runs shard by shard; only the
  global-norm clip needs an all-reduce.
* ``zero``: plain data parallelism (params replicated on every device, batch
  split over ``data``) with the optimizer state split over ``data`` by
  ``optcore.sharding.state_shardings`` (ZeRO stage 1): each device holds all
  the params but only 1/N of the moments; the step all-gathers the updates.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-devices", type=int, default=8, help="fake CPU devices; 0 uses the real devices")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layout", choices=["fsdp", "zero", "both"], default="both")
    parser.add_argument("--optimizer", default="adamw", help="a registered optimizer's name (see `optcore list`)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu_devices:
        # Must happen before jax is imported: XLA reads the device count once.
        if "jax" in sys.modules:
            raise RuntimeError("set --cpu-devices before importing jax (run this file as a script)")
        os.environ["JAX_PLATFORMS"] = "cpu"
        # Fake devices share the host's cores; on a busy machine their threads can reach a collective
        # far apart, so XLA:CPU's 40 s rendezvous timeout is raised.
        os.environ["XLA_FLAGS"] = (
            f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.cpu_devices}"
            " --xla_cpu_collective_call_terminate_timeout_seconds=600 --xla_cpu_collective_timeout_seconds=600"
        )

    import jax
    import numpy as np

    devices = np.array(jax.devices())
    model_axis = 2 if devices.size % 2 == 0 else 1
    print(f"{devices.size} {jax.default_backend()} devices")
    layouts = ["fsdp", "zero"] if args.layout == "both" else [args.layout]
    for layout in layouts:
        train(args, layout, devices, model_axis)
    return 0


def per_device_bytes(tree) -> int:
    """Bytes one device holds of a tree of (sharded) arrays."""
    import jax

    return sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree.leaves(tree))


def train(args, layout, devices, model_axis):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import optcore

    width, n_in, n_out = args.width, 32, 8
    if layout == "fsdp":  # weights split over both mesh axes
        mesh = Mesh(devices.reshape(-1, model_axis), ("data", "model"))
        specs = {"w1": P("data", "model"), "b1": P("model"), "w2": P("model", "data"), "b2": P()}
    else:  # data parallel: params replicated on every device
        mesh = Mesh(devices, ("data",))
        specs = {"w1": P(), "b1": P(), "w2": P(), "b2": P()}
    print(f"\n[{layout}] mesh {dict(mesh.shape)}")

    # A two-layer MLP learning a fixed random teacher.
    rng = np.random.default_rng(0)
    host_params = {
        "w1": rng.normal(size=(n_in, width)).astype(np.float32) / np.sqrt(n_in),
        "b1": np.zeros(width, np.float32),
        "w2": rng.normal(size=(width, n_out)).astype(np.float32) / np.sqrt(width),
        "b2": np.zeros(n_out, np.float32),
    }
    teacher = rng.normal(size=(n_in, n_out)).astype(np.float32)
    param_shardings = {k: NamedSharding(mesh, specs[k]) for k in host_params}
    params = jax.device_put(host_params, param_shardings)
    batch_sharding = NamedSharding(mesh, P("data", None))

    def loss_fn(params, x, y):
        h = jax.nn.gelu(x @ params["w1"] + params["b1"])
        return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)

    schedule = optcore.warmup_cosine_decay_schedule(0.0, 3e-3, warmup_steps=min(20, args.steps // 2), decay_steps=args.steps)
    opt = optcore.chain(optcore.clip_by_global_norm(1.0), optcore.get(args.optimizer, learning_rate=schedule))

    def train_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optcore.apply_updates(params, updates), state, loss

    if layout == "fsdp":
        # The state follows the params: every moment is created with its param's sharding
        # (eagerly or under jax.jit(opt.init)), 1/N of it per device.
        state = jax.jit(opt.init)(params)
        train_step = jax.jit(train_step)
    else:
        # ZeRO: the state's layout, split over "data"; init and the step keep it there.
        state_shardings = optcore.sharding.state_shardings(opt, params, mesh, axis="data")
        state = jax.jit(opt.init, out_shardings=state_shardings)(params)
        train_step = jax.jit(train_step, out_shardings=(param_shardings, state_shardings, None))
    replicated_state = jax.jit(opt.init, out_shardings=NamedSharding(mesh, P()))(params)
    # What one device holds, against a fully replicated copy (plain data parallelism).
    print(f"per device: params {per_device_bytes(params)} B of {sum(leaf.nbytes for leaf in jax.tree.leaves(params))} B, "
          f"optimizer state {per_device_bytes(state)} B of {per_device_bytes(replicated_state)} B")

    data_rng = np.random.default_rng(1)
    for step in range(args.steps):
        x = data_rng.normal(size=(args.batch, n_in)).astype(np.float32)
        y = np.tanh(x @ teacher)
        x, y = jax.device_put(x, batch_sharding), jax.device_put(y, batch_sharding)
        params, state, loss = train_step(params, state, x, y)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {float(loss):.4f}")

    print(f"w1 {params['w1'].sharding.spec}: {params['w1'].addressable_shards[0].data.shape} per device; its state:")
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        if "['w1']" in jax.tree_util.keystr(path):
            print(f"  state{jax.tree_util.keystr(path)} {leaf.dtype} {leaf.sharding.spec}: "
                  f"{leaf.addressable_shards[0].data.shape} per device")


if __name__ == "__main__":
    raise SystemExit(main())
