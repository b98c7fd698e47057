"""The plugin host as a pluggy host: hook order, wrappers, tracing, commands, switches, names.

Behaviour that depends on packaging runs in a subprocess that sees fixture
plugins installed as real distributions (see tests/plugin_fixtures).
"""

from __future__ import annotations

import contextlib
import fnmatch
import inspect
import io
import json
import sys
import threading

import numpy as np
import pytest

import optcore
from optcore import plugins
from optcore.cli import main, pip_install_command
from optcore.plugins import _versions
from plugin_fixtures import run_json, run_python, write_plugin

LOG = "calls = []\n"

ORDERED = """
    import optcore
    import optcore_fixture_log as log

    def {name}_sgd(learning_rate):
        return optcore.sgd(learning_rate)

    @optcore.hookimpl({marker})
    def optcore_register(register):
        log.calls.append("{name}")
        register("{name}_sgd", {name}_sgd, kind="optimizer")
"""

WRAPPER = """
    import optcore
    import optcore_fixture_log as log

    @optcore.hookimpl(wrapper=True)
    def optcore_register(register):
        log.calls.append("wrap:before")
        try:
            return (yield)
        except Exception as err:
            log.calls.append(f"wrap:saw {type(err).__name__}")
            raise
        finally:
            log.calls.append("wrap:after")
"""

BROKEN_HOOK = """
    import optcore
    import optcore_fixture_log as log

    @optcore.hookimpl(trylast=True)
    def optcore_register(register):
        log.calls.append("broken")
        register("broken_half", lambda: None, kind="optimizer")
        raise RuntimeError("hook exploded")
"""

COMMANDS = """
    import optcore

    def twice(args):
        print(2 * args.value)
        return 0

    @optcore.hookimpl
    def optcore_add_commands(subparsers):
        parser = subparsers.add_parser("fixture-twice")
        parser.add_argument("value", type=float)
        parser.set_defaults(func=twice)
"""

BROKEN_COMMANDS = """
    import optcore

    @optcore.hookimpl
    def optcore_add_commands(subparsers):
        raise RuntimeError("no commands today")
"""

COLLIDE = """
    import optcore

    def shared_name(learning_rate):
        return optcore.sgd(learning_rate)

    @optcore.hookimpl
    def optcore_register(register):
        register("shared_name", shared_name, kind="optimizer")
"""

ALIASED = """
    import optcore

    def long_descriptive_sgd(learning_rate, momentum=0.0):
        \"\"\"Plain SGD under a long name.

        More text.
        \"\"\"
        return optcore.sgd(learning_rate, momentum=momentum)

    @optcore.hookimpl
    def optcore_register(register):
        register("long_descriptive_sgd", long_descriptive_sgd, kind="optimizer", aliases=("ld_sgd", "lsgd"))
"""

MARKER_ONLY = """
    import optcore

    @optcore.hookimpl
    def optcore_register(register):
        register("marker_sgd", optcore.sgd, kind="optimizer")
"""


@pytest.fixture(scope="module")
def fixture_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("host_plugins")
    (root / "optcore_fixture_log.py").write_text(LOG)
    write_plugin(root, "optcore-fixture-first", ORDERED.format(name="first", marker="tryfirst=True"))
    write_plugin(root, "optcore-fixture-plain", ORDERED.format(name="plain", marker=""))
    write_plugin(root, "optcore-fixture-last", ORDERED.format(name="last", marker="trylast=True"))
    write_plugin(root, "optcore-fixture-wrapper", WRAPPER)
    write_plugin(root, "optcore-fixture-broken", BROKEN_HOOK)
    write_plugin(root, "optcore-fixture-commands", COMMANDS)
    write_plugin(root, "optcore-fixture-broken-commands", BROKEN_COMMANDS)
    write_plugin(root, "optcore-fixture-collide-a", COLLIDE, version="1.0.0")
    write_plugin(root, "optcore-fixture-collide-b", COLLIDE, version="2.0.0")
    write_plugin(root, "optcore-fixture-aliased", ALIASED, version="0.4.0")
    # A requirement behind an extra is not a hard requirement: this plugin loads.
    write_plugin(root, "optcore-fixture-marker", MARKER_ONLY, requires=('optcore>=9.0; extra == "future"',))
    # A pre-release of the core does not satisfy a range without pre-releases, nor 0.1.0 one above it.
    write_plugin(root, "optcore-fixture-pre", MARKER_ONLY.replace("marker_", "pre_"), requires=("optcore>=0.1.1rc1",))
    return root


