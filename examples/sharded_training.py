"""Sharded training with optcore: params, optimizer state and data split over a device mesh.

By default it fakes 8 CPU devices, so it runs on a laptop:

    python examples/sharded_training.py                 # 8 fake CPU devices
    python examples/sharded_training.py --cpu-devices 0 # the real devices: every GPU/TPU jax sees

The mesh has a ``data`` axis (the batch is split over it) and a ``model`` axis;
each weight matrix is split over both (fully sharded, FSDP-style), so every
device holds 1/N of the params and of Adam's moments. The optimizer code is
the same as on one device: optcore's state inherits each param's sharding and
the update runs shard by shard; only the global-norm clip needs an all-reduce.
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
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    import optcore

    devices = np.array(jax.devices())
    model_axis = 2 if devices.size % 2 == 0 else 1
    mesh = Mesh(devices.reshape(-1, model_axis), ("data", "model"))
    print(f"{devices.size} {jax.default_backend()} devices, mesh {dict(mesh.shape)}")

    # A two-layer MLP learning a fixed random teacher. Weights are split over both mesh axes.
    width, n_in, n_out = args.width, 32, 8
    specs = {"w1": P("data", "model"), "b1": P("model"), "w2": P("model", "data"), "b2": P()}
    rng = np.random.default_rng(0)
    host_params = {
        "w1": rng.normal(size=(n_in, width)).astype(np.float32) / np.sqrt(n_in),
        "b1": np.zeros(width, np.float32),
        "w2": rng.normal(size=(width, n_out)).astype(np.float32) / np.sqrt(width),
        "b2": np.zeros(n_out, np.float32),
    }
    teacher = rng.normal(size=(n_in, n_out)).astype(np.float32)
    params = {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in host_params.items()}
    batch_sharding = NamedSharding(mesh, P("data", None))

    def loss_fn(params, x, y):
        h = jax.nn.gelu(x @ params["w1"] + params["b1"])
        return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)

    schedule = optcore.warmup_cosine_decay_schedule(0.0, 3e-3, warmup_steps=20, decay_steps=args.steps)
    opt = optcore.chain(optcore.clip_by_global_norm(1.0), optcore.adamw(schedule, weight_decay=1e-4))
    # Eager init: every moment is created with its param's sharding (1/N of it per device).
    state = opt.init(params)

    @jax.jit
    def train_step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = opt.update(grads, state, params)
        return optcore.apply_updates(params, updates), state, loss

    data_rng = np.random.default_rng(1)
    for step in range(args.steps):
        x = data_rng.normal(size=(args.batch, n_in)).astype(np.float32)
        y = np.tanh(x @ teacher)
        x, y = jax.device_put(x, batch_sharding), jax.device_put(y, batch_sharding)
        params, state, loss = train_step(params, state, x, y)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {float(loss):.4f}")

    adam_state = state[1][0]
    print(f"w1 {params['w1'].sharding.spec}: {params['w1'].addressable_shards[0].data.shape} per device; "
          f"its Adam nu {adam_state.nu['w1'].sharding.spec}: {adam_state.nu['w1'].addressable_shards[0].data.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
