"""Multi-process training: two processes on loopback, 4 CPU devices each, one 8-device mesh.

The test starts both processes itself (this file run as a script, one
``process_id`` each), with ``jax.distributed.initialize`` pointed at a free
port on 127.0.0.1 and CPU collectives over gloo. They train five steps of a
small model in one of two layouts: ``fsdp``, params sharded over all 8 devices
(so the optimizer's state is split across the two processes and the
global-norm clip needs a cross-process all-reduce), and ``zero``, data
parallel with replicated params and the state split over the 8 devices by
``optcore.sharding.state_shardings``. Process 0 writes the gathered params;
the result must equal the same five steps run in this (single) process.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest

from optcore.testing import fake_devices_env

PROCESSES = 2
LOCAL_DEVICES = 4
STEPS = 5
TIMEOUT_S = 120


def _model_and_data():
    rng = np.random.default_rng(0)
    params = {
        "w1": rng.normal(size=(32, 16)).astype(np.float32) / 6,
        "w2": rng.normal(size=(16, 8)).astype(np.float32) / 4,
        "b": rng.normal(size=(16,)).astype(np.float32),
    }
    batches = [rng.normal(size=(16, 32)).astype(np.float32) for _ in range(STEPS)]
    return params, batches


def _optimizer():
    import optcore

    return optcore.chain(optcore.clip_by_global_norm(0.5), optcore.adamw(1e-2, weight_decay=1e-2))


def _train(params, batches, put_batch, shardings=None):
    """``STEPS`` jitted steps; ``put_batch`` places each host batch on the devices.

    ``shardings``: ``(params' shardings, state's shardings)`` to init and keep the state in (ZeRO);
    by default the state follows the params.
    """
    import jax
    import jax.numpy as jnp

    import optcore

    opt = _optimizer()

    def loss(params, x):
        h = jnp.tanh(x @ params["w1"] + params["b"]) @ params["w2"]
        return jnp.mean(h**2)

    def step(params, state, x):
        grads = jax.grad(loss)(params, x)
        updates, state = opt.update(grads, state, params)
        return optcore.apply_updates(params, updates), state

    if shardings is None:
        step, state = jax.jit(step), opt.init(params)
    else:
        step = jax.jit(step, out_shardings=shardings)
        state = jax.jit(opt.init, out_shardings=shardings[1])(params)
    for x in batches:
        params, state = step(params, state, put_batch(x))
    return params, state


def _worker(port: int, process_id: int, out: str, layout: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=PROCESSES, process_id=process_id,
        initialization_timeout=60,
    )
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    assert jax.process_count() == PROCESSES and jax.local_device_count() == LOCAL_DEVICES, jax.devices()
    import optcore

    host_params, batches = _model_and_data()
    if layout == "fsdp":  # params, and so the state, split over all 8 devices
        mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("fsdp", "tp"))
        specs, batch_axis = {"w1": P("fsdp", "tp"), "w2": P("tp", "fsdp"), "b": P("fsdp")}, "fsdp"
    else:  # "zero": data parallel, params replicated, the state split over the 8 devices by state_shardings
        mesh = Mesh(np.array(jax.devices()), ("data",))
        specs, batch_axis = {k: P() for k in host_params}, "data"

    def global_array(value, spec):
        # Every process holds the full host value (same seed) and contributes its own shards.
        return jax.make_array_from_callback(value.shape, NamedSharding(mesh, spec), lambda index: value[index])

    params = {k: global_array(v, specs[k]) for k, v in host_params.items()}
    shardings = None
    if layout == "zero":
        param_shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
        shardings = (param_shardings, optcore.sharding.state_shardings(_optimizer(), params, mesh, axis="data"))
    result, state = _train(params, batches, lambda x: global_array(x, P(batch_axis, None)), shardings)
    if layout == "zero":  # each of the 8 devices, 4 per process, holds 1/8 of Adam's moments after training
        adam_state = state[1][0]
        for k, v in host_params.items():
            for moment in (adam_state.mu[k], adam_state.nu[k]):
                assert len(moment.addressable_shards) == LOCAL_DEVICES
                assert all(shard.data.size * 8 == v.size for shard in moment.addressable_shards), (k, moment.sharding)
    # Each process owns only its shards; check that, then gather the full values.
    assert all(not leaf.is_fully_addressable for leaf in jax.tree.leaves(result))
    gathered = multihost_utils.process_allgather(result, tiled=True)
    if process_id == 0:
        np.savez(out, **{k: np.asarray(v) for k, v in gathered.items()})
    jax.distributed.shutdown()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("layout", ["fsdp", "zero"])
def test_two_processes_match_single_process(tmp_path, layout):
    out = tmp_path / "params.npz"
    env = fake_devices_env(LOCAL_DEVICES)
    port = _free_port()
    logs = [tmp_path / f"process{i}.log" for i in range(PROCESSES)]
    procs = []
    try:
        for i in range(PROCESSES):
            with open(logs[i], "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, __file__, str(port), str(i), str(out), layout],
                    env=env, stdout=log, stderr=subprocess.STDOUT,
                ))
        codes = [proc.wait(timeout=TIMEOUT_S) for proc in procs]
    finally:
        for proc in procs:  # on a timeout or an error, never leave a process behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = "\n".join(f"--- process {i}:\n{log.read_text()[-3000:]}" for i, log in enumerate(logs))
    assert codes == [0] * PROCESSES, output

    import jax

    host_params, batches = _model_and_data()
    device = jax.devices()[0]
    expected, _ = _train(jax.device_put(host_params, device), batches, lambda x: jax.device_put(x, device))
    with np.load(out) as got:
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], np.asarray(value), rtol=2e-5, atol=2e-6, err_msg=key)
            # Five steps moved the params: the comparison is not between two copies of the start.
            assert not np.allclose(got[key], host_params[key])


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
