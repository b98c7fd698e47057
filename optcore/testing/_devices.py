"""Subprocesses with fake CPU devices, for sharding tests."""

from __future__ import annotations

import os
from typing import Mapping, Optional

# A starved device thread (tox runs the tests on every core) must not abort a collective after XLA:CPU's
# default 40 s.
PATIENT_COLLECTIVES = "--xla_cpu_collective_call_terminate_timeout_seconds=600 --xla_cpu_collective_timeout_seconds=600"


def fake_devices_env(devices: Optional[int], base: Optional[Mapping[str, str]] = None) -> dict:
    """The environment of a Python subprocess whose JAX sees ``devices`` CPU devices (``None``: its own choice).

    The device count is fixed when JAX starts, so a test that needs a mesh
    runs its JAX code in a subprocess with this environment (``base``, by
    default this process's, plus ``XLA_FLAGS`` and ``JAX_PLATFORMS=cpu``).
    Collectives wait up to 10 minutes for a device thread that a loaded
    machine starves.
    """
    env = dict(os.environ if base is None else base)
    flags = f"{env.get('XLA_FLAGS', '')} {PATIENT_COLLECTIVES}"
    if devices is not None:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = flags.strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env
