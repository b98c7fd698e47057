"""The plugin system end to end, with fixture plugins discovered through real entry points."""

from __future__ import annotations

import inspect
import json

import jax.numpy as jnp
import numpy as np
import pytest

import optcore
from plugin_fixtures import run_json, run_python, write_plugin

GOOD = """
    import jax
    import optcore

    def fixture_sgd(learning_rate):
        return optcore.chain(optcore.scale(-learning_rate))

    def fixture_loss(x, y):
        return (x - y) ** 2

    @optcore.hookimpl
    def optcore_register(register):
        register("fixture_sgd", fixture_sgd, kind="optimizer")
        register("fixture_loss", fixture_loss, kind="loss")
"""

BROKEN_IMPORT = """
    raise ImportError("this fixture cannot be imported")
"""

BROKEN_HOOK = """
    import optcore

    @optcore.hookimpl
    def optcore_register(register):
        register("half_registered", lambda: None, kind="optimizer")
        raise RuntimeError("hook exploded halfway")
"""

COLLIDE = """
    import optcore

    def shared_name(learning_rate):
        return optcore.sgd(learning_rate)

    @optcore.hookimpl
    def optcore_register(register):
        register("shared_name", shared_name, kind="optimizer")
"""

OVERRIDE = """
    import optcore

    def adam(learning_rate, **kwargs):
        return optcore.sgd(learning_rate)
    adam.is_override = True

    @optcore.hookimpl
    def optcore_register(register):
        register("adam", adam, kind="optimizer", override=True)
"""

NON_CALLABLE = """
    import optcore

    @optcore.hookimpl
    def optcore_register(register):
        register("not_a_function", 42, kind="optimizer")
"""


@pytest.fixture(scope="module")
def fixture_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    write_plugin(root, "optcore-fixture-good", GOOD, version="1.2.3")
    write_plugin(root, "optcore-fixture-broken-import", BROKEN_IMPORT)
    write_plugin(root, "optcore-fixture-broken-hook", BROKEN_HOOK)
    write_plugin(root, "optcore-fixture-collide-a", COLLIDE)
    write_plugin(root, "optcore-fixture-collide-b", COLLIDE)
    write_plugin(root, "optcore-fixture-override", OVERRIDE)
    write_plugin(root, "optcore-fixture-noncallable", NON_CALLABLE)
    write_plugin(root, "optcore-fixture-skewed", GOOD.replace("fixture_", "skewed_"), requires=("optcore>=9.0",))
    return root


@pytest.fixture(scope="module")
def loaded(fixture_path):
    """Everything observable after discovery in a process that sees the fixtures."""
    code = """
        import json, warnings
        import jax.numpy as jnp
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import optcore
            from optcore import plugins
            statuses = {p.name: p._asdict() for p in plugins.list_plugins()}
        out = {"statuses": statuses, "warnings": [str(w.message) for w in caught]}
        opt = optcore.get("fixture_sgd", learning_rate=0.5)
        params = {"w": jnp.ones(2)}
        updates, _ = opt.update({"w": jnp.ones(2)}, opt.init(params))
        out["fixture_step"] = optcore.apply_updates(params, updates)["w"].tolist()
        out["fixture_loss"] = float(optcore.get("fixture_loss")(3.0, 1.0))
        out["provider"] = [r._asdict() for r in optcore.available("optimizer") if r.name == "fixture_sgd"]
        for name in ("half_registered", "shared_name", "not_a_function", "skewed_sgd"):
            try:
                optcore.get(name)
                out[name] = "found"
            except LookupError as err:
                out[name] = [type(err).__name__, str(err)]
        out["adam_overridden"] = getattr(optcore.get("adam"), "is_override", False)
        out["adamw_works"] = type(optcore.get("adamw", learning_rate=1e-3)).__name__
        print(json.dumps(out))
    """
    data, _ = run_json(code, fixture_path)
    return data


