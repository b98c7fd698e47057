"""Which rounding of Adam's moments moves the study's final losses, and by how much: a diagnostic.

The quality study compares whole optimizers. This script takes them apart: it
trains one of the study's tasks with float32 ``adamw`` and with *simulated*
low-precision AdamW, whose float32 equations are ``optcore.adamw``'s but whose
first moment ``m``, second moment ``v`` or both are rounded after every step
through a chosen format, and reports the relative difference of each row's
seed-mean final losses to float32's, with the standard error of the per-seed
differences (every row sees the same initial parameters and batches per seed).
It answers two questions: which moment's rounding moves a result (the study
README's "one moment at a time" simulations), and what the 1% and 2% targets
mean, measured against bfloat16 moments, which few would call lossy.

Formats (leaves below the plugin's 4096-entry threshold stay float32, as in
``adamw_8bit``):

* ``bfloat16``: a cast to bfloat16 and back, rounding to nearest;
* ``8bit``: the plugin's block-wise 8-bit dynamic code (signed for ``m``,
  unsigned for ``v``), blocks of 256, round to nearest, through
  ``optcore_lowbit.quantize`` and ``optcore_lowbit.dequantize``;
* ``8bit-stochastic``: the same code, rounded stochastically;
* ``4bit-float``, ``4bit-linear`` (``v`` only): ``adamw_4bit``'s second moment,
  the 4-bit float code without zero (0.6's default) or the linear one (0.5's),
  rank-1 scaled where ``adamw_4bit`` does it and in blocks of 128 elsewhere,
  rounded to nearest; with ``-stochastic`` appended, stochastically.

A row is ``m=FORMAT``, ``v=FORMAT`` or both (``m=8bit,v=8bit``), ``none``
(the simulation without rounding: it must match float32 ``adamw``, which checks
the simulation), or the name of a registered optimizer (``adamw_8bit``).

    python plugins/optcore-lowbit/study/round_moments.py [--task digits] [--seeds 0-15]
        [--rows none adamw_8bit m=8bit,v=8bit v=8bit ...] [--quick]
    python plugins/optcore-lowbit/study/round_moments.py --drift 8bit 8bit-stochastic bfloat16
    python plugins/optcore-lowbit/study/round_moments.py --drift 4bit-linear 4bit-float-stochastic

Prints a Markdown table. A measurement, not a test: it asserts nothing.
With ``--drift`` it measures, instead of losses, where the stored second
moment ends relative to the float32 one that the same gradients give (only
``v`` rounded, a float32 copy carried beside it): the median entry's ratio.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the study's modules sit next to this script
    sys.path.insert(0, str(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import optcore  # noqa: E402
import optcore_lowbit  # noqa: E402
from optcore_lowbit import _common as lowbit_storage  # noqa: E402  (adamw_4bit's v: rank-1 scales or blocks)

import lowbit_tasks as tasks_mod  # noqa: E402
import lowbit_train as train  # noqa: E402

DEFAULT_ROWS = ("none", "adamw_8bit", "m=8bit,v=8bit-stochastic", "m=8bit,v=8bit", "m=8bit", "v=8bit",
                "v=8bit-stochastic", "m=bfloat16,v=bfloat16", "v=bfloat16")
FORMATS = ("bfloat16", "8bit", "8bit-stochastic", "4bit-float", "4bit-float-stochastic", "4bit-linear",
           "4bit-linear-stochastic")
SECOND_MOMENT_ONLY = tuple(f for f in FORMATS if f.startswith("4bit"))
FOUR_BITS = lowbit_storage.make_format(4, None, 0)  # adamw_4bit's blocks (128); the threshold is applied here
BLOCK_SIZE = optcore_lowbit.DEFAULT_BLOCK_SIZE[8]
# Distinct stochastic-rounding salts for the two moments of a leaf (as adamw_8bit's nu_rounding draws them).
SALTS = {"m": 0, "v": lowbit_storage.NONNEGATIVE_SALT}


def rounder(fmt: str, kind: str) -> Callable[[jax.Array, jax.Array, int], jax.Array]:
    """``(x, step count, salt) -> x`` rounded through ``fmt`` (a float32 array of ``x``'s shape)."""
    if fmt == "bfloat16":
        return lambda x, count, salt: x.astype(jnp.bfloat16).astype(x.dtype)
    stochastic = fmt.endswith("-stochastic")

    def through_code(x, count, salt):
        seed = optcore_lowbit.rounding_seed(count, salt) if stochastic else None
        if fmt in SECOND_MOMENT_ONLY:
            code = optcore_lowbit.FLOAT_NO_ZERO if fmt.startswith("4bit-float") else optcore_lowbit.LINEAR_NO_ZERO
            stored = lowbit_storage.quantize_stored(x, FOUR_BITS, code, rank1=True, seed=seed)
        else:
            stored = optcore_lowbit.quantize(x, kind, 8, BLOCK_SIZE, seed=seed)
        return optcore_lowbit.dequantize(stored).astype(x.dtype)

    return through_code


class SimulatedAdamState(NamedTuple):
    count: jax.Array
    mu: Any
    nu: Any
    float_nu: Any = None  # with ``shadow``: the second moment in float32 from the same gradients, never rounded


def simulated_scale_by_adam(formats: dict[str, str], threshold: int, shadow: bool = False) -> optcore.GradientTransformation:
    """Adam's rescaling in float32 (``optcore.adam``'s defaults), its stored moments rounded per ``formats``.

    ``formats`` maps ``"m"`` and/or ``"v"`` to a format; the update is computed
    from the new moments before they are rounded, as the low-bit optimizers do.
    With ``shadow``, the state also carries the second moment the same
    gradients give without rounding (``float_nu``), to measure the drift.
    """
    defaults = inspect.signature(optcore.scale_by_adam).parameters
    b1, b2, eps = (defaults[k].default for k in ("b1", "b2", "eps"))
    kinds = {"m": optcore_lowbit.SIGNED, "v": optcore_lowbit.UNSIGNED}
    rounders = {name: rounder(fmt, kinds[name]) for name, fmt in formats.items()}

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return SimulatedAdamState(jnp.zeros([], jnp.int32), zeros, zeros, zeros if shadow else None)

    def store(name, tree, count):
        if name not in rounders:
            return tree
        leaves, treedef = jax.tree.flatten(tree)
        return treedef.unflatten([rounders[name](x, count, SALTS[name] + i) if x.size >= threshold else x
                                  for i, x in enumerate(leaves)])

    def update(grads, state, params=None):
        del params
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)

        def second_moment(nus):
            return jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, nus, grads)

        nu = second_moment(state.nu)
        c1, c2 = 1 - b1 ** count.astype(jnp.float32), 1 - b2 ** count.astype(jnp.float32)
        updates = jax.tree.map(lambda m, v: (m / c1) / (jnp.sqrt(v / c2) + eps), mu, nu)
        float_nu = None if state.float_nu is None else second_moment(state.float_nu)
        return updates, SimulatedAdamState(count, store("m", mu, count), store("v", nu, count), float_nu)

    return optcore.GradientTransformation(init, update)