# -- hooks through pluggy --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook_calls(fixture_path):
    code = """
        import json, warnings
        import optcore
        from optcore import plugins
        import optcore_fixture_log as log
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            statuses = {p.name: p.status for p in plugins.list_plugins()}
        out = {"calls": log.calls, "statuses": statuses, "warnings": [str(w.message) for w in caught]}
        for name in ("first_sgd", "plain_sgd", "last_sgd", "broken_half", "marker_sgd", "pre_sgd"):
            try:
                out[name] = optcore.get(name).__name__
            except LookupError as err:
                out[name] = type(err).__name__
        print(json.dumps(out))
    """
    data, stderr = run_json(code, fixture_path, env={"OPTCORE_TRACE_PLUGINS": "1"})
    data["stderr"] = stderr
    return data


def test_hooks_run_in_pluggy_order_with_tryfirst_and_trylast(hook_calls):
    order = [c for c in hook_calls["calls"] if not c.startswith("wrap:")]
    assert order == ["first", "plain", "broken", "last"]  # tryfirst leads; trylast (both) come after the plain one


def test_a_hook_wrapper_runs_around_every_plugins_call(hook_calls):
    calls = hook_calls["calls"]
    for name in ("first", "plain", "last"):
        i = calls.index(name)
        assert calls[i - 1] == "wrap:before" and calls[i + 1] == "wrap:after"
    i = calls.index("broken")
    assert calls[i - 1: i + 3] == ["wrap:before", "broken", "wrap:saw RuntimeError", "wrap:after"]
    assert hook_calls["statuses"]["optcore_fixture_wrapper"] == "loaded"


def test_a_raising_hook_still_leaves_nothing_and_the_others_load(hook_calls):
    assert hook_calls["statuses"]["optcore_fixture_broken"] == "broken"
    assert hook_calls["broken_half"] == "UnknownNameError"
    assert [hook_calls[n] for n in ("first_sgd", "plain_sgd", "last_sgd")] == ["first_sgd", "plain_sgd", "last_sgd"]


def test_tracing_shows_every_hook_call(hook_calls):
    stderr = hook_calls["stderr"]
    assert stderr.count("optcore_register [hook]") >= 6
    for plugin in ("optcore", "optcore_fixture_first", "optcore_fixture_broken"):
        assert f"optcore_register for plugin {plugin!r} [optcore]" in stderr


def test_requirement_behind_an_extra_is_ignored_and_prereleases_need_asking(hook_calls):
    assert hook_calls["statuses"]["optcore_fixture_marker"] == "loaded" and hook_calls["marker_sgd"] == "sgd"
    assert hook_calls["statuses"]["optcore_fixture_pre"] == "skipped" and hook_calls["pre_sgd"] == "UnknownNameError"


def test_version_ranges_follow_pep_440():
    assert _versions.version_satisfies("0.2.0", ">=0.2")
    assert not _versions.version_satisfies("0.2.0rc1", ">=0.2")
    assert not _versions.version_satisfies("0.2.0.dev3", ">=0.2")
    assert _versions.version_satisfies("0.2.0rc1", ">=0.2.0rc1")
    assert _versions.version_satisfies("0.1.5", "~=0.1.0") and not _versions.version_satisfies("0.2.0", "~=0.1.0")
    assert _versions.version_satisfies("0.1.7", "==0.1.*") and not _versions.version_satisfies("0.1.7", "!=0.1.*")
    assert _versions.version_satisfies("0.1.0.post1", ">=0.1.0")
    assert not _versions.version_satisfies("0.1.0.post1", ">0.1.0")  # PEP 440: >V excludes V's post-releases
    with pytest.raises(ValueError, match="version range"):
        _versions.version_satisfies("0.1.0", ">=>0.1")
    requires = ["jax>=0.4", 'optcore>=2; extra == "x"', "optcore (>=0.1,<0.2)"]
    assert _versions.core_requirement(requires) in ("<0.2,>=0.1", ">=0.1,<0.2")
    assert _versions.core_requirement(["jax"]) is None


def test_optcore_list_trace_writes_the_hook_calls(fixture_path):
    result = run_python("from optcore.cli import main; raise SystemExit(main(['list', '--trace', '--json']))",
                        fixture_path)
    assert result.returncode == 0, result.stderr
    assert "optcore_register for plugin 'optcore_fixture_plain' [optcore]" in result.stderr
    assert "optcore_register [hook]" in result.stderr
    assert json.loads(result.stdout)["plugins"]  # the report itself is unchanged


