"""Sphinx configuration of the optcore documentation.

Build with ``tox -e docs`` (warnings are errors), or by hand in an environment
holding optcore, its plugins, Sphinx, MyST, furo and matplotlib::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Two local extensions (``docs/_ext``) keep the site honest: ``api_coverage``
fails the build when a public name of a package has no rendered entry, and
``schedule_gallery`` draws every schedule from the code at build time.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

import optcore  # noqa: E402  (after the path tweak, so a broken install fails here, loudly)

project = "optcore"
author = "the optcore authors"
copyright = "the optcore authors; Apache-2.0"
release = optcore.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax from _static: equations render without network access
    "sphinx.ext.viewcode",
    "myst_parser",
    "api_coverage",
    "schedule_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Docstrings are Google style, with ``.. math::`` blocks and doctest examples.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autosummary_generate = False
python_maximum_signature_line_length = 100
# Signatures name the aliases of optcore.base instead of expanding them into long unions.
_BASE_ALIASES = ("ArrayTree", "MaskOrFn", "OptState", "Params", "PRNGKey", "ScalarOrSchedule", "Schedule",
                 "ScheduleState", "Updates")
autodoc_type_aliases = {
    **{name: f"optcore.{name}" for name in _BASE_ALIASES},
    **{f"base.{name}": f"optcore.{name}" for name in _BASE_ALIASES},
    **{f"optcore.base.{name}": f"optcore.{name}" for name in _BASE_ALIASES},
    **{f"optcore.{name}": f"optcore.{name}" for name in _BASE_ALIASES},
}
add_module_names = True

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"optcore {release}"
html_static_path: list[str] = []

# The packages whose every public name must have a rendered entry (api_coverage).
# Modules without ``__all__`` list the public functions they define.
api_coverage_packages = [
    "optcore",
    "optcore.base",
    "optcore.numerics",
    "optcore.validate",
    "optcore.kit",
    "optcore.updates",
    "optcore.linalg",
    "optcore.tree",
    "optcore.tree_utils",
    "optcore.transforms",
    "optcore.wrappers",
    "optcore.schedules",
    "optcore.optimizers",
    "optcore.projections",
    "optcore.microbatching",
    "optcore.plugins",
    "optcore.hookspecs",
    "optcore_losses",
    "optcore_losses.assignment",
    "optcore_stochastic",
    "optcore_stochastic.control_variates",
    "optcore_stochastic.perturbations",
    "optcore_stochastic.stochastic_gradient_estimators",
    "optcore_stochastic.utils",
    "optcore_second_order",
    "optcore_contrib",
    "optcore_lowbit",
    "optcore_plugin_example",
]

# `sphinx-build -b doctest` runs the {testcode} blocks of the guides (examples written without prompts);
# the `>>>` examples of the guides and of the docstrings run under pytest (see tox.ini, env `docs`).
doctest_test_doctest_blocks = ""