def test_good_plugin_is_found_through_its_entry_point(loaded):
    assert loaded["statuses"]["optcore_fixture_good"]["status"] == "loaded"
    np.testing.assert_allclose(loaded["fixture_step"], [0.5, 0.5])
    assert loaded["fixture_loss"] == 4.0
    (row,) = loaded["provider"]
    assert (row["distribution"], row["version"]) == ("optcore-fixture-good", "1.2.3")


def test_plugin_that_fails_to_import_is_skipped_with_a_warning(loaded):
    status = loaded["statuses"]["optcore_fixture_broken_import"]
    assert status["status"] == "broken"
    assert "this fixture cannot be imported" in status["reason"]
    assert any("optcore_fixture_broken_import" in w and "broken" in w for w in loaded["warnings"])


def test_plugin_whose_hook_raises_leaves_nothing_registered(loaded):
    status = loaded["statuses"]["optcore_fixture_broken_hook"]
    assert status["status"] == "broken"
    assert "hook exploded halfway" in status["reason"]
    kind, message = loaded["half_registered"]
    assert kind == "UnknownNameError"


def test_colliding_names_raise_naming_both_providers(loaded):
    kind, message = loaded["shared_name"]
    assert kind == "NameCollisionError"
    assert "optcore-fixture-collide-a" in message and "optcore-fixture-collide-b" in message


def test_other_names_keep_working_and_override_is_explicit(loaded):
    assert loaded["adamw_works"] == "GradientTransformationExtraArgs"
    assert loaded["adam_overridden"] is True


def test_non_callable_registration_marks_the_plugin_broken(loaded):
    status = loaded["statuses"]["optcore_fixture_noncallable"]
    assert status["status"] == "broken"
    assert "must be callable" in status["reason"]
    assert loaded["not_a_function"][0] == "UnknownNameError"


def test_plugin_for_another_core_version_is_skipped(loaded):
    status = loaded["statuses"]["optcore_fixture_skewed"]
    assert status["status"] == "skipped"
    assert "requires optcore >=9.0" in status["reason"]
    assert loaded["skewed_sgd"][0] == "UnknownNameError"
    assert any("optcore_fixture_skewed" in w and "skipped" in w for w in loaded["warnings"])


