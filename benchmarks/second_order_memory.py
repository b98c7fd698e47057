"""Peak memory of the exact Hessian diagonal as the parameter count n grows.

Compares ``optcore_second_order.hessian_diag`` (a loop of Hessian-vector
products over basis vectors built inside the loop: linear in n) with Optax
0.2.8's ``optax.second_order.hessian_diag`` (vmap over an n-by-n identity:
quadratic in n), when Optax is importable.

Two measurements:

* ``compiled``: XLA's own account of the compiled function
  (``jax.jit(f).lower(...).compile().memory_analysis()``): bytes of temporary
  buffers plus arguments and outputs. Only compiles, so it reaches sizes whose
  run would not fit or would take hours.
* ``--run N``: for n <= N, runs each function once in a fresh subprocess and
  reports its peak resident set size (ru_maxrss) and wall time; on an
  accelerator, the device allocator's peak bytes in use instead of RSS.

The loss is a least-squares fit with a quartic penalty, so the Hessian is dense:
``mean((X w - y)**2) + 0.01 * sum(w**4)`` with X of shape (4, n).

Usage: python benchmarks/second_order_memory.py [--max-n 1000000] [--run 10000]
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

BATCH = 4


def loss(w, inputs, targets):
    import jax.numpy as jnp

    return jnp.mean((inputs @ w - targets) ** 2) + 0.01 * jnp.sum(w**4)


def problem(n):
    import jax
    import jax.numpy as jnp

    key_w, key_x, key_y = jax.random.split(jax.random.key(0), 3)
    w = jax.random.normal(key_w, (n,), jnp.float32)
    inputs = jax.random.normal(key_x, (BATCH, n), jnp.float32)
    targets = jax.random.normal(key_y, (BATCH,), jnp.float32)
    return w, inputs, targets


def implementations():
    """name -> function(params, inputs, targets) computing the flat diagonal."""
    import optcore_second_order as ours

    impls = {
        "optcore (chunk 1)": lambda w, x, y: ours.hessian_diag(loss, w, x, y),
        "optcore (chunk 64)": lambda w, x, y: ours.hessian_diag(loss, w, x, y, chunk_size=64),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from optax import second_order as theirs
        impls["optax 0.2.8"] = lambda w, x, y: theirs.hessian_diag(loss, w, x, y)
    except ImportError:
        pass
    return impls


def compiled_bytes(fn, n):
    import jax

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = jax.jit(fn).lower(*problem(n)).compile().memory_analysis()
    return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def measure_run(name, n):
    """Runs one implementation in this (fresh) process; prints JSON."""
    import jax

    w, x, y = problem(n)
    jax.block_until_ready((w, x, y))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = jax.jit(implementations()[name])
    start = time.perf_counter()
    jax.block_until_ready(fn(w, x, y))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result = {"seconds": seconds, "peak_mib": peak / 1024, "growth_mib": (peak - baseline) / 1024}
    device_stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in device_stats:  # accelerators: the allocator's own high-water mark
        result["device_peak_mib"] = device_stats["peak_bytes_in_use"] / 2**20
    print(json.dumps(result))


def human(num_bytes):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if num_bytes < 1024 or unit == "TiB":
            return f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-n", type=int, default=1_000_000)
    parser.add_argument("--optax-max-n", type=int, default=100_000,
                        help="largest n for which Optax's version is compiled")
    parser.add_argument("--run", type=int, default=10_000, help="largest n that is also run")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure_run(args.child[0], int(args.child[1]))
        return

    import jax

    sizes = [n for n in (1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000)
             if n <= args.max_n]
    impls = implementations()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; loss with X of shape ({BATCH}, n)\n")
    print("Compiled memory (temporaries + arguments + outputs), from XLA's memory analysis:\n")
    print("| n | " + " | ".join(impls) + " |")
    print("|---:|" + "---:|" * len(impls))
    for n in sizes:
        cells = []
        for name, fn in impls.items():
            if name.startswith("optax") and n > args.optax_max_n:
                cells.append("(not compiled)")
                continue
            cells.append(human(compiled_bytes(fn, n)))
        print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)

    run_sizes = [n for n in sizes if n <= args.run]
    if not run_sizes:
        return
    print("\nRun once in a fresh process: peak RSS of the process (its growth during the call,"
          " beyond the peak after importing JAX and building the data) / wall time incl. compile:\n")
    print("| n | " + " | ".join(impls) + " |")
    print("|---:|" + "---:|" * len(impls))
    for n in run_sizes:
        cells = []
        for name in impls:
            out = subprocess.run([sys.executable, __file__, "--child", name, str(n)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                cells.append("failed (out of memory?)" if "RESOURCE_EXHAUSTED" in out.stderr else "failed")
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if "device_peak_mib" in result:
                cells.append(f"{result['device_peak_mib']:.1f} MiB on device / {result['seconds']:.1f} s")
            else:
                cells.append(f"{result['peak_mib']:.0f} MiB (+{result['growth_mib']:.0f}) / "
                             f"{result['seconds']:.1f} s")
        print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