# -- commands --------------------------------------------------------------------------------------


def test_plugins_add_commands_and_a_failing_one_is_reported(fixture_path):
    result = run_python("from optcore.cli import main; raise SystemExit(main(['fixture-twice', '2.5']))",
                        fixture_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "5.0"
    assert "'optcore_fixture_broken_commands' could not add its commands: RuntimeError: no commands today" \
        in result.stderr


# -- switches --------------------------------------------------------------------------------------


def test_disable_plugins_by_listed_or_distribution_name(fixture_path):
    code = """
        import json, warnings
        import optcore
        from optcore import plugins
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            statuses = {p.name: p._asdict() for p in plugins.list_plugins()}
        out = {"statuses": statuses, "warnings": [str(w.message) for w in caught],
               "imported": sorted(m for m in __import__("sys").modules if m.startswith("optcore_fixture_"))}
        for name in ("first_sgd", "plain_sgd", "adam"):
            try:
                out[name] = optcore.get(name).__name__
            except LookupError as err:
                out[name] = type(err).__name__
                out[name + "_error"] = [str(err), list(getattr(err, "disabled_plugins", ()))]
        print(json.dumps(out))
    """
    data, _ = run_json(code, fixture_path,
                       env={"OPTCORE_DISABLE_PLUGINS": "optcore_fixture_first, optcore-fixture-plain,no_such_plugin"})
    for name in ("optcore_fixture_first", "optcore_fixture_plain"):
        assert data["statuses"][name]["status"] == "disabled"
        assert "OPTCORE_DISABLE_PLUGINS" in data["statuses"][name]["reason"]
        assert name not in data["imported"]
    assert data["statuses"]["optcore_fixture_last"]["status"] == "loaded"
    assert data["first_sgd"] == "UnknownNameError" and data["adam"] == "adam"
    # A third-party plugin's names are unknown while it is off (it is never imported): the error
    # says which plugins are off and how to turn each one on, instead of only "not registered".
    message, disabled = data["first_sgd_error"]
    assert sorted(disabled) == ["optcore_fixture_first", "optcore_fixture_plain"]
    assert "may be provided by a disabled plugin" in message
    assert "remove 'optcore_fixture_first' from OPTCORE_DISABLE_PLUGINS" in message
    assert any("no_such_plugin" in w and "OPTCORE_DISABLE_PLUGINS" in w for w in data["warnings"])

    data, _ = run_json(code, fixture_path, env={"OPTCORE_LOAD_PLUGINS": "optcore_fixture_plain"})
    loaded = sorted(n for n, s in data["statuses"].items() if s["status"] == "loaded")
    assert loaded == ["optcore", "optcore_fixture_plain"]
    assert data["plain_sgd"] == "plain_sgd" and data["first_sgd"] == "UnknownNameError"
    assert [m for m in data["imported"] if m != "optcore_fixture_log"] == ["optcore_fixture_plain"]


def test_names_of_a_disabled_first_party_plugin_say_how_to_enable_it(tmp_path):
    # A stand-in distribution named like the first-party one; disabled, so its module is never imported.
    write_plugin(tmp_path, "optcore-second-order", "raise ImportError('never imported')", version="0.1.0",
                 entry_point="second_order")
    code = """
        import json
        import optcore
        from optcore import plugins
        out = {}
        for name in ("hessian_diag", "second_order:hessian_diag", "optcore-second-order:hvp"):
            try:
                optcore.get(name)
            except plugins.PluginDisabledError as err:
                out[name] = [str(err), err.plugin, err.variable, isinstance(err, optcore.UnknownNameError)]
        try:
            import optcore.second_order
        except ModuleNotFoundError as err:
            out["import"] = str(err)
        out["status"] = {p.name: p.status for p in plugins.list_plugins()}["second_order"]
        print(json.dumps(out))
    """
    data, _ = run_json(code, tmp_path, env={"OPTCORE_DISABLE_PLUGINS": "second_order"})
    message, plugin, variable, is_unknown = data["hessian_diag"]
    assert (plugin, variable, is_unknown) == ("second_order", "OPTCORE_DISABLE_PLUGINS", True)
    assert "disabled" in message and "remove 'second_order' from OPTCORE_DISABLE_PLUGINS" in message
    assert data["second_order:hessian_diag"][1] == data["optcore-second-order:hvp"][1] == "second_order"
    assert "disabled" in data["import"]
    assert data["status"] == "disabled"


# -- qualified names and aliases -------------------------------------------------------------------


def test_qualified_names_resolve_a_collision_and_aliases_are_listed(fixture_path):
    code = """
        import contextlib, io, json
        import optcore
        from optcore.cli import main
        out = {}
        for name in ("optcore-fixture-collide-a:shared_name", "optcore_fixture_collide_b:shared_name",
                     "optcore:adam", "ld_sgd", "optcore-fixture-aliased:lsgd"):
            out[name] = optcore.get(name).__module__
        for name in ("shared_name", "optcore-fixture-collide-a:adam", "nowhere:adam", "optcore-contrib:muon"):
            try:
                optcore.get(name)
            except LookupError as err:
                out[name] = [type(err).__name__, str(err)]
        out["same_object"] = optcore.get("lsgd") is optcore.get("long_descriptive_sgd")
        out["rows"] = [r._asdict() for r in optcore.available("optimizer", "ld_*")]
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            main(["list"])
        out["list"] = text.getvalue()
        print(json.dumps(out))
    """
    data, _ = run_json(code, fixture_path)
    assert data["optcore-fixture-collide-a:shared_name"] == "optcore_fixture_collide_a"
    assert data["optcore_fixture_collide_b:shared_name"] == "optcore_fixture_collide_b"
    assert data["optcore:adam"].startswith("optcore.")
    assert data["ld_sgd"] == data["optcore-fixture-aliased:lsgd"] == "optcore_fixture_aliased"
    kind, message = data["shared_name"]
    assert kind == "NameCollisionError"
    assert "'optcore-fixture-collide-a:shared_name'" in message and "'optcore-fixture-collide-b:shared_name'" in message
    assert data["optcore-fixture-collide-a:adam"][0] == "UnknownNameError"
    assert data["nowhere:adam"][0] == "UnknownNameError" and "'nowhere'" in data["nowhere:adam"][1]
    assert data["same_object"] is True
    assert [(r["name"], r["aliases"]) for r in data["rows"]] == [("long_descriptive_sgd", ["ld_sgd", "lsgd"])]
    assert "aliases: ld_sgd -> long_descriptive_sgd, lsgd -> long_descriptive_sgd" in data["list"]


# -- in-process: info, list filters, install, scoping, threads -------------------------------------


def _capture(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def test_info_prints_the_metadata_of_a_name():
    code, text = _capture(["info", "adamw", "--json"])
    info = json.loads(text)
    assert code == 0
    assert info["signature"] == f"adamw{inspect.signature(optcore.adamw)}"
    assert info["description"] == inspect.getdoc(optcore.adamw).splitlines()[0]
    assert info["source_file"] == inspect.getsourcefile(inspect.unwrap(optcore.adamw))  # not the recording wrapper's
    assert info["source_file"].endswith("_adaptive.py")
    assert (info["kind"], info["plugin"], info["distribution"], info["version"]) == (
        "optimizer", "optcore", "optcore", optcore.__version__)
    assert info["qualified_name"] == "optcore:adamw"
    code, text = _capture(["info", "adamw"])
    assert text.splitlines()[0] == f"adamw: {info['description']}"
    assert f"signature:      {info['signature']}" in text and "distribution:   optcore " in text
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["info", "adamww"]) == 1
    assert "Did you mean 'adamw'" in stderr.getvalue()


def test_list_filters_by_kind_and_glob():
    want = sorted(r.name for r in optcore.available("optimizer") if fnmatch.fnmatchcase(r.name, "adam*"))
    assert len(want) >= 3
    code, text = _capture(["list", "--kind", "optimizer", "adam*"])
    assert code == 0 and [line.split()[0] for line in text.splitlines()] == want
    code, text = _capture(["list", "--kind", "schedule", "--json"])
    entries = json.loads(text)["entries"]
    assert {e["kind"] for e in entries} == {"schedule"}
    assert sorted(e["name"] for e in entries) == sorted(r.name for r in optcore.available("schedule"))


def test_install_builds_the_pip_command_for_the_providing_distribution():
    command = pip_install_command(["muon", "hessian_diag", "contrib"], ["--no-index", "--find-links", "/wh"])
    assert command == [sys.executable, "-m", "pip", "install", "optcore-contrib", "optcore-second-order",
                       "--no-index", "--find-links", "/wh"]
    assert pip_install_command(["optcore_losses"])[4:] == ["optcore-losses"]
    assert pip_install_command(["all"])[4:] == [p.distribution for p in plugins.FIRST_PARTY]
    with pytest.raises(LookupError, match="No first-party plugin provides 'qhadam'"):
        pip_install_command(["qhadam"])
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["install", "no_such_name", "--no-index"]) == 2  # refused before pip runs
    assert "no_such_name" in stderr.getvalue()


