"""Builds small plugin distributions that importlib.metadata really discovers.

Each fixture is a module plus a ``<name>-<version>.dist-info`` folder holding
``METADATA`` and ``entry_points.txt``, written into a temporary directory.
Tests put that directory on ``PYTHONPATH`` of a subprocess, so the fixtures are
found through the ``optcore`` entry-point group exactly as installed packages
are, and never leak into the test process or other tox environments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional


def write_plugin(
    root: Path,
    distribution: str,
    module_source: str,
    *,
    version: str = "1.0.0",
    entry_point: Optional[str] = None,
    requires: tuple[str, ...] = ("optcore>=0.1,<0.2",),
) -> None:
    """Writes the module ``<dist_underscored>`` and its dist-info under ``root``."""
    module = distribution.replace("-", "_")
    (root / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{module}-{version}.dist-info"
    info.mkdir()
    metadata = [f"Metadata-Version: 2.1", f"Name: {distribution}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(metadata) + "\n")
    (info / "entry_points.txt").write_text(f"[optcore]\n{entry_point or module} = {module}\n")


def run_python(code: str, path: Optional[Path] = None, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter with ``path`` first on PYTHONPATH."""
    full_env = dict(os.environ)
    full_env.pop("OPTCORE_DISABLE_PLUGIN_AUTOLOAD", None)
    if path is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env, timeout=300
    )


def run_json(code: str, path: Optional[Path] = None, env: Optional[dict] = None):
    """Runs ``code``, which must print one JSON document last; returns (data, stderr)."""
    result = run_python(code, path, env)
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr
