"""Side-by-side benchmark of optcore and Optax: fused training steps, bandwidth, compile time, memory.

Run by ``tox -e bench`` (which installs Optax as the peer); ``--smoke`` is the
tiny run CI uses to keep the script working (``tox -e bench-smoke``). Timings
are interleaved (optcore, Optax, Optax, optcore, ...: the order alternates so
neither library always runs first) and summarised by their medians; every
figure that compares the two is a ratio optcore / Optax (below 1: optcore is
faster). An A/A row per tree (Optax against itself) shows the noise floor.
Before timing, each row checks that both libraries compute the same step
(``max_rel_diff``), so a ratio never compares two different computations.

This is a measurement, not a test: it asserts no targets.

    python benchmarks/step_bench.py [--size 16000000] [--leaves 1000] [--repeats 15]
                                    [--compile-repeats 3] [--only adam lion] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def transformer_like_tree(total: int, leaves: int, seed: int = 0) -> dict[str, jax.Array]:
    """``leaves`` arrays totalling ~``total`` floats: a few big matrices and many small vectors."""
    n_big = max(1, leaves // 50)
    n_small = leaves - n_big
    small_size = max(1, total // (200 * max(n_small, 1)))
    big_size = (total - n_small * small_size) // n_big
    side = int(np.sqrt(big_size))
    rng = np.random.default_rng(seed)
    tree = {f"matrix_{i:03d}": rng.normal(size=(side, big_size // side)).astype(np.float32) for i in range(n_big)}
    tree.update({f"vector_{i:04d}": rng.normal(size=(small_size,)).astype(np.float32) for i in range(n_small)})
    return {k: jnp.asarray(v) for k, v in tree.items()}


def optimizers(lib) -> dict[str, Callable[[], Any]]:
    return {
        "adam": lambda: lib.adam(1e-3),
        "adamw": lambda: lib.adamw(1e-3, weight_decay=1e-4),
        "sgd_momentum": lambda: lib.sgd(1e-3, momentum=0.9),
        "lion": lambda: lib.lion(1e-4),
        "adafactor": lambda: lib.adafactor(1e-3),
        "clip_adamw": lambda: lib.chain(lib.clip_by_global_norm(1.0), lib.adamw(1e-3, weight_decay=1e-4)),
    }


def fused_step(lib, opt):
    """One jitted training step: the optimizer update and ``apply_updates``, buffers donated."""

    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return lib.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def compile_seconds(lib, opt, params, state) -> float:
    """Trace + lower + XLA-compile one fused step from scratch (a fresh ``jax.jit``, so no cache hit)."""
    start = time.perf_counter()
    fused_step(lib, opt).lower(params, state, params).compile()
    return time.perf_counter() - start


def time_interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per run; the order alternates every repeat so drift hits both sides alike."""
    samples: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            runs[name]()
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def tree_bytes(tree) -> int:
    return sum(x.nbytes for x in jax.tree.leaves(tree))


class Runner:
    """A compiled fused step of one optimizer on one tree, with its own donated params and state."""

    def __init__(self, lib, opt_factory, params):
        self.opt = opt_factory()
        self.lib = lib
        state = jax.jit(self.opt.init)(params)
        self.state_bytes = tree_bytes(state)
        start = time.perf_counter()
        self.compiled = fused_step(lib, self.opt).lower(params, state, params).compile()
        self.compile_s = time.perf_counter() - start
        memory = self.compiled.memory_analysis()
        self.peak_bytes = None
        if memory is not None:
            fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes")
            self.peak_bytes = sum(getattr(memory, f, 0) or 0 for f in fields)
        self.grads = jax.tree.map(lambda x: x * 1e-3, params)
        self.params = jax.tree.map(jnp.copy, params)
        self.state = state
        self.run()  # first step: also the warm-up
        # Host copy of the first step's result, to check both libraries agree (freed by the caller).
        self.first_params = jax.tree.map(np.asarray, self.params)

    def run(self):
        self.params, self.state = self.compiled(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))


