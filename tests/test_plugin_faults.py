"""Faulty plugins, discovered through real entry points in a subprocess, never break the host.

* A factory that raises only when its name is built: ``optcore.get(name, **kw)``
  (and ``optcore.from_config``) raises a ``PluginError`` naming the entry, the
  plugin and its distribution, with the original exception chained; a
  ``ValueError`` stays a ``ValueError``.
* A plugin that registers a non-callable is marked broken; the rest works.
* A plugin that takes ~1.5 s to import: every name still works (from several
  threads at once), and ``optcore list`` (text and ``--json``) reports each
  plugin's load time, so the slow one can be found.
* A plugin that looks names up while it is being imported gets the core's
  names, and neither it nor the core is marked broken.
"""

from __future__ import annotations

import pytest

from plugin_fixtures import run_json, write_plugin

LAZY_FAILURE = """
    import optcore

    def lazy_crash(learning_rate):
        raise RuntimeError("factory exploded on first build")

    def lazy_picky(learning_rate):
        if learning_rate > 1:
            raise ValueError(f"learning_rate too large for this plugin: {learning_rate}")
        return optcore.sgd(learning_rate)

    @optcore.hookimpl
    def optcore_register(register):
        register("lazy_crash", lazy_crash, kind="optimizer")
        register("lazy_picky", lazy_picky, kind="optimizer")
"""

NON_CALLABLE = """
    import optcore

    @optcore.hookimpl
    def optcore_register(register):
        register("fault_not_callable", "a string", kind="optimizer")
"""

SLOW_IMPORT = """
    import time
    import optcore

    time.sleep(1.5)  # a heavy import (a big framework, a compiled extension, ...)

    def slow_sgd(learning_rate):
        return optcore.sgd(learning_rate)

    @optcore.hookimpl
    def optcore_register(register):
        register("slow_sgd", slow_sgd, kind="optimizer")
"""

REENTRANT = """
    import optcore

    DEFAULT = optcore.get("adam", learning_rate=1e-3)  # a lookup while plugins are being loaded

    def reentrant_adam(learning_rate=1e-3):
        return DEFAULT

    @optcore.hookimpl
    def optcore_register(register):
        register("reentrant_adam", reentrant_adam, kind="optimizer")
"""


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """Everything observable in one process that sees the faulty fixtures."""
    root = tmp_path_factory.mktemp("faulty_plugins")
    write_plugin(root, "optcore-fixture-lazy", LAZY_FAILURE, version="2.0.0")
    write_plugin(root, "optcore-fixture-not-callable", NON_CALLABLE)
    write_plugin(root, "optcore-fixture-slow", SLOW_IMPORT)
    write_plugin(root, "optcore-fixture-reentrant", REENTRANT)
    code = """
        import contextlib, io, json, threading, time, warnings
        import jax.numpy as jnp
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import optcore
            from optcore import plugins
            from optcore.cli import main

            # Several threads look names up while the slow plugin is still importing.
            results, errors = {}, []
            def lookup(name, **kw):
                try:
                    results[name] = type(optcore.get(name, **kw)).__name__
                except Exception as err:
                    errors.append(repr(err))
            threads = [threading.Thread(target=lookup, args=(n,), kwargs={"learning_rate": 0.1})
                       for n in ("adam", "slow_sgd", "sgd")]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            out = {"threads": results, "thread_errors": errors, "first_lookup_s": time.perf_counter() - started}

            out["factory_without_kwargs"] = optcore.get("lazy_crash").__name__
            for label, build in {
                "crash": lambda: optcore.get("lazy_crash", learning_rate=0.1),
                "picky": lambda: optcore.get("lazy_picky", learning_rate=5.0),
                "config": lambda: optcore.from_config({"name": "lazy_crash", "learning_rate": 0.1}),
                "core": lambda: optcore.get("adam", learning_rate=0.1, b1=2.0),
            }.items():
                try:
                    build()
                    out[label] = None
                except Exception as err:
                    out[label] = {
                        "type": type(err).__name__, "message": str(err),
                        "is_value_error": isinstance(err, ValueError),
                        "is_plugin_error": isinstance(err, plugins.PluginError),
                        "attributes": [getattr(err, a, None) for a in ("name", "plugin", "distribution")],
                        "cause": repr(err.__cause__),
                    }
            opt = optcore.get("lazy_picky", learning_rate=0.5)
            params = {"w": jnp.ones(2)}
            updates, _ = opt.update(params, opt.init(params))
            out["picky_step"] = updates["w"].tolist()
            out["reentrant"] = type(optcore.get("reentrant_adam")()).__name__
            try:
                optcore.get("fault_not_callable")
            except LookupError as err:
                out["not_callable_lookup"] = type(err).__name__
            out["statuses"] = {p.name: p._asdict() for p in plugins.list_plugins()}
            text, as_json = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(text):
                main(["list"])
            with contextlib.redirect_stdout(as_json):
                main(["list", "--json"])
            out["list_text"] = text.getvalue()
            out["list_json"] = json.loads(as_json.getvalue())
        out["warnings"] = [str(w.message) for w in caught]
        print(json.dumps(out))
    """
    data, _ = run_json(code, root)
    return data


