"""Quality study of optcore-lowbit: low-bit AdamW states against float32 AdamW.

The issue's target: the final training and held-out loss of ``adamw_8bit``
within 1% of float32 ``adamw``'s, ``adamw_4bit`` within 2%, averaged over 3
seeds, on three tasks (see ``lowbit_tasks.py``). Every optimizer is built by name
through the plugin registry, ``optcore.get(name, learning_rate=...,
weight_decay=...)``, with the task's fixed learning rate and float32 adamw's
default weight decay; for a given seed every optimizer starts from the same
parameters and sees the same batches.

    python plugins/optcore-lowbit/study/run_study.py [--quick] [--out DIR]
        [--optimizers adamw,adamw_8bit,adamw_4bit] [--tasks digits,charlm,logreg] [--seeds 0,1,2]

Writes ``results.json`` (every curve and number), ``results.md`` (the tables)
and ``<task>.png`` (loss curves; needs matplotlib, ``optcore[plot]``) into
``--out``. This is a measurement: it reports misses, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the study's modules sit next to this script
    sys.path.insert(0, str(HERE))

import jax  # noqa: E402

import optcore  # noqa: E402

# Distinct module names: the test imports this script into its own session.
import lowbit_report as report  # noqa: E402
import lowbit_tasks as tasks_mod  # noqa: E402
import lowbit_train as train  # noqa: E402

# The low-bit optimizers keep leaves below about this many elements in float32;
# the report gives the share of parameters at or above it.
QUANTIZATION_THRESHOLD = 4096


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a name is repeated in {text!r}")
    return names


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in _names(text)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"seeds must be integers, got {text!r}") from err
    return seeds


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", type=_names, default=["adamw", "adamw_8bit", "adamw_4bit"],
                        help="registered optimizer names, comma-separated; adamw is the reference "
                             "(default: adamw,adamw_8bit,adamw_4bit)")
    parser.add_argument("--tasks", type=_names, default=list(tasks_mod.TASKS),
                        help=f"tasks, comma-separated, from {', '.join(tasks_mod.TASKS)} (default: all)")
    parser.add_argument("--seeds", type=_seeds, default=None, help="seeds, comma-separated (default: 0,1,2; --quick: 0,1)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps: seconds, for the test")
    parser.add_argument("--out", default=str(HERE / "results"), help="output folder (default: study/results)")
    args = parser.parse_args(argv)
    unknown = [t for t in args.tasks if t not in tasks_mod.TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(tasks_mod.TASKS)}")
    if args.seeds is None:
        args.seeds = [0, 1] if args.quick else [0, 1, 2]
    return args


def _check_optimizers(names: list[str]) -> None:
    """Every name resolves before any training starts (a missing plugin gives its install hint)."""
    for name in names:
        try:
            optcore.get(name)
        except LookupError as err:
            raise SystemExit(f"error: --optimizers {name}: {err}") from None
    if report.REFERENCE not in names:
        print(f"note: {report.REFERENCE!r} is not among --optimizers: no relative differences.", file=sys.stderr)


def _providers(names: list[str]) -> dict:
    """Which distribution (and version) provides each optimizer name."""
    out = {}
    for name in names:
        info = optcore.plugins.describe(name)
        out[name] = f"{info.distribution or info.plugin} {info.version or ''}".strip()
    return out


def run_task(task, optimizers: list[str], seeds: list[int], weight_decay: float) -> dict:
    problems = {seed: task.build(seed) for seed in seeds}
    first = problems[seeds[0]]
    result = {
        "title": task.title,
        "steps": task.steps,
        "eval_every": task.eval_every,
        "learning_rate": task.learning_rate,
        "info": first.info,
        "params": train.param_summary(first.params, QUANTIZATION_THRESHOLD),
        "optimizers": {},
    }
    schedule, result["schedule"] = train.learning_rate_schedule(task.learning_rate, task.steps)
    for name in optimizers:
        optimizer, hyperparams = train.build_optimizer(name, schedule, weight_decay)
        runner = train.Runner(task, optimizer)
        runs = []
        for seed in seeds:
            run = runner.run(problems[seed])
            run["seed"] = seed
            runs.append(run)
            print(f"  {task.name:7s} {name:14s} seed {seed}: train {run['final_train_loss']:.4f}  "
                  f"held-out {run['final_heldout_loss']:.4f}  ({run['seconds']:.1f} s)", flush=True)
        threshold = train.min_quantized_size(name)
        result["optimizers"][name] = {
            "arguments": hyperparams,
            "state_bytes": train.state_bytes(optimizer.init(first.params)),
            # Share of the parameters whose state this optimizer quantizes (leaves of at
            # least its default min_quantized_size entries); None for float optimizers.
            "min_quantized_size": threshold,
            "quantized_fraction": None if threshold is None else
            train.param_summary(first.params, threshold)["fraction_in_large_leaves"],
            "runs": runs,
        }
    result["summary"] = report.summarize(result)
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    _check_optimizers(args.optimizers)
    if "digits" in args.tasks:
        tasks_mod.load_digits_arrays()  # fails now, clearly, when scikit-learn is missing
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weight_decay = train.adamw_default_weight_decay()
    start = time.perf_counter()
    results = {
        "meta": {
            "command": " ".join(["python plugins/optcore-lowbit/study/run_study.py",
                                 *(sys.argv[1:] if argv is None else list(argv))]),
            "optimizers": args.optimizers,
            "seeds": args.seeds,
            "quick": args.quick,
            "weight_decay": weight_decay,
            "python": platform.python_version(),
            "jax": jax.__version__,
            "optcore": optcore.__version__,
            "providers": _providers(args.optimizers),
            "platform": f"{platform.system()} {platform.machine()}, {jax.default_backend()}, "
                        f"{os.cpu_count()} CPUs visible",
        },
        "tasks": {},
    }
    for name in args.tasks:
        task = tasks_mod.TASKS[name](args.quick)
        print(f"{name}: {task.title}", flush=True)
        results["tasks"][name] = run_task(task, args.optimizers, args.seeds, weight_decay)
    results["meta"]["seconds"] = time.perf_counter() - start

    try:
        import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        have_matplotlib = True
    except ImportError:
        have_matplotlib = False
    for name, task in results["tasks"].items():
        if have_matplotlib:
            report.plot_task(name, task, str(out / f"{name}.png"))
            task["plot"] = f"{name}.png"
    if not have_matplotlib:
        results["meta"]["plot_note"] = f"No plots were written: {report.PLOT_HINT}."
        print(f"note: {report.PLOT_HINT}; wrote the tables only.", file=sys.stderr)

    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(report.markdown(results))
    print(f"wrote {out / 'results.md'} and {out / 'results.json'} ({results['meta']['seconds']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
