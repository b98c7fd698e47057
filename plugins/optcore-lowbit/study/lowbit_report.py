"""Summaries, Markdown tables and loss-curve plots of the quality study."""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np

REFERENCE = "adamw"
PLOT_HINT = 'the loss-curve plots need matplotlib: pip install "optcore[plot]"'


def tolerance(name: str) -> Optional[float]:
    """The issue's target for an optimizer name: 1% for 8-bit states, 2% for 4-bit, none otherwise."""
    if re.search(r"(^|_)8bit($|_)", name):
        return 0.01
    if re.search(r"(^|_)4bit($|_)", name):
        return 0.02
    return None


def reference_for(name: str, names: list[str]) -> Optional[str]:
    """What ``name`` is compared with: its float32 twin when it was run (``lion_8bit`` -> ``lion``), else adamw."""
    twin = re.sub(r"_(8|4)bit$", "", name)
    if twin != name and twin in names:
        return twin
    return REFERENCE if REFERENCE in names else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarize(task_result: dict) -> dict:
    """Per optimizer: mean and std over seeds, relative differences to its reference, verdicts."""
    optimizers = task_result["optimizers"]
    summary: dict[str, Any] = {}
    for name, entry in optimizers.items():
        runs = entry["runs"]
        train_mean, train_std = _mean_std([r["final_train_loss"] for r in runs])
        held_mean, held_std = _mean_std([r["final_heldout_loss"] for r in runs])
        summary[name] = {
            "seeds": [r["seed"] for r in runs],
            "final_train_loss_mean": train_mean,
            "final_train_loss_std": train_std,
            "final_heldout_loss_mean": held_mean,
            "final_heldout_loss_std": held_std,
            "initial_train_loss_mean": float(np.mean([r["train_loss"][0] for r in runs])),
            "all_finite": all(r["finite"] for r in runs),
            "state_bytes": entry["state_bytes"]["total"],
            "seconds_per_run": float(np.mean([r["seconds"] for r in runs])),
        }
    for name, s in summary.items():
        tol = tolerance(name)
        s["tolerance"] = tol
        ref_name = reference_for(name, list(summary))
        s["reference"] = ref_name
        if ref_name is None:
            s["rel_diff_train"] = s["rel_diff_heldout"] = s["state_bytes_ratio"] = None
            s["verdict"] = "no adamw reference in this run"
            continue
        ref = summary[ref_name]
        s["rel_diff_train"] = s["final_train_loss_mean"] / ref["final_train_loss_mean"] - 1.0
        s["rel_diff_heldout"] = s["final_heldout_loss_mean"] / ref["final_heldout_loss_mean"] - 1.0
        s["state_bytes_ratio"] = s["state_bytes"] / ref["state_bytes"] if ref["state_bytes"] else None
        # Paired by seed (same initial parameters, same batches): shows whether a
        # difference is systematic or within the seed-to-seed noise.
        ref_runs = {r["seed"]: r for r in optimizers[ref_name]["runs"]}
        for key in ("train", "heldout"):
            s[f"rel_diff_{key}_per_seed"] = [
                r[f"final_{key}_loss"] / ref_runs[r["seed"]][f"final_{key}_loss"] - 1.0
                for r in optimizers[name]["runs"] if r["seed"] in ref_runs
            ]
        if name == REFERENCE:
            s["verdict"] = "reference"
        elif tol is None:
            s["verdict"] = "no target"
        elif ref_name != re.sub(r"_(8|4)bit$", "", name):
            # The target compares a low-bit optimizer with its own float32 twin only.
            s["verdict"] = f"no verdict: its float32 twin `{re.sub(r'_(8|4)bit$', '', name)}` was not run"
        elif not s["all_finite"]:
            s["verdict"] = "FAIL (non-finite loss)"
        else:
            ok_train = abs(s["rel_diff_train"]) <= tol
            ok_held = abs(s["rel_diff_heldout"]) <= tol
            if ok_train and ok_held:
                s["verdict"] = "pass"
            else:
                missed = [w for w, ok in (("train", ok_train), ("held-out", ok_held)) if not ok]
                s["verdict"] = "FAIL (" + ", ".join(missed) + ")"
    return summary


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:+.2f}%"


def _loss(s: dict, key: str) -> str:
    mean, std = s[f"final_{key}_loss_mean"], s[f"final_{key}_loss_std"]
    return f"{mean:.4f}" if len(s["seeds"]) == 1 else f"{mean:.4f} ± {std:.4f}"


