"""Sphinx extension: a gallery of every schedule, drawn from the code at build time.

The ``schedule-gallery`` directive writes one section per schedule factory of
:mod:`optcore.schedules`: the call that was drawn and its picture. The PNGs are
drawn with :func:`optcore.plot.plot_schedules` into ``<html output>/_gallery/``
when the HTML build finishes, so no image is stored in the repository and the
pictures cannot drift from the code. A schedule factory without an entry in
``GALLERY`` below is a warning (an error under ``-W``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

STEPS = 100

# name -> the call drawn, evaluated with `optcore` in scope. Representative values, over STEPS steps.
GALLERY = {
    "constant_schedule": "optcore.constant_schedule(0.5)",
    "linear_schedule": "optcore.linear_schedule(init_value=1.0, end_value=0.1, transition_steps=80, transition_begin=10)",
    "polynomial_schedule": (
        "optcore.polynomial_schedule(init_value=1.0, end_value=0.1, power=2, transition_steps=80, transition_begin=10)"
    ),
    "exponential_decay": (
        "optcore.exponential_decay(init_value=1.0, transition_steps=20, decay_rate=0.5, transition_begin=10)"
    ),
    "cosine_decay_schedule": "optcore.cosine_decay_schedule(init_value=1.0, decay_steps=80, alpha=0.1)",
    "piecewise_constant_schedule": (
        "optcore.piecewise_constant_schedule(init_value=1.0, boundaries_and_scales={30: 0.5, 60: 0.2})"
    ),
    "piecewise_interpolate_schedule": (
        "optcore.piecewise_interpolate_schedule('cosine', init_value=1.0, boundaries_and_scales={20: 2.0, 60: 0.1})"
    ),
    "linear_onecycle_schedule": "optcore.linear_onecycle_schedule(transition_steps=100, peak_value=1.0)",
    "cosine_onecycle_schedule": "optcore.cosine_onecycle_schedule(transition_steps=100, peak_value=1.0)",
    "join_schedules": (
        "optcore.join_schedules([optcore.linear_schedule(0.0, 1.0, 20), optcore.cosine_decay_schedule(1.0, 80)], "
        "boundaries=[20])"
    ),
    "warmup_constant_schedule": "optcore.warmup_constant_schedule(init_value=0.0, peak_value=1.0, warmup_steps=20)",
    "warmup_cosine_decay_schedule": (
        "optcore.warmup_cosine_decay_schedule(init_value=0.0, peak_value=1.0, warmup_steps=20, decay_steps=100, "
        "end_value=0.05)"
    ),
    "warmup_exponential_decay_schedule": (
        "optcore.warmup_exponential_decay_schedule(init_value=0.0, peak_value=1.0, warmup_steps=20, "
        "transition_steps=20, decay_rate=0.5)"
    ),
    "sgdr_schedule": (
        "optcore.sgdr_schedule([dict(init_value=0.0, peak_value=1.0, warmup_steps=5, decay_steps=30, end_value=0.05),"
        " dict(init_value=0.0, peak_value=0.6, warmup_steps=5, decay_steps=30, end_value=0.05),"
        " dict(init_value=0.0, peak_value=0.3, warmup_steps=5, decay_steps=40, end_value=0.05)])"
    ),
}

# Functions of optcore.schedules that are not step -> value factories.
NOT_SCHEDULES = {"inject_hyperparams", "inject_stateful_hyperparams"}


def schedule_factories() -> list[str]:
    """The names of every step -> value factory that :mod:`optcore.schedules` exports."""
    import optcore.schedules

    return sorted(
        name
        for name in optcore.schedules.__all__
        if name not in NOT_SCHEDULES and inspect.isfunction(getattr(optcore.schedules, name))
    )


def build_schedule(name: str) -> Any:
    import optcore

    return eval(GALLERY[name], {"optcore": optcore})  # noqa: S307  (our own constant strings)


class ScheduleGallery(SphinxDirective):
    """``.. schedule-gallery::``: one section per schedule, with its picture."""

    def run(self) -> list[nodes.Node]:
        lines: list[str] = []
        for name in schedule_factories():
            if name not in GALLERY:
                logger.warning(
                    "schedule %s has no entry in the gallery (docs/_ext/schedule_gallery.py GALLERY)",
                    name,
                    location=self.get_location(),
                )
                continue
            lines += [
                name,
                "-" * len(name),
                "",
                f":func:`optcore.{name}`, steps 0 to {STEPS - 1}:",
                "",
                ".. code-block:: python",
                "",
                f"   {GALLERY[name]}",
                "",
                ".. raw:: html",
                "",
                f'   <img src="_gallery/{name}.png" alt="{name}" style="max-width: 100%;">',
                "",
            ]
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source="schedule-gallery"), container)
        return container.children


def draw_gallery(app: Sphinx, exception: Exception | None) -> None:
    """Draws every gallery schedule into the HTML output (after a successful build)."""
    if exception is not None or app.builder.format != "html":
        return
    from optcore.plot import plot_schedules

    outdir = Path(app.outdir) / "_gallery"
    outdir.mkdir(parents=True, exist_ok=True)
    for name in schedule_factories():
        if name in GALLERY:
            plot_schedules({name: build_schedule(name)}, STEPS, str(outdir / f"{name}.png"))
    logger.info("schedule_gallery: drew %d schedules into %s", len(GALLERY), outdir)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("schedule-gallery", ScheduleGallery)
    app.connect("build-finished", draw_gallery)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