def test_scoped_host_restores_the_registry():
    before = {r.name for r in optcore.available()}
    with plugins.scoped_host():
        @optcore.register(kind="optimizer", aliases=("scoped_alias",))
        def scoped_sgd(learning_rate):
            return optcore.sgd(learning_rate)

        class Inline:
            @staticmethod
            @optcore.hookimpl
            def optcore_register(register):
                register("inline_scoped_sgd", optcore.sgd, kind="optimizer")

        plugins.add_plugin(Inline, name="inline-scoped")
        assert optcore.get("scoped_alias") is scoped_sgd
        assert plugins.describe("scoped_alias").alias_of == "scoped_sgd"
        assert optcore.get("inline_scoped_sgd") is optcore.sgd
        assert "inline-scoped" in {p.name for p in plugins.list_plugins()}
    assert {r.name for r in optcore.available()} == before
    assert "inline-scoped" not in {p.name for p in plugins.list_plugins()}
    for name in ("scoped_sgd", "scoped_alias", "inline_scoped_sgd"):
        with pytest.raises(optcore.UnknownNameError):
            optcore.get(name)


def test_register_as_decorator_and_call_with_aliases():
    with plugins.scoped_host():
        optcore.register("another_name_for_sgd", optcore.sgd, kind="optimizer", aliases=("anfs",))
        assert optcore.get("anfs") is optcore.get("another_name_for_sgd") is optcore.sgd
        (row,) = optcore.available("optimizer", "anfs")
        assert row.aliases == ("anfs",)
        with pytest.raises(ValueError, match="alias"):
            optcore.register("bad_alias_entry", optcore.sgd, kind="optimizer", aliases=("not valid",))
        with pytest.raises(TypeError, match="tuple of names"):
            optcore.register("bad_alias_entry", optcore.sgd, kind="optimizer", aliases="one")


