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
plugins are loaded. ``--quick`` runs scenario 1 only.
"""

from __future__ import annotations

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


def run(command: str, cwd: Path, env_bin: Path | None = None) -> str:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if env_bin is not None:
        env["PATH"] = f"{env_bin}{os.pathsep}{env['PATH']}"
        env["VIRTUAL_ENV"] = str(env_bin.parent)
    print(f"$ {command}", flush=True)
    result = subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"FAILED ({result.returncode}): {command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def fresh_venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    return where / ("Scripts" if os.name == "nt" else "bin")


def loaded_distributions(env_bin: Path, cwd: Path) -> dict[str, str]:
    report = json.loads(run("optcore list --json", cwd, env_bin))
    statuses = {row["distribution"]: row["status"] for row in report["plugins"]}
    broken = {d: s for d, s in statuses.items() if s != "loaded"}
    if broken:
        raise SystemExit(f"plugins not loaded: {broken}")
    return statuses


def expect(env_bin: Path, cwd: Path, wanted: set[str]) -> None:
    got = set(loaded_distributions(env_bin, cwd))
    if got != wanted:
        raise SystemExit(f"expected plugins {sorted(wanted)}, got {sorted(got)}")
    print(f"  ok: {sorted(got)}", flush=True)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    everything = {"optcore", *PLUGINS}
    with tempfile.TemporaryDirectory(prefix="optcore-dist-") as tmp:
        tmp = Path(tmp)
        # A clean copy of the tracked files, so in-tree build artefacts never leak in.
        checkout = tmp / "checkout"
        run(f"mkdir -p {checkout} && git -C {shlex.quote(str(ROOT))} ls-files -z | "
            f"(cd {shlex.quote(str(ROOT))} && xargs -0 cp --parents -t {shlex.quote(str(checkout))})", ROOT)

        wheelhouse = tmp / "wheelhouse"
        sources = " ".join(["."] + [f"./plugins/{p}" for p in PLUGINS])
        run(f"{shlex.quote(sys.executable)} -m pip wheel --no-deps -w {wheelhouse} {sources}", checkout)
        print("  wheels:", ", ".join(sorted(p.name for p in wheelhouse.iterdir())), flush=True)

        env_bin = fresh_venv(tmp / "venv-wheelhouse")
        run(INSTALL_FROM_WHEELHOUSE.format(wheelhouse=shlex.quote(str(wheelhouse))), tmp, env_bin)
        expect(env_bin, tmp, everything)
        if quick:
            return 0

        env_bin = fresh_venv(tmp / "venv-readme")
        run(INSTALL_ALL, checkout, env_bin)
        expect(env_bin, tmp, everything)
        run("optcore demo --steps 30", tmp, env_bin)

        env_bin = fresh_venv(tmp / "venv-core")
        run(INSTALL_CORE, checkout, env_bin)
        expect(env_bin, tmp, {"optcore"})
        hint = run(
            "python -c \"import optcore\ntry:\n    optcore.l2_loss\nexcept AttributeError as e:\n    print(e)\"",
            tmp,
            env_bin,
        )
        if 'pip install "optcore[losses]"' not in hint:
            raise SystemExit(f"no install hint for a plugin name in the core-only venv: {hint!r}")
        # `optcore install NAME` finds the providing distribution and passes pip's options through.
        run(OPTCORE_INSTALL_FROM_WHEELHOUSE.format(wheelhouse=shlex.quote(str(wheelhouse))), tmp, env_bin)
        expect(env_bin, tmp, {"optcore", "optcore-contrib"})
        run("python -c \"import optcore; assert optcore.get('optcore-contrib:muon') is optcore.contrib.muon\"",
            tmp, env_bin)

        env_bin = fresh_venv(tmp / "venv-losses")
        run(INSTALL_CORE_AND_LOSSES, checkout, env_bin)
        expect(env_bin, tmp, {"optcore", "optcore-losses"})
    print("dist: every install command works", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
