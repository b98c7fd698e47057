"""With everything installed: every plugin loads, the catalog is exact, names resolve every way."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import optcore
from optcore import plugins

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "dist"))
import check_install  # noqa: E402


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


FIRST_PARTY = [p for p in plugins.FIRST_PARTY]


def test_every_first_party_plugin_and_the_example_are_loaded():
    statuses = {p.distribution: p.status for p in plugins.list_plugins()}
    for plugin in FIRST_PARTY:
        assert statuses.get(plugin.distribution) == "loaded", statuses
    assert statuses.get("optcore-plugin-example") == "loaded"
    assert optcore.get("qhadam").__module__ == "optcore_plugin_example.qhadam"


@pytest.mark.parametrize("plugin", FIRST_PARTY, ids=lambda p: p.distribution)
def test_catalog_lists_exactly_what_the_plugin_registers(plugin):
    rows = [r for r in optcore.available() if r.distribution == plugin.distribution]
    registered = {r.name for r in rows if r.kind != "namespace"}
    namespaces = {r.name for r in rows if r.kind == "namespace"}
    assert registered == set(plugin.names)
    assert namespaces == set(plugin.namespaces)


@pytest.mark.parametrize("plugin", FIRST_PARTY, ids=lambda p: p.distribution)
def test_names_resolve_through_get_namespace_and_top_level(plugin):
    namespace = getattr(optcore, plugin.namespaces[0])
    for name in plugin.names:
        obj = optcore.get(name)
        if not hasattr(optcore.base, name) and name not in optcore.__all__:
            assert getattr(optcore, name) is obj
        if hasattr(namespace, name):
            assert getattr(namespace, name) is obj


def test_optcore_list_shows_every_plugin():
    result = subprocess.run([sys.executable, "-m", "optcore", "list", "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    loaded = {row["distribution"] for row in report["plugins"] if row["status"] == "loaded"}
    assert {p.distribution for p in FIRST_PARTY} | {"optcore", "optcore-plugin-example"} <= loaded
    assert report["collisions"] == {}


def test_plugin_versions_are_their_own():
    for plugin in FIRST_PARTY:
        version = importlib.metadata.version(plugin.distribution)
        requires = importlib.metadata.requires(plugin.distribution)
        assert re.match(r"\d+\.\d+\.\d+", version)
        assert any(r.replace(" ", "").startswith("optcore") and "<" in r for r in requires)


def test_readme_shows_the_commands_the_dist_check_runs():
    readme = (ROOT / "README.md").read_text()
    for command in (check_install.INSTALL_ALL, check_install.INSTALL_CORE_AND_LOSSES):
        assert command in readme, command
    assert 'pip install --find-links' in readme and '"optcore[all]"' in readme


def test_demo_uses_the_losses_plugin_and_the_loss_falls():
    result = subprocess.run([sys.executable, "-m", "optcore", "demo", "--steps", "60"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from optcore-losses" in result.stdout
    first, last = re.search(r"loss (\d+\.\d+) -> (\d+\.\d+)", result.stdout).groups()
    assert float(last) < 0.5 * float(first)


def test_plugin_namespaces_import_like_optax_subpackages():
    import optcore.losses
    import optcore_losses
    from optcore.contrib import muon
    from optcore.second_order import hessian_diag

    assert optcore.losses is optcore_losses
    assert optcore_losses.__spec__.name == "optcore_losses"
    assert muon is optcore.get("muon") and hessian_diag is optcore.get("hessian_diag")
    with pytest.raises(ModuleNotFoundError):
        import optcore.no_such_namespace  # noqa: F401


def test_first_party_plugins_are_imported_only_when_one_of_their_names_is_asked_for():
    code = (
        "import json, sys, optcore\n"
        "optcore.get('adam')\n"
        "after_core = sorted(m for m in sys.modules if m.startswith(('optcore_losses', 'optcore_contrib')))\n"
        "optcore.get('l2_loss')\n"
        "after_loss = sorted(m for m in sys.modules if m.split('.')[0] in ('optcore_losses', 'optcore_contrib'))\n"
        "optcore.available()\n"
        "after_all = 'optcore_contrib' in sys.modules\n"
        "print(json.dumps([after_core, sorted({m.split('.')[0] for m in after_loss}), after_all]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    after_core, after_loss, after_all = json.loads(result.stdout.strip().splitlines()[-1])
    assert after_core == []
    assert after_loss == ["optcore_losses"]
    assert after_all is True
