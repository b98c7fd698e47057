"""Where the low-bit step's costs are: time per compiled loop, and compile time per quantized leaf.

The rows of ``lowbit_bench.py`` (Optax adamw, optcore adamw, adamw_8bit,
adamw_4bit), side by side in one run:

* ``loops``: one donated step on one array of ``--size`` floats, run
  ``--steps`` times under ``jax.profiler``; the mean milliseconds per step of
  each compiled loop (XLA fusion, copy, ...) that takes at least 1% of the
  row's total, from the profiler's trace.
* ``compile``: for each count in ``--leaf-counts``, a tree of that many
  identical 128x125 leaves (every one large enough to be quantized): the
  seconds to trace and lower the donated step, and to compile it, and the
  same per leaf.

A measurement (asserts nothing):

    python benchmarks/lowbit_costs.py [--size 16000000] [--steps 10] [--leaf-counts 50,100,200] [--json out.json]
    python benchmarks/lowbit_costs.py --smoke    # seconds, to keep the script working
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import platform
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lowbit_bench import donated_step, rows  # noqa: E402

LEAF_SHAPE = (128, 125)  # 16,000 entries: above the 4,096-entry threshold, so every leaf is quantized


def loop_times(size: int, steps: int) -> dict[str, dict[str, float]]:
    """Row -> {compiled loop name: mean ms per step}, from ``jax.profiler``'s trace of ``steps`` steps."""
    params = {"w": jnp.asarray(np.random.default_rng(0).normal(size=size).astype(np.float32))}
    grads = jax.tree.map(lambda x: x * 1e-3, params)
    out = {}
    for name, (lib, factory) in rows().items():
        opt = factory()
        p, s = jax.tree.map(jnp.copy, params), opt.init(params)
        step = donated_step(lib, opt).lower(p, s, grads).compile()
        p, s = step(p, s, grads)  # warm up outside the trace
        jax.block_until_ready((p, s))
        with tempfile.TemporaryDirectory() as folder:
            with jax.profiler.trace(folder, create_perfetto_trace=True):
                for _ in range(steps):
                    p, s = step(p, s, grads)
                    jax.block_until_ready((p, s))
            (trace_file,) = glob.glob(os.path.join(folder, "**", "perfetto_trace.json.gz"), recursive=True)
            with gzip.open(trace_file) as f:
                events = json.load(f)
        events = events["traceEvents"] if isinstance(events, dict) else events
        totals = collections.defaultdict(float)
        compiled = step.as_text()
        for event in events:
            # The compiled program's own loops: names of its HLO instructions ("%name = ...").
            if event.get("ph") == "X" and f"%{event['name']} = " in compiled:
                totals[event["name"]] += event["dur"] / 1e3 / steps
        total = sum(totals.values())
        out[name] = {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v >= 0.01 * total}
    return out


def compile_times(leaf_counts: list[int]) -> list[dict]:
    out = []
    for n in leaf_counts:
        params = {f"w{i}": jnp.ones(LEAF_SHAPE, jnp.float32) for i in range(n)}
        for name, (lib, factory) in rows().items():
            opt = factory()
            state = opt.init(params)
            start = time.perf_counter()
            lowered = donated_step(lib, opt).lower(params, state, params)
            traced = time.perf_counter()
            lowered.compile()
            done = time.perf_counter()
            out.append({"leaves": n, "row": name, "trace_lower_s": traced - start, "compile_s": done - traced,
                        "trace_lower_ms_per_leaf": (traced - start) / n * 1e3,
                        "compile_ms_per_leaf": (done - traced) / n * 1e3})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16_000_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--leaf-counts", default="50,100,200", help="comma-separated leaf counts for the compile times")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs (seconds)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.steps, args.leaf_counts = 50_000, 2, "2"
    leaf_counts = [int(n) for n in args.leaf_counts.split(",")]

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {platform.machine()}, {os.cpu_count()} CPUs")
    loops = loop_times(args.size, args.steps)
    print(f"\nms per step of each compiled loop, one array of {args.size} floats ({args.steps} steps profiled):")
    for name, times in loops.items():
        print(f"  {name:<14} total {sum(times.values()):7.2f}: "
              + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    compiles = compile_times(leaf_counts)
    print(f"\ncompile cost, trees of identical {LEAF_SHAPE[0]}x{LEAF_SHAPE[1]} leaves:")
    print(f"  {'leaves':>6} {'row':<14} {'trace+lower s':>14} {'compile s':>10} {'ms/leaf':>16}")
    for r in compiles:
        print(f"  {r['leaves']:>6} {r['row']:<14} {r['trace_lower_s']:14.2f} {r['compile_s']:10.2f} "
              f"{r['trace_lower_ms_per_leaf']:7.1f} + {r['compile_ms_per_leaf']:6.1f}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"jax": jax.__version__, "platform": jax.devices()[0].platform, "cpus": os.cpu_count(),
                       "size": args.size, "steps": args.steps, "loops_ms_per_step": loops,
                       "compile": compiles}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