def test_factory_failure_names_the_plugin_and_chains_the_cause(observed):
    assert observed["factory_without_kwargs"] == "lazy_crash"  # looking the name up builds nothing
    crash = observed["crash"]
    assert crash["type"] == "PluginError" and crash["is_plugin_error"]
    assert "'lazy_crash'" in crash["message"]
    assert "plugin 'optcore_fixture_lazy' (optcore-fixture-lazy 2.0.0)" in crash["message"]
    assert "RuntimeError: factory exploded on first build" in crash["message"]
    assert crash["attributes"] == ["lazy_crash", "optcore_fixture_lazy", "optcore-fixture-lazy"]
    assert crash["cause"] == "RuntimeError('factory exploded on first build')"
    assert observed["config"]["type"] == "PluginError" and observed["config"]["cause"] == crash["cause"]


def test_plugin_value_error_stays_a_value_error(observed):
    picky = observed["picky"]
    assert picky["type"] == "PluginValueError" and picky["is_value_error"] and picky["is_plugin_error"]
    assert "optcore-fixture-lazy 2.0.0" in picky["message"] and "learning_rate too large" in picky["message"]
    assert picky["cause"].startswith("ValueError(")
    assert observed["picky_step"] == [-0.5, -0.5]  # the same factory builds fine with good arguments


def test_core_errors_are_not_wrapped(observed):
    core = observed["core"]
    assert core["type"] == "ValueError" and not core["is_plugin_error"] and "b1" in core["message"]


def test_non_callable_registration_still_marks_the_plugin_broken(observed):
    status = observed["statuses"]["optcore_fixture_not_callable"]
    assert status["status"] == "broken" and "must be callable" in status["reason"]
    assert observed["not_callable_lookup"] == "UnknownNameError"


def test_slow_plugin_keeps_the_host_usable_and_its_load_time_is_listed(observed):
    assert observed["thread_errors"] == []
    assert observed["threads"] == {"adam": "GradientTransformationExtraArgs", "slow_sgd": "GradientTransformationExtraArgs",
                                   "sgd": "GradientTransformationExtraArgs"}
    assert observed["statuses"]["optcore_fixture_slow"]["status"] == "loaded"
    slow = observed["statuses"]["optcore_fixture_slow"]["load_seconds"]
    assert 1.4 <= slow <= observed["first_lookup_s"]
    assert observed["statuses"]["optcore"]["load_seconds"] < 1.0
    rows = {row["name"]: row for row in observed["list_json"]["plugins"]}
    assert rows["optcore_fixture_slow"]["load_seconds"] == slow
    line = next(line for line in observed["list_text"].splitlines() if line.startswith("optcore_fixture_slow"))
    assert f"loaded in {slow:.2f} s" in line


def test_lookup_during_a_plugin_import_breaks_nothing(observed):
    assert observed["reentrant"] == "GradientTransformationExtraArgs"
    assert observed["statuses"]["optcore"]["status"] == "loaded"
    assert observed["statuses"]["optcore_fixture_reentrant"]["status"] == "loaded"
    assert not [w for w in observed["warnings"] if "reentrant" in w or "'optcore'" in w]