def parse_row(row: str) -> dict[str, str] | None:
    """``"m=8bit,v=bfloat16"`` -> ``{"m": "8bit", "v": "bfloat16"}``; ``"none"`` -> ``{}``; a name -> None."""
    if row == "none":
        return {}
    if "=" not in row:
        return None
    formats = dict(part.split("=", 1) for part in row.split(","))
    bad = [f"{k}={v}" for k, v in formats.items()
           if k not in SALTS or v not in FORMATS or (k == "m" and v in SECOND_MOMENT_ONLY)]
    if bad:
        raise ValueError(f"row {row!r}: expected m=FORMAT and/or v=FORMAT with FORMAT in {FORMATS} "
                         f"(the 4bit ones for v only), got {bad}")
    return formats


def _threshold() -> int:
    return int(inspect.signature(optcore_lowbit.adamw_8bit).parameters["min_quantized_size"].default)


def build(row: str, learning_rate: Any, weight_decay: float, shadow: bool = False) -> optcore.GradientTransformation:
    formats = parse_row(row)
    if formats is None:
        return optcore.get(row, learning_rate=learning_rate, weight_decay=weight_decay)
    return optcore.chain(simulated_scale_by_adam(formats, _threshold(), shadow), optcore.add_decayed_weights(weight_decay),
                         optcore.scale_by_learning_rate(learning_rate))