def max_rel_diff(a, b) -> float:
    diffs = [np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-30) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return float(max(diffs))


def triad_seconds(size: int, repeats: int) -> float:
    """A STREAM triad ``a = b + s * c`` on float32, jitted: reads 2 arrays, writes 1.

    ``a`` is donated and rewritten in place, as the fused steps donate params and
    state: a fresh output buffer per call would add page-fault time (large on CPU)
    that the optimizer steps do not pay, and flatter their bandwidth fraction.
    """
    a = jnp.zeros(size, jnp.float32)
    b = jnp.ones(size, jnp.float32)
    c = jnp.ones(size, jnp.float32)
    triad = jax.jit(lambda a, b, c: b + 1.5 * c, donate_argnums=0, keep_unused=True)
    a = jax.block_until_ready(triad(a, b, c))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a = jax.block_until_ready(triad(a, b, c))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_IMPORT_SCRIPT = """
import time
s = time.perf_counter()
import {module}
imported = time.perf_counter()
{code}
print(imported - s, time.perf_counter() - imported)
"""


def import_seconds(module: str, code: str = "pass", repeats: int = 5) -> tuple[float, float]:
    """Best of ``repeats`` fresh interpreters: (seconds to import ``module``, seconds for ``code`` after it)."""
    script = _IMPORT_SCRIPT.format(module=module, code=code)
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        imported, after = map(float, out.stdout.strip().splitlines()[-1].split())
        best = (min(best[0], imported), min(best[1], after))
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16_000_000)
    parser.add_argument("--leaves", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--compile-repeats", type=int, default=3, help="compiles per library and row (the first is the runner's own); the minimum is kept")
    parser.add_argument("--only", nargs="*", help="optimizer rows to run")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "latest.json"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.leaves, args.repeats, args.compile_repeats = 20_000, 20, 3, 1

    import optax

    import optcore

    names = args.only or list(optimizers(optcore))
    unknown = sorted(set(names) - set(optimizers(optcore)))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(optimizers(optcore))}")

    trees = {
        "one array": {"w": jnp.asarray(np.random.default_rng(0).normal(size=args.size).astype(np.float32))},
        f"{args.leaves} leaves": transformer_like_tree(args.size, args.leaves),
    }
    rows = []
    for tree_name, params in trees.items():
        for name in names:
            mine = Runner(optcore, optimizers(optcore)[name], params)
            theirs = Runner(optax, optimizers(optax)[name], params)
            agreement = max_rel_diff(mine.first_params, theirs.first_params)
            del mine.first_params, theirs.first_params
            medians = time_interleaved({"optcore": mine.run, "optax": theirs.run}, args.repeats)
            compiles = {"optcore": [mine.compile_s], "optax": [theirs.compile_s]}
            for i in range(args.compile_repeats - 1):
                for lib_name, runner in (("optcore", mine), ("optax", theirs))[:: 1 if i % 2 == 0 else -1]:
                    compiles[lib_name].append(compile_seconds(runner.lib, runner.opt, params, runner.state))
            compile_mine, compile_theirs = min(compiles["optcore"]), min(compiles["optax"])
            rows.append({
                "tree": tree_name, "optimizer": name,
                "optcore_ms": 1e3 * medians["optcore"], "optax_ms": 1e3 * medians["optax"],
                "ratio": medians["optcore"] / medians["optax"],
                "max_rel_diff": agreement,
                "compile_ratio": compile_mine / compile_theirs,
                "optcore_compile_s": compile_mine, "optax_compile_s": compile_theirs,
                "optcore_state_bytes": mine.state_bytes, "optax_state_bytes": theirs.state_bytes,
                "state_bytes_ratio": mine.state_bytes / max(theirs.state_bytes, 1),
                "peak_bytes_ratio": (mine.peak_bytes / theirs.peak_bytes) if mine.peak_bytes and theirs.peak_bytes else None,
            })
            row = rows[-1]
            print(f"{tree_name:>12} {name:<13} optcore {row['optcore_ms']:8.2f} ms  optax {row['optax_ms']:8.2f} ms"
                  f"  ratio {row['ratio']:.2f}  compile {row['optcore_compile_s']:.2f}s/{row['optax_compile_s']:.2f}s"
                  f" = {row['compile_ratio']:.2f}  state {row['state_bytes_ratio']:.2f}  diff {agreement:.1e}", flush=True)
            del mine, theirs

    # A/A: Optax against itself on each tree, the noise floor of the ratios above.
    aa = {}
    for tree_name, params in trees.items():
        a = Runner(optax, optimizers(optax)["adam"], params)
        b = Runner(optax, optimizers(optax)["adam"], params)
        medians = time_interleaved({"a": a.run, "b": b.run}, args.repeats)
        aa[tree_name] = medians["a"] / medians["b"]
        del a, b

    # State memory with bfloat16 moments (an optcore extension: Optax's adam has no nu_dtype).
    params = trees["one array"]
    bf16_state = jax.eval_shape(optcore.adam(1e-3, mu_dtype=jnp.bfloat16, nu_dtype=jnp.bfloat16).init, params)
    f32_state = jax.eval_shape(optax.adam(1e-3).init, params)
    bf16_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(bf16_state))
    f32_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(f32_state))

    triad = triad_seconds(args.size, args.repeats)
    triad_bandwidth = 3 * 4 * args.size / triad
    adam_row = next((r for r in rows if r["tree"] == "one array" and r["optimizer"] == "adam"), None)
    # Fused adam touches 7 float32 arrays per step: reads params, grads, mu, nu; writes params, mu, nu.
    adam_bandwidth = 7 * 4 * args.size / (adam_row["optcore_ms"] / 1e3) if adam_row else None
    optax_adam_bandwidth = 7 * 4 * args.size / (adam_row["optax_ms"] / 1e3) if adam_row else None

    import_repeats = 1 if args.smoke else 5
    optcore_import, optcore_lookup = import_seconds("optcore", "optcore.get('adam')", import_repeats)
    optax_import, _ = import_seconds("optax", repeats=import_repeats)
    jax_import, _ = import_seconds("jax", repeats=import_repeats)
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "jax": jax.__version__, "backend": jax.default_backend(),
                    "devices": [str(d) for d in jax.devices()], "optax": optax.__version__,
                    "optcore": optcore.__version__, "python": platform.python_version()},
        "size": args.size, "leaves": args.leaves, "repeats": args.repeats, "compile_repeats": args.compile_repeats,
        "rows": rows, "aa_ratio": aa,
        "triad_GBps": triad_bandwidth / 1e9,
        "adam_GBps": adam_bandwidth / 1e9 if adam_bandwidth else None,
        "optax_adam_GBps": optax_adam_bandwidth / 1e9 if optax_adam_bandwidth else None,
        "adam_fraction_of_triad": adam_bandwidth / triad_bandwidth if adam_bandwidth else None,
        "adam_bf16_moments_state_bytes": bf16_bytes, "optax_adam_state_bytes": f32_bytes,
        "adam_bf16_moments_state_ratio": bf16_bytes / f32_bytes,
        "jax_import_s": jax_import, "optcore_import_s": optcore_import, "optax_import_s": optax_import,
        "optcore_first_lookup_s": optcore_lookup,
    }
    print("A/A ratio (optax vs optax): " + ", ".join(f"{k} {v:.2f}" for k, v in aa.items()))
    print(f"triad {result['triad_GBps']:.1f} GB/s; fused adam optcore {result['adam_GBps'] or 0:.1f} GB/s "
          f"({(result['adam_fraction_of_triad'] or 0):.2f} of triad), optax {result['optax_adam_GBps'] or 0:.1f} GB/s")
    print(f"adam state with bf16 moments: {bf16_bytes} bytes = {bf16_bytes / f32_bytes:.3f} of Optax's float32 state")
    print(f"import jax {jax_import:.3f}s, import optcore {optcore_import:.3f}s, import optax {optax_import:.3f}s, "
          f"first optcore.get (plugin discovery) {optcore_lookup * 1e3:.1f} ms")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
