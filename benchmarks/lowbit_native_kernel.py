"""What a hand-written fused kernel would give ``adamw_8bit`` on the CPU: a measurement for a decision.

Issue 18 asks for an ``adamw_8bit`` step at most 1.3x float32 AdamW's on the
CPU. In XLA the plugin's step takes three fused loops over each large leaf
(block maxima, the two encoders, the update fused into ``apply_updates``), each
decoding the moments again, and measures 1.7-2.5x (by CPU). This script builds a
prototype that does the requantization in one pass, ``lowbit_native/
adam8_kernel.cc`` (an XLA FFI custom call: AVX-512, the code's levels looked up
from registers, both moments decoded, updated, reduced and encoded per block,
blocks spread over XLA's thread pool), and times it in one run, interleaved,
against optcore's AdamW and the plugin's ``adamw_8bit``, params and state
donated, state from an eager ``init``:

* ``native, update written``: the kernel also writes Adam's update, which
  ``apply_updates`` then reads: a custom call's result cannot be fused into its
  consumer, so the update is a float32 temporary of each leaf's size;
* ``native, update by XLA``: the kernel only requantizes, and the update is
  recomputed from the old codes in the fused parameter update, as the plugin
  does; the kernel writes the new codes in place, so XLA must keep a copy of the
  old ones for that read.

Before timing, each native row's state after two steps is checked against
``adamw_8bit``'s from the same start (the second step decodes the first one's
codes; they may differ by one level where XLA and the kernel round a
multiply-add differently). Page faults per step are reported:
XLA:CPU allocates a step's temporaries anew on every call, and the faults on
fresh pages are part of what a temporary costs. Not part of the plugin, not a
test, asserts no target; it needs a C++ compiler and an AVX-512 CPU (it says
so and stops otherwise).

    python benchmarks/lowbit_native_kernel.py [--size 16000000] [--leaves 1000] [--repeats 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lowbit_bench import donated_step, peak_bytes  # noqa: E402
from step_bench import max_rel_diff, time_interleaved, transformer_like_tree  # noqa: E402

import optcore  # noqa: E402
import optcore_lowbit  # noqa: E402

SOURCE = Path(__file__).resolve().parent / "lowbit_native" / "adam8_kernel.cc"
TARGET = "optcore_lowbit_bench_adam8"
BLOCK_SIZE = 256  # adamw_8bit's default
LR, WD = 1e-3, 1e-4


def build_and_register() -> None:
    """Compiles the kernel for this CPU and registers it with XLA (or exits with the reason it cannot)."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if platform.machine() != "x86_64" or " avx512f" not in flags:
        sys.exit("lowbit_native_kernel.py: the prototype kernel needs an x86-64 CPU with AVX-512F.")
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        sys.exit("lowbit_native_kernel.py: no C++ compiler found (set CXX).")
    library = Path(tempfile.mkdtemp(prefix="lowbit_native_")) / "adam8_kernel.so"
    subprocess.run([compiler, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w",
                    f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(library)], check=True)
    handler = ctypes.cdll.LoadLibrary(str(library)).LowbitAdam8
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")


@functools.lru_cache(maxsize=None)
def code_tables() -> np.ndarray:
    """The levels of both 8-bit codes and the encoder's per-decade affine maps (see optcore_lowbit's codes).

    Decade ``e`` of a dynamic code with ``B`` magnitude bits spans ``[10^-(e+1), 10^-e]`` (the last one
    ``[0, 10^-(B-1)]``) with ``k_e = 2^(B-1-e)`` levels; a magnitude ``a`` in it has the real-valued index
    ``a k_e / w_e + k_e - 1 - lo_e k_e / w_e``.
    """
    def pieces(magnitude_bits):
        mul, add = [], []
        for e in range(magnitude_bits):
            hi = 10.0 ** -e
            lo = 0.0 if e == magnitude_bits - 1 else hi / 10
            k = 2 ** (magnitude_bits - 1 - e)
            mul.append(k / (hi - lo))
            add.append(k - 1 - lo * k / (hi - lo))
        return mul + add

    levels = [optcore_lowbit.code_values(kind, 8) for kind in (optcore_lowbit.SIGNED, optcore_lowbit.UNSIGNED)]
    return np.concatenate([*levels, np.float32(pieces(7)), np.float32(pieces(8))]).astype(np.float32)