def test_add_plugin_and_reads_are_safe_across_threads():
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    errors: list[str] = []
    try:
        with plugins.scoped_host():
            plugins.available()  # load the core first

            def add(i):
                def hook(register):
                    for j in range(20):
                        register(f"threaded_{i}_{j}", optcore.sgd, kind="optimizer", aliases=(f"thr_{i}_{j}",))

                plugin = type(f"Threaded{i}", (), {"optcore_register": staticmethod(optcore.hookimpl(hook))})
                try:
                    plugins.add_plugin(plugin, name=f"threaded-{i}")
                except Exception as err:  # noqa: BLE001
                    errors.append(repr(err))

            def read():
                for _ in range(30):
                    try:
                        plugins.available("optimizer")
                        optcore.get("adam")
                        plugins.list_plugins()
                    except Exception as err:  # noqa: BLE001
                        errors.append(repr(err))

            threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
            threads += [threading.Thread(target=read) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            names = {r.name for r in plugins.available("optimizer", "threaded_*")}
            statuses = {p.name: p.status for p in plugins.list_plugins()}
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
    assert names == {f"threaded_{i}_{j}" for i in range(16) for j in range(20)}
    assert all(statuses[f"threaded-{i}"] == "loaded" for i in range(16))
    np.testing.assert_equal(len(names), 320)


def test_add_plugin_takes_an_unhashable_namespace():
    """The plugin guide's ``add_plugin(types.SimpleNamespace(optcore_register=...))``: pluggy keeps
    plugins in sets, and a SimpleNamespace is unhashable, so the host hands pluggy a stand-in."""
    import types

    @optcore.hookimpl
    def optcore_register(register):
        register("namespace_plugin_sgd", optcore.sgd, kind="optimizer")

    with plugins.scoped_host():
        plugins.add_plugin(types.SimpleNamespace(optcore_register=optcore_register), name="namespace-plugin")
        assert {p.name: p.status for p in plugins.list_plugins()}["namespace-plugin"] == "loaded"
        assert optcore.get("namespace_plugin_sgd") is optcore.sgd
