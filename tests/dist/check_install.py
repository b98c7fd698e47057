"""Checks the install commands of the README in fresh virtual environments.

Run by ``tox -e dist``:

1. builds the wheel of every distribution into a wheelhouse and installs
   ``optcore[all]`` BY NAME from it (``pip install --find-links WHEELHOUSE
   "optcore[all]"``), as users will once the packages are published;
2. runs the README's one-line install from a source checkout;
3. the selective installs: the core alone, and the core with optcore-losses;
4. ``optcore install`` in the core-only venv: ``optcore install muon --no-index
   --find-links WHEELHOUSE`` must install optcore-contrib (the distribution the
   catalog says provides ``muon``) from the wheelhouse, offline.

Each scenario then runs ``optcore list --json`` in its venv and checks which
plugins are loaded. ``--quick`` runs scenario 1 only. The scenarios run in two
chains side by side, each from its own copy of the tracked files.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ("optcore-losses", "optcore-stochastic", "optcore-second-order", "optcore-contrib", "optcore-lowbit")

# The commands of the README, run from the root of a checkout. tests/integration checks the README
# still shows exactly these.
INSTALL_ALL = 'pip install "./[all]" ' + " ".join(f"./plugins/{p}" for p in PLUGINS)
INSTALL_CORE = "pip install ."
INSTALL_CORE_AND_LOSSES = 'pip install "./[losses]" ./plugins/optcore-losses'
INSTALL_FROM_WHEELHOUSE = 'pip install --find-links {wheelhouse} "optcore[all]"'
OPTCORE_INSTALL_FROM_WHEELHOUSE = "optcore install muon --no-index --find-links {wheelhouse}"


class Scenario:
    """One install scenario: its commands run in order, its output kept and printed in one piece at the end, so
    that scenarios running side by side do not interleave their lines."""

    def __init__(self, name: str):
        self.name = name
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        self.lines.append(line)

    def run(self, command: str, cwd: Path, env_bin: Path | None = None) -> str:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if env_bin is not None:
            env["PATH"] = f"{env_bin}{os.pathsep}{env['PATH']}"
            env["VIRTUAL_ENV"] = str(env_bin.parent)
        self.say(f"$ {command}")
        result = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"[{self.name}] FAILED ({result.returncode}): {command}\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result.stdout

    def loaded_distributions(self, env_bin: Path, cwd: Path) -> dict[str, str]:
        report = json.loads(self.run("optcore list --json", cwd, env_bin))
        statuses = {row["distribution"]: row["status"] for row in report["plugins"]}
        broken = {d: s for d, s in statuses.items() if s != "loaded"}
        if broken:
            raise SystemExit(f"[{self.name}] plugins not loaded: {broken}")
        return statuses

    def expect(self, env_bin: Path, cwd: Path, wanted: set[str]) -> None:
        got = set(self.loaded_distributions(env_bin, cwd))
        if got != wanted:
            raise SystemExit(f"[{self.name}] expected plugins {sorted(wanted)}, got {sorted(got)}")
        self.say(f"  ok: {sorted(got)}")


def fresh_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    return where / ("Scripts" if os.name == "nt" else "bin")


def clean_copy(scenario: Scenario, where: Path) -> Path:
    """A copy of the tracked files: in-tree build artefacts never leak in, and setuptools' in-tree builds of
    scenarios running side by side never share a ``build/`` folder."""
    scenario.run(f"mkdir -p {where} && git -C {shlex.quote(str(ROOT))} ls-files -z | "
                 f"(cd {shlex.quote(str(ROOT))} && xargs -0 cp --parents -t {shlex.quote(str(where))})", ROOT)
    return where


EVERYTHING = {"optcore", *PLUGINS}


def from_wheelhouse(tmp: Path, quick: bool) -> list[Scenario]:
    """Scenario 1, then (unless ``quick``) the core alone (3) and ``optcore install`` in it (4), which installs
    from the same wheelhouse."""
    wheels = Scenario("wheelhouse")
    checkout = clean_copy(wheels, tmp / "checkout-wheels")
    wheelhouse = tmp / "wheelhouse"
    sources = " ".join(["."] + [f"./plugins/{p}" for p in PLUGINS])
    wheels.run(f"{shlex.quote(sys.executable)} -m pip wheel --no-deps -w {wheelhouse} {sources}", checkout)
    wheels.say("  wheels: " + ", ".join(sorted(p.name for p in wheelhouse.iterdir())))
    env_bin = fresh_venv(tmp / "venv-wheelhouse")
    wheels.run(INSTALL_FROM_WHEELHOUSE.format(wheelhouse=shlex.quote(str(wheelhouse))), tmp, env_bin)
    wheels.expect(env_bin, tmp, EVERYTHING)
    if quick:
        return [wheels]

    core = Scenario("core alone, then optcore install")
    checkout = clean_copy(core, tmp / "checkout-core")
    env_bin = fresh_venv(tmp / "venv-core")
    core.run(INSTALL_CORE, checkout, env_bin)
    core.expect(env_bin, tmp, {"optcore"})
    hint = core.run(
        "python -c \"import optcore\ntry:\n    optcore.l2_loss\nexcept AttributeError as e:\n    print(e)\"",
        tmp,
        env_bin,
    )
    if 'pip install "optcore[losses]"' not in hint:
        raise SystemExit(f"no install hint for a plugin name in the core-only venv: {hint!r}")
    # `optcore install NAME` finds the providing distribution and passes pip's options through.
    core.run(OPTCORE_INSTALL_FROM_WHEELHOUSE.format(wheelhouse=shlex.quote(str(wheelhouse))), tmp, env_bin)
    core.expect(env_bin, tmp, {"optcore", "optcore-contrib"})
    core.run("python -c \"import optcore; assert optcore.get('optcore-contrib:muon') is optcore.contrib.muon\"",
             tmp, env_bin)
    return [wheels, core]


def from_source(tmp: Path) -> list[Scenario]:
    """Scenario 2, the README's install from a checkout, and the core with optcore-losses (3)."""
    readme = Scenario("README install")
    checkout = clean_copy(readme, tmp / "checkout-readme")
    env_bin = fresh_venv(tmp / "venv-readme")
    readme.run(INSTALL_ALL, checkout, env_bin)
    readme.expect(env_bin, tmp, EVERYTHING)
    readme.run("optcore demo --steps 30", tmp, env_bin)

    losses = Scenario("core and losses")
    checkout = clean_copy(losses, tmp / "checkout-losses")
    env_bin = fresh_venv(tmp / "venv-losses")
    losses.run(INSTALL_CORE_AND_LOSSES, checkout, env_bin)
    losses.expect(env_bin, tmp, {"optcore", "optcore-losses"})
    return [readme, losses]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    with tempfile.TemporaryDirectory(prefix="optcore-dist-") as tmp:
        tmp = Path(tmp)
        # Two chains side by side: most of an install is single-threaded (unpacking, byte-compiling), and
        # in sequence the four scenarios took 130 s of the CI run.
        chains = [functools.partial(from_wheelhouse, tmp, quick)] + ([] if quick else [functools.partial(from_source, tmp)])
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(chains)) as pool:
            futures = [pool.submit(chain) for chain in chains]
            for future in futures:
                for scenario in future.result():  # re-raises a failed scenario's SystemExit here
                    print(f"[{scenario.name}]", *scenario.lines, sep="\n", flush=True)
    print("dist: every install command works", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