def kernel_leaf(g, mu, nu, scalars, with_update: bool):
    """One leaf's requantization by the kernel: ``(update or None, new mu, new nu)``."""
    lead = mu.codes.shape[:-2]
    n_blocks, length = mu.codes.shape[-2:]
    row = int(np.prod(g.shape[len(lead):]))
    like = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    results = (jax.ShapeDtypeStruct(g.shape if with_update else (1,), jnp.float32),
               like(mu.codes), like(mu.scales), like(nu.codes), like(nu.scales))
    call = jax.ffi.ffi_call(TARGET, results, input_output_aliases={1: 1, 2: 2, 3: 3, 4: 4})
    update, mu_codes, mu_scales, nu_codes, nu_scales = call(
        g.astype(jnp.float32), mu.codes, mu.scales, nu.codes, nu.scales, scalars, jnp.asarray(code_tables()),
        row=np.int64(row), n_blocks=np.int64(n_blocks), length=np.int64(length), with_update=with_update)
    new = lambda q, codes, scales: optcore_lowbit.QuantizedArray(  # noqa: E731
        codes, scales, q.shape, q.dtype, q.kind, q.bits, q.block_size)
    return (update if with_update else None), new(mu, mu_codes, mu_scales), new(nu, nu_codes, nu_scales)


def native_adamw_8bit(with_update: bool) -> optcore.GradientTransformation:
    """``adamw_8bit`` (defaults) with its quantized leaves stepped by the kernel; small leaves in float32."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    inner = optcore_lowbit.scale_by_adam_8bit(block_size=BLOCK_SIZE)

    def update_fn(grads, state, params=None):
        del params
        count = state.count + 1
        t = count.astype(jnp.float32)
        c1, c2 = 1 - jnp.float32(b1) ** t, 1 - jnp.float32(b2) ** t
        scalars = jnp.stack([jnp.float32(b1), 1 - jnp.float32(b1), jnp.float32(b2), 1 - jnp.float32(b2),
                             jnp.float32(eps), jnp.float32(0), c1, c2])

        def adam(g, m, v):  # Adam's float32 equations: new moments and update
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            return m, v, (m / c1) / (jnp.sqrt(v / c2) + eps)

        def leaf(g, mu, nu):
            if not isinstance(mu, optcore_lowbit.QuantizedArray):
                m, v, u = adam(g, mu, nu)
                return u, m, v
            u, new_mu, new_nu = kernel_leaf(g, mu, nu, scalars, with_update)
            if u is None:  # recomputed from the old codes, fused into the parameter update downstream
                u = adam(g, optcore_lowbit.dequantize(mu), optcore_lowbit.dequantize(nu))[2]
            return u, new_mu, new_nu

        g_leaves, treedef = jax.tree.flatten(grads)
        outs = [leaf(g, m, v) for g, m, v in zip(g_leaves, treedef.flatten_up_to(state.mu),
                                                   treedef.flatten_up_to(state.nu))]
        updates, mu, nu = (treedef.unflatten(list(column)) for column in zip(*outs))
        return updates, optcore_lowbit.ScaleByAdamLowBitState(count=count, mu=mu, nu=nu)

    scale = optcore.GradientTransformation(inner.init, update_fn)
    return optcore.chain(scale, optcore.add_decayed_weights(WD), optcore.scale_by_learning_rate(LR))


ROWS = {
    "optcore adamw": lambda: optcore.adamw(LR, weight_decay=WD),
    "adamw_8bit": lambda: optcore_lowbit.adamw_8bit(LR, weight_decay=WD),
    "native, update written": functools.partial(native_adamw_8bit, True),
    "native, update by XLA": functools.partial(native_adamw_8bit, False),
}


def code_agreement(state, reference) -> float:
    """The fraction of equal codes between two 8-bit Adam states (every quantized leaf of both moments)."""
    codes = lambda s: [x.codes for x in jax.tree.leaves(s, is_leaf=_is_q) if _is_q(x)]  # noqa: E731
    pairs = list(zip(codes(state), codes(reference)))
    return float(sum(np.sum(np.asarray(a) == np.asarray(b)) for a, b in pairs) / sum(a.size for a, _ in pairs))


class Runner:
    def __init__(self, factory, params, grads):
        opt = factory()
        self.state = opt.init(params)
        self.compiled = donated_step(optcore, opt).lower(params, self.state, params).compile()
        self.peak_bytes = peak_bytes(self.compiled)
        self.params, self.grads = jax.tree.map(jnp.copy, params), grads
        self.faults = []
        # Two warm-up steps: the second decodes the codes the first wrote (from a zero state, the first
        # decodes only zeros). Copied to the host: the next step donates these buffers.
        self.run()
        self.run()
        self.first = jax.tree.map(np.asarray, (self.params, self.state))

    def run(self):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        self.params, self.state = self.compiled(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))
        self.faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)


class KernelAlone:
    """The kernel's requantization of every quantized leaf and nothing else (no update): not a training step."""

    def __init__(self, params, grads):
        state = optcore_lowbit.scale_by_adam_8bit(block_size=BLOCK_SIZE).init(params)
        scalars = jnp.asarray([0.9, 0.1, 0.999, 0.001, 1e-8, 0.0, 0.1, 0.001], jnp.float32)

        def requantize(state, grads):
            leaves = [(g, m, v) for g, m, v in zip(jax.tree.leaves(grads), jax.tree.leaves(state.mu, is_leaf=_is_q),
                                                   jax.tree.leaves(state.nu, is_leaf=_is_q)) if _is_q(m)]
            return [kernel_leaf(g, m, v, scalars, False)[1:] for g, m, v in leaves]

        self.compiled = jax.jit(requantize, donate_argnums=0).lower(state, grads).compile()
        self.state, self.grads, self.faults = state, grads, []

    def run(self):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out = self.compiled(self.state, self.grads)
        jax.block_until_ready(out)
        self.faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        mu, nu = zip(*out) if out else ((), ())
        self.state = self.state._replace(mu=_replace_quantized(self.state.mu, mu),
                                         nu=_replace_quantized(self.state.nu, nu))


def _is_q(x) -> bool:
    return isinstance(x, optcore_lowbit.QuantizedArray)


def _replace_quantized(field, new_leaves):
    """``field`` with its quantized leaves replaced, in order, by ``new_leaves``."""
    leaves, treedef = jax.tree.flatten(field, is_leaf=_is_q)
    it = iter(new_leaves)
    return treedef.unflatten([next(it) if _is_q(x) else x for x in leaves])


KERNEL_ALONE = "kernel alone (requantization only, not a step)"


def measure(tree_name: str, params, repeats: int) -> list[dict]:
    grads = jax.tree.map(lambda x: x * 1e-3, params)
    runners = {name: Runner(factory, params, grads) for name, factory in ROWS.items()}
    runners[KERNEL_ALONE] = KernelAlone(params, grads)
    reference, adamw = runners["adamw_8bit"], runners["optcore adamw"]
    checks = {}
    for name in ("native, update written", "native, update by XLA"):
        agreement = code_agreement(runners[name].first[1], reference.first[1])
        if agreement < 0.999:
            sys.exit(f"{name}: only {agreement:.4%} of the codes equal adamw_8bit's after two steps; not timing it.")
        checks[name] = {"codes_equal": agreement,
                        "params_max_rel_diff": max_rel_diff(runners[name].first[0], reference.first[0])}
    for r in runners.values():
        r.faults.clear()  # the warm-up's faults are not a step's
    medians = time_interleaved({name: r.run for name, r in runners.items()}, repeats)
    return [{
        "tree": tree_name,
        "row": name,
        "step_s": medians[name],
        "time_ratio": medians[name] / medians["optcore adamw"],
        "page_faults_per_step": float(np.median(r.faults)),
        "peak_bytes": getattr(r, "peak_bytes", None),
        "peak_ratio": r.peak_bytes / adamw.peak_bytes if getattr(r, "peak_bytes", None) and adamw.peak_bytes else None,
        **checks.get(name, {}),
    } for name, r in runners.items()]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16_000_000)
    parser.add_argument("--leaves", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    build_and_register()
    side = int(np.sqrt(args.size))
    trees = {"one array": {"w": jax.random.normal(jax.random.PRNGKey(0), (args.size // side, side))},
             f"{args.leaves} leaves": transformer_like_tree(args.size, args.leaves)}
    results = []
    for tree_name, params in trees.items():
        results += measure(tree_name, params, args.repeats)
    print("| tree | row | step ms | time x | page faults / step | codes equal to adamw_8bit's |")
    print("|---|---|---|---|---|---|")
    for r in results:
        agreement = f"{r['codes_equal']:.4%}" if "codes_equal" in r else ""
        print(f"| {r['tree']} | {r['row']} | {1e3 * r['step_s']:.1f} | {r['time_ratio']:.2f} "
              f"| {r['page_faults_per_step']:.0f} | {agreement} |")
    if args.json:
        environment = {"jax": jax.__version__, "cpu": platform.processor() or platform.machine(),
                       "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
        Path(args.json).write_text(json.dumps({**environment, "size": args.size, "leaves": args.leaves,
                                               "repeats": args.repeats, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
