"""Runs Optax's own test suite against optcore: ``python tests/optax_suite/run.py [pytest args]``.

Optax ships its tests (``optax/**/*_test.py``) in its wheel. This script copies
them from the installed Optax (the oracle, ``pip install optax==0.2.8``) into a
temporary directory, rewrites every ``import optax...`` / ``from optax... import
x`` into a module from :mod:`_shim` that resolves each public name to optcore's
(Optax's test helpers and private functions stay Optax's), and runs pytest
there. Nothing of Optax is stored in this repository.

A failure is either a difference between optcore and Optax or a test that
checks Optax's internals or exact wording. The ones looked at are listed in
``known_differences.txt`` with the reason; the script exits 1 on any other
failure, and reports listed ones that now pass. It takes about 10 minutes on
two cores (``-n 2`` with pytest-xdist), so it is not part of ``tox``'s default
run: ``tox -e optax-suite`` runs it.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent

CONFTEST = '''
import os

_FAILED = []


def pytest_runtest_logreport(report):
    if report.failed:
        _FAILED.append(report.nodeid)


def pytest_collectreport(report):
    if report.failed:  # a test file that does not import (a missing dependency, a missing name)
        _FAILED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        with open(os.path.join(os.path.dirname(__file__), "failed.txt"), "w") as f:
            f.write("\\n".join(sorted(set(_FAILED))))
'''


def convert(source: pathlib.Path, out: pathlib.Path) -> int:
    """Copies Optax's tests with their optax imports going through the shim; returns how many."""
    count = 0
    for test in sorted(source.rglob("*_test.py")):
        lines = []
        for line in test.read_text().split("\n"):
            lines.append(_rewrite_import(line))
        text = "import _shim\n" + "\n".join(lines)
        # Optax 0.2.8 compares version strings ('0.10.2' < '0.7.2' is True), which skips its
        # explicit-sharding tests on every JAX from 0.10 on.
        text = text.replace("if jax.__version__ < '0.7.2':", "if False:")
        name = str(test.relative_to(source)).replace("/", "__").lstrip("_")
        (out / name).write_text(text)
        count += 1
    return count


def _rewrite_import(line: str) -> str:
    match = re.match(r"^from (optax[\w.]*) import (\w+)(?: as (\w+))?$", line)
    if match:
        package, name, alias = match.groups()
        return f"{alias or name} = _shim.module('{package}.{name}')"
    match = re.match(r"^import (optax[\w.]*) as (\w+)$", line)
    if match:
        return f"{match.group(2)} = _shim.module('{match.group(1)}')"
    if re.match(r"^import optax[\w.]*$", line):
        return "optax = _shim.module('optax')"
    return line


def known_differences() -> list[tuple[str, str]]:
    """(node id pattern, reason) from known_differences.txt."""
    out = []
    for line in (HERE / "known_differences.txt").read_text().split("\n"):
        if line.strip() and not line.startswith("#"):
            pattern, _, reason = line.partition("  # ")
            out.append((pattern.strip(), reason.strip()))
    return out


def main(argv: list[str]) -> int:
    spec = importlib.util.find_spec("optax")
    if spec is None:
        print("Optax is not installed: pip install optax==0.2.8 (the oracle).")
        return 2
    source = pathlib.Path(spec.submodule_search_locations[0])
    out = pathlib.Path(tempfile.mkdtemp(prefix="optax_suite_"))
    shutil.copy(HERE / "_shim.py", out / "_shim.py")
    (out / "conftest.py").write_text(CONFTEST)
    print(f"{convert(source, out)} test files of {source} in {out}")
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv], cwd=out)
    failed = [n for n in (out / "failed.txt").read_text().split("\n") if n]
    known = known_differences()
    unexpected = [n for n in failed if not any(fnmatch.fnmatch(n, p) for p, _ in known)]
    fixed = [p for p, _ in known if not any(fnmatch.fnmatch(n, p) for n in failed)]
    print(f"\n{len(failed)} failed, {len(failed) - len(unexpected)} of them known differences.")
    for node in unexpected:
        print(f"NEW FAILURE: {node}")
    for pattern in fixed:
        print(f"now passes (remove it from known_differences.txt if the whole suite ran): {pattern}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
