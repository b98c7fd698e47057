"""``optcore plot``: draw schedules to a PNG file.

matplotlib is an optional dependency (``pip install "optcore[plot]"``); only
:func:`plot_schedules` needs it, and the command reports clearly when it is
missing. Layer 5 (like the CLI): uses the registry to find schedules by name.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import sys
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

INSTALL_HINT = 'matplotlib is needed to plot schedules: pip install "optcore[plot]"'


class MissingPlotDependencyError(ImportError):
    """matplotlib is not installed."""


def schedule_values(schedule: Callable[[Any], Any], steps: int) -> np.ndarray:
    """The values of ``schedule`` at steps ``0 .. steps-1``, computed in one jitted call.

    Args:
      schedule: a step -> value function.
      steps: the number of steps, positive.
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}.")

    def value_at(count):
        # `0 * count` gives constant schedules (which return a Python number) the batch axis.
        return jnp.asarray(schedule(count), dtype=jnp.float32) + 0 * count

    counts = jnp.arange(steps, dtype=jnp.int32)
    return np.asarray(jax.jit(jax.vmap(value_at))(counts), dtype=np.float64)


def plot_schedules(
    schedules: Union[Mapping[str, Callable[[Any], Any]], Sequence[tuple[str, Callable[[Any], Any]]]],
    steps: int,
    output: str,
    *,
    title: Optional[str] = None,
    log_scale: bool = False,
) -> str:
    """Plots one or several schedules, overlaid, against the step and saves the figure.

    Args:
      schedules: ``{label: schedule}`` or a sequence of ``(label, schedule)``.
      steps: plot steps ``0 .. steps-1``.
      output: the image file to write (its extension picks the format, e.g. ``.png``).
      title: the figure title.
      log_scale: use a logarithmic value axis.

    Returns:
      ``output``.

    Raises:
      MissingPlotDependencyError: matplotlib is not installed.
    """
    items = list(schedules.items()) if isinstance(schedules, Mapping) else list(schedules)
    if not items:
        raise ValueError("plot_schedules needs at least one schedule.")
    curves = [(label, schedule_values(schedule, steps)) for label, schedule in items]
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise MissingPlotDependencyError(INSTALL_HINT) from err
    matplotlib.use("Agg")  # no display needed; we only write files
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    figure, axes = plt.subplots(figsize=(7, 4))
    for label, values in curves:
        axes.plot(np.arange(steps), values, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("value")
    if log_scale:
        axes.set_yscale("log")
    if title:
        axes.set_title(title)
    # Labels carry every argument and can be long: the legend goes under the plot.
    axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    axes.grid(alpha=0.3)
    figure.savefig(output, bbox_inches="tight", dpi=120)
    plt.close(figure)
    return output


def _parse_value(text: str) -> Any:
    """A Python literal (number, dict, list, ...) or else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_params(specs: Sequence[str], names: Sequence[str]) -> list[dict[str, Any]]:
    """Sorts ``--param`` specs into keyword arguments for each schedule.

    ``KEY=VALUE`` goes to every schedule that takes ``KEY``; ``NAME.KEY=VALUE``
    only to the schedule called ``NAME``; ``I.KEY=VALUE`` only to the ``I``-th
    schedule (from 0), so the same schedule can be drawn twice.

    Args:
      specs: the ``--param`` strings.
      names: the schedule names, in command-line order.
    """
    factories = [_resolve(name) for name in names]
    accepted = [set(inspect.signature(factory).parameters) for factory in factories]
    kwargs: list[dict[str, Any]] = [{} for _ in names]
    for spec in specs:
        key, sep, text = spec.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects KEY=VALUE, got {spec!r}.")
        value = _parse_value(text)
        target, dot, field = key.rpartition(".")
        if dot:
            indices = [int(target)] if target.isdigit() else [i for i, n in enumerate(names) if n == target]
            if not indices or any(i >= len(names) for i in indices):
                raise ValueError(f"--param {spec!r} names no schedule on the command line.")
        else:
            field = key
            indices = [i for i in range(len(names)) if field in accepted[i]]
        takers = [i for i in indices if field in accepted[i]]
        if not takers:
            raise ValueError(f"--param {spec!r}: no schedule given takes an argument {field!r}.")
        for i in takers:
            kwargs[i][field] = value
    return kwargs


def _resolve(name: str) -> Callable[..., Any]:
    from optcore import plugins  # pylint: disable=import-outside-toplevel

    factory = plugins.get(name)
    if not callable(factory):
        raise ValueError(f"{name!r} is not a schedule factory.")
    return factory


def _label(name: str, kwargs: Mapping[str, Any]) -> str:
    return name + "(" + ", ".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


def _cmd_plot(args: argparse.Namespace) -> int:
    try:
        all_kwargs = parse_params(args.param or [], args.schedules)
        schedules = [
            (_label(name, kwargs), _resolve(name)(**kwargs)) for name, kwargs in zip(args.schedules, all_kwargs)
        ]
        output = plot_schedules(schedules, args.steps, args.output, title=args.title, log_scale=args.log)
    except MissingPlotDependencyError as err:
        print(f"optcore plot: {err}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, LookupError) as err:
        print(f"optcore plot: {err}", file=sys.stderr)
        return 2
    print(f"wrote {output}")
    return 0


def add_plot_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds the ``plot`` subcommand to an argparse ``subparsers`` object.

    ``optcore plot warmup_cosine_decay_schedule --steps 1000 --param init_value=0
    --param peak_value=1e-3 --param warmup_steps=100 --param decay_steps=1000 -o lr.png``
    """
    parser = subparsers.add_parser(
        "plot",
        help="plot one or several schedules to an image file (needs optcore[plot])",
        description="Plot schedules, overlaid, against the step. --param KEY=VALUE goes to every "
        "schedule that takes KEY; NAME.KEY=VALUE or INDEX.KEY=VALUE to one schedule. Values are "
        "Python literals (1e-3, {100: 0.1}, [...]).",
    )
    parser.add_argument("schedules", nargs="+", metavar="SCHEDULE", help="schedule names, e.g. cosine_decay_schedule")
    parser.add_argument("--steps", type=int, required=True, help="number of steps to plot")
    parser.add_argument("--param", action="append", metavar="[NAME.]KEY=VALUE", help="a schedule argument")
    parser.add_argument("-o", "--output", default="schedule.png", help="image file to write (default schedule.png)")
    parser.add_argument("--title", default=None)
    parser.add_argument("--log", action="store_true", help="logarithmic value axis")
    parser.set_defaults(func=_cmd_plot)
    return parser