def test_optcore_list_reports_every_plugin(fixture_path):
    result = run_python("from optcore.cli import main; raise SystemExit(main(['list', '--json']))", fixture_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {row["name"]: row for row in report["plugins"]}
    assert rows["optcore"]["status"] == "loaded"
    assert "adamw" in rows["optcore"]["provides"]["optimizer"]
    assert rows["optcore_fixture_good"]["provides"] == {"loss": ["fixture_loss"], "optimizer": ["fixture_sgd"]}
    assert rows["optcore_fixture_broken_import"]["status"] == "broken"
    assert rows["optcore_fixture_skewed"]["status"] == "skipped"
    assert "shared_name" in report["collisions"]

    text = run_python("from optcore.cli import main; raise SystemExit(main(['list']))", fixture_path)
    assert text.returncode == 0
    assert "optcore_fixture_broken_import" in text.stdout and "broken" in text.stdout
    assert "ambiguous name 'shared_name'" in text.stdout


def test_disable_autoload_loads_no_plugin_code(fixture_path):
    code = """
        import json, sys
        import optcore
        from optcore import plugins

        @optcore.register(kind="optimizer")
        def explicitly_registered(learning_rate):
            return optcore.sgd(learning_rate)

        out = {
            "plugins": [p.name for p in plugins.list_plugins()],
            "explicit": type(optcore.get("explicitly_registered", learning_rate=0.1)).__name__,
            "fixture_modules": sorted(m for m in sys.modules if m.startswith("optcore_fixture")),
        }
        try:
            optcore.get("fixture_sgd")
        except optcore.UnknownNameError:
            out["fixture_sgd"] = "unknown"
        print(json.dumps(out))
    """
    data, stderr = run_json(code, fixture_path, env={"OPTCORE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert data["plugins"] == ["optcore"]
    assert data["explicit"] == "GradientTransformationExtraArgs"
    assert data["fixture_modules"] == []
    assert data["fixture_sgd"] == "unknown"
    assert "broken" not in stderr


def test_import_does_not_scan_entry_points_and_first_lookup_scans_once():
    code = """
        import importlib.metadata, json
        calls = []
        original = importlib.metadata.entry_points
        def counting(*args, **kwargs):
            if kwargs.get("group") == "optcore":
                calls.append(1)
            return original(*args, **kwargs)
        importlib.metadata.entry_points = counting
        import optcore
        after_import = len(calls)
        optcore.get("adam")
        optcore.get("sgd", learning_rate=0.1)
        optcore.available()
        print(json.dumps({"after_import": after_import, "after_lookups": len(calls)}))
    """
    data, _ = run_json(code)
    assert data == {"after_import": 0, "after_lookups": 1}


def test_first_party_name_without_its_plugin_gives_the_install_command():
    code = """
        import json
        import optcore
        out = {}
        for expr in ("optcore.l2_loss", "optcore.losses", "optcore.second_order",
                     "optcore.get('hessian_diag')", "optcore.get('pathwise_jacobians')"):
            try:
                eval(expr)
                out[expr] = None
            except (AttributeError, LookupError) as err:
                out[expr] = [type(err).__name__, str(err)]
        try:
            import optcore.losses
        except ModuleNotFoundError as err:
            out["import optcore.losses"] = str(err)
        print(json.dumps(out))
    """
    data, _ = run_json(code, env={"OPTCORE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert 'pip install "optcore[losses]"' in data["import optcore.losses"]
    assert data["optcore.l2_loss"][0] == "AttributeError"
    assert 'pip install "optcore[losses]"' in data["optcore.l2_loss"][1]
    assert "optcore-losses" in data["optcore.losses"][1]
    assert "optcore-second-order" in data["optcore.second_order"][1]
    assert data["optcore.get('hessian_diag')"][0] == "PluginNotInstalledError"
    assert 'pip install "optcore[second-order]"' in data["optcore.get('hessian_diag')"][1]
    assert "optcore-stochastic" in data["optcore.get('pathwise_jacobians')"][1]


# -- in-process behaviour of lookup -----------------------------------------------------


def test_get_builds_with_hyperparameters():
    assert optcore.get("adamw") is optcore.adamw
    opt = optcore.get("adamw", learning_rate=1e-3)
    assert isinstance(opt, optcore.GradientTransformation)
    params = {"w": jnp.ones(3)}
    reference = optcore.adamw(1e-3)
    got, _ = opt.update(params, opt.init(params), params)
    want, _ = reference.update(params, reference.init(params), params)
    np.testing.assert_array_equal(got["w"], want["w"])


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(optcore.UnknownNameError, match="Did you mean 'adamw'"):
        optcore.get("adamww")
    with pytest.raises(AttributeError, match="Did you mean"):
        optcore.adamww  # noqa: B018


def test_unknown_keyword_names_the_keyword():
    with pytest.raises(TypeError, match="learnin_rate"):
        optcore.get("adam", learnin_rate=1e-3)


def test_available_lists_names_with_their_distribution():
    rows = {r.name: r for r in optcore.available()}
    assert rows["adamw"].kind == "optimizer"
    assert rows["adamw"].distribution == "optcore"
    assert rows["adamw"].version == optcore.__version__
    assert rows["chain"].kind == "wrapper"
    assert {r.kind for r in optcore.available("schedule")} == {"schedule"}
    with pytest.raises(ValueError, match="Unknown kind"):
        optcore.available("optimiser")


def test_register_as_decorator_and_call():
    with optcore.plugins.scoped_host():  # the names end with the block instead of leaking into other tests
        @optcore.register(kind="optimizer")
        def sgd_for_registration_test(learning_rate):
            return optcore.sgd(learning_rate)

        assert optcore.get("sgd_for_registration_test") is sgd_for_registration_test
        optcore.register("another_name_for_sgd", optcore.sgd, kind="optimizer")
        assert optcore.get("another_name_for_sgd") is optcore.sgd
        with pytest.raises(ValueError, match="Unknown kind"):
            optcore.register("bad_kind_entry", optcore.sgd, kind="optimiser")
        with pytest.raises(TypeError, match="must be callable"):
            optcore.register("bad_obj_entry", 3, kind="optimizer")
    with pytest.raises(optcore.UnknownNameError):
        optcore.get("sgd_for_registration_test")


def test_from_config_dict_and_json_file(tmp_path):
    config = {
        "name": "adamw",
        "learning_rate": {"name": "polynomial_schedule", "init_value": 1e-2, "end_value": 0.0,
                          "power": 1, "transition_steps": 10},
        "weight_decay": 1e-3,
    }
    path = tmp_path / "opt.json"
    path.write_text(json.dumps(config))
    reference = optcore.adamw(optcore.polynomial_schedule(1e-2, 0.0, 1, 10), weight_decay=1e-3)
    params = {"w": jnp.arange(3.0)}
    want, _ = reference.update(params, reference.init(params), params)
    for built in (optcore.from_config(config), optcore.from_config(path)):
        got, _ = built.update(params, built.init(params), params)
        np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)

    chained = optcore.from_config({"name": "chain", "args": [
        {"name": "clip_by_global_norm", "max_norm": 1.0}, {"name": "sgd", "learning_rate": 0.1}]})
    updates, _ = chained.update({"w": jnp.array([3.0, 4.0])}, chained.init(params))
    np.testing.assert_allclose(updates["w"], [-0.06, -0.08], rtol=1e-6)


def test_from_config_errors_name_the_key(tmp_path):
    with pytest.raises(TypeError, match="learning_rat"):
        optcore.from_config({"name": "adam", "learning_rat": 1e-3})
    with pytest.raises(ValueError, match="no 'name' key"):
        optcore.from_config({"learning_rate": 1e-3})
    with pytest.raises(optcore.UnknownNameError, match="adamw"):
        optcore.from_config({"name": "adamww", "learning_rate": 1e-3})
    with pytest.raises(TypeError, match=r"config\['learning_rate'\]\['name'\] must be a string"):
        optcore.from_config({"name": "adam", "learning_rate": {"name": 3}})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        optcore.from_config(bad)


def test_deprecated_registration_warns_only_on_the_top_level_attribute():
    """register(..., deprecated=msg): optcore.<name> warns with msg; optcore.get stays silent."""
    import warnings

    from optcore import plugins

    def fixture_old_sgd(learning_rate):
        return optcore.sgd(learning_rate)

    class Deprecating:
        @staticmethod
        @optcore.hookimpl
        def optcore_register(register):
            register("fixture_old_sgd", fixture_old_sgd, kind="optimizer",
                     deprecated="optcore.fixture_old_sgd is deprecated: use X.")

    class BadDeprecating:
        @staticmethod
        @optcore.hookimpl
        def optcore_register(register):
            register("fixture_bad_deprecation", fixture_old_sgd, kind="optimizer", deprecated=True)

    with plugins.scoped_host():
        plugins.add_plugin(Deprecating, name="fixture_deprecating")
        with pytest.warns(DeprecationWarning, match=r"^optcore\.fixture_old_sgd is deprecated: use X\.$"):
            # The registry holds the factory wrapped so that what it builds records the call (to_config).
            assert inspect.unwrap(optcore.fixture_old_sgd) is fixture_old_sgd
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert inspect.unwrap(optcore.get("fixture_old_sgd")) is fixture_old_sgd
            assert optcore.sgd is not None  # names registered without deprecated= stay silent
        with pytest.warns(UserWarning, match="deprecated= of 'fixture_bad_deprecation' must be the warning message"):
            plugins.add_plugin(BadDeprecating, name="fixture_bad_deprecating")
        statuses = {p.name: p.status for p in plugins.list_plugins()}
        assert statuses["fixture_bad_deprecating"] == "broken"