def _bytes(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB"


def _per_seed(s: dict, key: str) -> str:
    """The paired Δs of one loss, then their mean and its standard error (the seed-to-seed noise of Δ)."""
    values = s[f"rel_diff_{key}_per_seed"]
    text = ", ".join(_pct(v) for v in values)
    if len(values) < 2:
        return text
    mean, std = _mean_std(values)
    return f"{text} (mean {_pct(mean)} ± {100 * std / np.sqrt(len(values)):.2f}% s.e.)"


def markdown(results: dict) -> str:
    """The tables of ``results.md``: one per task, then the state-size table."""
    meta = results["meta"]
    lines = [
        "# optcore-lowbit quality study",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Seeds: {', '.join(map(str, meta['seeds']))}; Python {meta['python']}, JAX {meta['jax']}, "
        f"optcore {meta['optcore']}; {meta['platform']}; {'quick run' if meta['quick'] else 'full run'}; "
        + ("providers: " + ", ".join(f"`{n}` {v}" for n, v in meta["providers"].items()) + "; "
           if meta.get("providers") else "") +
        f"{meta['seconds']:.0f} s in all.",
        "",
        "Losses are the final cross-entropy over a fixed training evaluation set and over the held-out set, "
        "mean ± sample std over the seeds. Δ is the relative difference of the mean to the reference's: "
        "float32 `adamw`, or the optimizer's float32 twin when it was run (`lion` for `lion_8bit`); negative: "
        "lower loss. Target: |Δ| ≤ 1% for 8-bit states, ≤ 2% for 4-bit states, on both losses.",
        "",
    ]
    for task_name, task in results["tasks"].items():
        summary = task["summary"]
        lines += [f"## {task_name}: {task['title']}", "",
                  f"{task['steps']} steps, learning rate {task['schedule']}, weight decay "
                  f"{results['meta']['weight_decay']:g} where the optimizer takes one; "
                  f"{task['params']['parameters']:,} parameters in {task['params']['leaves']} leaves, "
                  f"{100 * task['params']['fraction_in_large_leaves']:.1f}% of them in leaves of at least "
                  f"{task['params']['threshold']} elements.", ""]
        if task.get("plot"):
            lines += [f"![{task_name} loss curves]({task['plot']})", ""]
        lines += ["| optimizer | final train loss | Δ train | held-out loss | Δ held-out | Δ against | target | result |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, s in summary.items():
            target = "—" if s["tolerance"] is None else f"±{100 * s['tolerance']:g}%"
            against = "—" if s["reference"] in (None, name) else f"`{s['reference']}`"
            lines.append(
                f"| `{name}` | {_loss(s, 'train')} | {_pct(s['rel_diff_train'])} | {_loss(s, 'heldout')} | "
                f"{_pct(s['rel_diff_heldout'])} | {against} | {target} | {s['verdict']} |")
        paired = [(n, s) for n, s in summary.items()
                  if s.get("reference") not in (None, n) and s.get("rel_diff_train_per_seed")]
        if paired and len(results["meta"]["seeds"]) > 1:
            lines += ["", "Δ per seed (each run against its reference on the same seed: same start, same batches), "
                      "and the standard error of their mean: a |Δ| within about two standard errors of 0 is not "
                      "distinguishable from seed-to-seed noise at this number of seeds:", ""]
            for name, s in paired:
                lines.append(f"- `{name}`: train {_per_seed(s, 'train')}; held-out {_per_seed(s, 'heldout')}")
        lines.append("")
    lines += ["## Optimizer state size", "",
              "Bytes of every leaf of the optimizer state after `init` (`nbytes` over `jax.tree_util.tree_leaves`), "
              "split by dtype; the ratio is to the reference's state (as above) on the same parameters. Integer-dtype "
              "bytes are the quantized codes; float32 bytes are block scales, the leaves below the threshold "
              "and the step count.", "",
              "| task | optimizer | parameters with quantized state | state bytes | ratio to reference | by dtype |",
              "|---|---|---|---|---|---|"]
    for task_name, task in results["tasks"].items():
        for name, entry in task["optimizers"].items():
            sb = entry["state_bytes"]
            ratio = task["summary"][name]["state_bytes_ratio"]
            split = ", ".join(f"{k}: {_bytes(v)}" for k, v in sb["by_dtype"].items())
            fraction = entry.get("quantized_fraction")
            quantized = "none (float state)" if fraction is None else (
                f"{100 * fraction:.1f}% (leaves ≥ {entry['min_quantized_size']} entries)")
            lines.append(f"| {task_name} | `{name}` | {quantized} | {_bytes(sb['total'])} | "
                         f"{'—' if ratio is None else f'{ratio:.3f}'} | {split} |")
    if meta.get("plot_note"):
        lines += ["", meta["plot_note"]]
    return "\n".join(lines) + "\n"


def plot_task(task_name: str, task: dict, path: str) -> None:
    """Training and held-out loss against the step: mean over seeds, band from min to max."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    from matplotlib import ticker  # pylint: disable=import-outside-toplevel

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for name, entry in task["optimizers"].items():
        runs = entry["runs"]
        steps = np.asarray(runs[0]["eval_steps"])
        for ax, key in zip(axes, ("train_loss", "heldout_loss")):
            curves = np.asarray([r[key] for r in runs])
            line, = ax.plot(steps, curves.mean(axis=0), label=name, lw=1.5)
            if len(runs) > 1:
                ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.2)
    for ax, label in zip(axes, ("training loss", "held-out loss")):
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_yscale("log")
        # Plain numbers at 1, 2, 3, 5 per decade: readable whether the axis spans one decade or three.
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    figure.suptitle(f"{task_name}: {task['title']}", fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(figure)