def drift(task_name: str, fmt: str, seeds: list[int], quick: bool = False) -> np.ndarray:
    """Per seed, after the last step: the median over the rounded second-moment entries of the stored ``v``
    relative to the float32 ``v`` of the same gradients, as a percentage (negative: stored lower).

    Only ``v`` is rounded (through ``fmt``), so the two see one trajectory; entries whose float ``v`` is 0
    (never a gradient) are left out.
    """
    task = tasks_mod.TASKS[task_name](quick)
    schedule, _ = train.learning_rate_schedule(task.learning_rate, task.steps)
    runner = train.Runner(task, build(f"v={fmt}", schedule, train.adamw_default_weight_decay(), shadow=True))
    threshold, out = _threshold(), []
    for seed in seeds:
        *_, (_, state, _) = runner.chunks(task.build(seed))  # the state after the last step
        adam = jax.device_get(state[0])
        stored, exact = zip(*[(v, f) for v, f in zip(jax.tree.leaves(adam.nu), jax.tree.leaves(adam.float_nu))
                              if v.size >= threshold])
        stored, exact = np.concatenate([v.ravel() for v in stored]), np.concatenate([f.ravel() for f in exact])
        seen = exact > 0
        with np.errstate(divide="ignore"):  # a v stored as 0 is a ratio of 0: log -inf, below the median
            out.append(100 * np.expm1(np.median(np.log(stored[seen] / exact[seen]))))
    return np.array(out)


def final_losses(task, row: str, problems: dict, weight_decay: float) -> np.ndarray:
    """``(seeds, 2)``: each seed's final training and held-out loss."""
    schedule, _ = train.learning_rate_schedule(task.learning_rate, task.steps)
    runner = train.Runner(task, build(row, schedule, weight_decay))
    runs = [runner.run(problem) for problem in problems.values()]
    return np.array([[r["final_train_loss"], r["final_heldout_loss"]] for r in runs])


def compare(rows: list[str], task_name: str, seeds: list[int], quick: bool = False) -> list[dict]:
    """Per row: the relative differences (%) of the seed-mean final losses to float32 adamw's, with s.e."""
    task = tasks_mod.TASKS[task_name](quick)
    weight_decay = train.adamw_default_weight_decay()
    problems = {seed: task.build(seed) for seed in seeds}
    reference = final_losses(task, "adamw", problems, weight_decay)
    out = []
    for row in rows:
        losses = final_losses(task, row, problems, weight_decay)
        per_seed = 100 * (losses / reference - 1)
        se = per_seed.std(axis=0, ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else np.full(2, np.nan)
        out.append({
            "row": row,
            "delta": 100 * (losses.mean(axis=0) / reference.mean(axis=0) - 1),
            "se": se,
            "lower_train": int((losses[:, 0] < reference[:, 0]).sum()),
            "seeds": len(seeds),
            "losses": losses,
            "reference": reference,
        })
    return out


def table(results: list[dict]) -> str:
    lines = ["| row | Δ training loss | Δ held-out loss | seeds with lower training loss |", "|---|---|---|---|"]
    for r in results:
        (dt, dh), (st, sh) = r["delta"], r["se"]
        lines.append(f"| `{r['row']}` | {dt:+.2f}% ± {st:.2f} | {dh:+.2f}% ± {sh:.2f} "
                     f"| {r['lower_train']} of {r['seeds']} |")
    return "\n".join(lines)


def _seeds(text: str) -> list[int]:
    if "-" in text and "," not in text:
        first, last = (int(x) for x in text.split("-"))
        return list(range(first, last + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits", choices=sorted(tasks_mod.TASKS))
    parser.add_argument("--seeds", type=_seeds, default=list(range(16)), help="e.g. 0-15 or 0,1,2 (default 0-15)")
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--quick", action="store_true", help="the study's --quick sizes (checks the script runs)")
    parser.add_argument("--drift", nargs="+", choices=FORMATS, metavar="FORMAT",
                        help="instead of the losses: how far the stored second moment drifts from float32's "
                             f"when rounded through each FORMAT ({', '.join(FORMATS)})")
    args = parser.parse_args(argv)
    if args.drift:
        print(f"{args.task}: the second moment stored (only it rounded) against float32's from the same gradients, "
              f"after the last step: median over entries, mean over seeds {args.seeds} ± s.e.\n")
        print("| v rounded through | stored v against float32 v |\n|---|---|")
        for fmt in args.drift:
            per_seed = drift(args.task, fmt, args.seeds, args.quick)
            se = per_seed.std(ddof=1) / np.sqrt(per_seed.size) if per_seed.size > 1 else np.nan
            print(f"| `{fmt}` | {per_seed.mean():+.1f}% ± {se:.1f} |")
        return None
    for row in args.rows:
        parse_row(row)  # a malformed row fails before any training
    results = compare(args.rows, args.task, args.seeds, args.quick)
    print(f"{args.task}: relative difference of the mean final loss over seeds {args.seeds} to float32 adamw's "
          "(± the standard error of the per-seed differences)\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
