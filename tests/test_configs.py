"""Configs both ways: ``optcore.to_config`` and ``optcore.from_config``.

The registry-wide test walks every optimizer, transform, wrapper and schedule
(plugins' too, in the ``all`` env), so a name registered later is covered
without editing this file. Each is built with its defaults, with non-default
arguments, and nested in wrappers; then

* ``to_config(from_config(to_config(x))) == to_config(x)`` (also after a JSON
  round trip), and
* the rebuilt object's updates (or a schedule's values) are bit-identical to
  ``x``'s over two steps.

Required arguments come from ``SAMPLES``, keyed by parameter NAME; a new name
with a required argument nobody supplies fails with the argument named.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optcore
import optcore.testing as kit
from optcore import plugins
from optcore.cli import main
from optcore.plugins._manager import DISABLE_AUTOLOAD_ENV, HOST

# optimistic_adam is deprecated (it warns whenever it is built, rebuilt from a config included).
pytestmark = pytest.mark.filterwarnings("ignore:`optimistic_adam` is deprecated:DeprecationWarning")

KINDS = ("optimizer", "transform", "wrapper", "schedule")

# Registered names that build no transformation or schedule: functions applied to
# gradients or updates at every step (they take arrays, not hyperparameters).
NOT_FACTORIES = {
    "skip_large_updates": "a should_skip_update_fn for MultiSteps, called on the updates at each step",
    "skip_not_finite": "a should_skip_update_fn for MultiSteps, called on the updates at each step",
    "per_example_global_norm_clip": "clips a batch of per-example gradients; a function of the gradients",
    "per_example_layer_norm_clip": "clips a batch of per-example gradients; a function of the gradients",
    "unitwise_clip": "a function of the gradients and their norms",
    "unitwise_norm": "a function of an array",
    "value_and_grad_from_state": "wraps a loss function for line searches; builds no transformation",
}
PER_EXAMPLE = {"dpsgd", "differentially_private_aggregate"}
FACTORY_RESULTS = {"inject_hyperparams", "inject_stateful_hyperparams"}  # build a factory, called again
MASK = {"layer1": {"w": True}, "scale": False}
# Eager line searches and Hessian estimates take seconds a step: nested and injected, their configs are
# compared but not their updates (their own updates are compared, and nesting's are, for every other name).
SLOW = {"lbfgs", "scale_by_lbfgs", "scale_by_zoom_linesearch", "sophia"}


# Registered helpers: callables passed as arguments are written by name (a lambda cannot be).
def cfg_update_norm(updates):
    return optcore.global_norm(updates)


def cfg_every_other_step(step, **extra_args):
    return step % 2 == 0


def cfg_halve(updates, params=None):
    return jax.tree.map(lambda u: 0.5 * u, updates)


def _sgd():
    return optcore.sgd(0.1)


SAMPLES = {  # a value for each required argument, by parameter name
    "learning_rate": lambda: 1e-2,
    "adv_optimizer": lambda: optcore.sgd(0.05),
    "base_optimizer": _sgd,
    "fast_optimizer": _sgd,
    "optimizer": _sgd,
    "opt": _sgd,
    "inner": _sgd,
    "tx": _sgd,
    "inner_factory": lambda: optcore.sgd,
    "boundaries": lambda: [2],
    "schedules": lambda: [optcore.constant_schedule(0.1), optcore.linear_schedule(0.1, 0.0, 4)],
    "clipping": lambda: 0.1,
    "cosine_kwargs": lambda: [{"init_value": 0.1, "peak_value": 0.2, "warmup_steps": 1, "decay_steps": 3}],
    "decay": lambda: 0.9,
    "decay_rate": lambda: 0.5,
    "decay_steps": lambda: 10,
    "end_value": lambda: 0.01,
    "eta": lambda: 0.01,
    "gamma": lambda: 0.55,
    "every_k_schedule": lambda: 2,
    "freeze_mask": lambda: dict(MASK),
    "mask": lambda: dict(MASK),
    "init_value": lambda: 0.1,
    "interpolate_type": lambda: "cosine",
    "l2_norm_clip": lambda: 1.0,
    "noise_multiplier": lambda: 0.1,
    "seed": lambda: 0,
    "max_backtracking_steps": lambda: 5,
    "max_linesearch_steps": lambda: 5,
    "max_consecutive_errors": lambda: 2,
    "max_delta": lambda: 1.0,
    "max_norm": lambda: 1.0,
    "threshold": lambda: 1.0,
    "measure": lambda: optcore.get("cfg_update_norm"),
    "measure_name": lambda: "norm",
    "measures": lambda: {"norm": optcore.get("cfg_update_norm")},
    "should_transform_fn": lambda: optcore.get("cfg_every_other_step"),
    "f": lambda: optcore.get("cfg_halve"),
    "param_labels": lambda: {"layer1": {"w": "a"}, "scale": "b"},
    "transforms": lambda: {"a": optcore.sgd(0.1), "b": optcore.adam(0.01)},
    "peak_value": lambda: 0.2,
    "power": lambda: 2,
    "schedule_fn": lambda: optcore.linear_schedule(0.1, 0.0, 4),
    "step_size_fn": lambda: optcore.cosine_decay_schedule(0.5, 4),
    "slow_step_size": lambda: 0.5,
    "step_size": lambda: 0.5,
    "sync_period": lambda: 2,
    "transition_steps": lambda: 4,
    "value": lambda: 0.1,
    "warmup_steps": lambda: 2,
}
VARARGS = {
    "chain": lambda: (optcore.clip_by_global_norm(1.0), optcore.sgd(0.1)),
    "named_chain": lambda: (("clip", optcore.clip_by_global_norm(1.0)), ("sgd", optcore.sgd(0.1))),
}
# Non-default values that the generic rule (halve float defaults in (0, 1)) does not reach.
NON_DEFAULT = {
    "piecewise_constant_schedule": {"boundaries_and_scales": {1: 0.5, 3: 0.1}},
    "piecewise_interpolate_schedule": {"boundaries_and_scales": {1: 0.5, 3: 0.1}},
    "adamw": {"mu_dtype": jnp.bfloat16, "learning_rate": jnp.asarray(0.02, jnp.float32)},
    "MultiSteps": {"accumulator_dtype": jnp.float32, "use_grad_mean": False},
    "inject_hyperparams": {"static_args": ("momentum",), "hyperparam_dtype": jnp.float32},
}


@pytest.fixture(scope="module", autouse=True)
def helpers_registered():
    """A scoped host with the helpers registered (they vanish after this module)."""
    with plugins.scoped_host():
        for func in (cfg_update_norm, cfg_every_other_step, cfg_halve):
            optcore.register(func.__name__, func, kind="utility")
        yield


def _names():
    """Every registered building name (resolved in the process host at collection time)."""
    HOST.load_everything()
    return sorted({e.name for kind in KINDS for e in HOST.registry.entries(kind)})


def build(name, **overrides):
    factory = optcore.get(name)
    args, kwargs = [], {}
    for p in inspect.signature(factory).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            args.extend(VARARGS[name]())
        elif p.default is p.empty and p.kind is not p.VAR_KEYWORD and p.name not in overrides:
            assert p.name in SAMPLES, f"{name}: no sample value for the required argument {p.name!r}; add one to SAMPLES"
            kwargs[p.name] = SAMPLES[p.name]()
    kwargs.update({k: v for k, v in EXTRA_ARGS.get(name, {}).items() if k not in overrides})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return factory(*args, **kwargs, **overrides)


def non_default_overrides(name):
    """Every float default in (0, 1) halved (betas, decays, eps...), plus NON_DEFAULT; those the factory accepts."""
    wanted = dict(NON_DEFAULT.get(name, {}))
    for p in inspect.signature(optcore.get(name)).parameters.values():
        if type(p.default) is float and 0.0 < p.default < 1.0:
            wanted.setdefault(p.name, p.default / 2)
    try:
        build(name, **wanted)
        return wanted
    except (ValueError, TypeError):  # a combination the factory rejects: keep each one it takes alone
        accepted = {}
        for key, value in wanted.items():
            try:
                build(name, **{key: value})
                accepted[key] = value
            except (ValueError, TypeError):
                pass
        return accepted


# Required in practice though optional in the signature.
EXTRA_ARGS = {
    "scale_by_learning_rate": {"learning_rate": 0.1},  # learning_rate=None raises, asking for one
    "differentially_private_aggregate": {"seed": 0},  # a key or a seed is required
}
# Params of another shape than kit.small_params, with the reason.
PARAMS = {
    "lookahead": lambda p: optcore.LookaheadParams.init_synced(p),  # it takes (fast, slow) params
    "scale_by_muon": lambda p: {"layer1": p["layer1"]},  # Newton-Schulz on matrices only (muon routes the rest)
    # gives shape-(1,) updates for a scalar param (a core bug, reported): no scalar here
    "scale_by_distance_over_gradients": lambda p: {"layer1": p["layer1"], "scale": jnp.ones((1,))},
}
# Not nested in the masked chain below: their params or per-example gradients do not fit its mask, or
# (measure_with_ema) update returns a measurement rather than updates (it is meant for monitor).
NO_NESTING = {*PARAMS, *PER_EXAMPLE, "measure_with_ema"}


def params_for(name):
    params = kit.small_params(jnp.float32)
    return PARAMS[name.split(" ")[0]](params) if name.split(" ")[0] in PARAMS else params


def assert_same_behaviour(x, y, name):
    """Two steps of updates (or a schedule's first values) bit-identical."""
    if callable(x) and hasattr(x, "init"):  # a stateful schedule
        kit.assert_bitwise_equal(y(y.init()), x(x.init()), f"{name} value")
    elif hasattr(x, "update"):  # a transformation (or MultiSteps)
        params = params_for(name)
        results = []
        for opt in (x, y):
            harness = kit.Harness(opt, per_example=name.split(" ")[0] in PER_EXAMPLE)
            p, state, out = params, opt.init(params), []
            for _ in range(2):
                grads = jax.grad(kit.objective)(p)
                updates, state = harness.update(grads, state, p)
                if jax.tree.structure(updates) == jax.tree.structure(p):  # measure_with_ema gives the measure
                    p = optcore.apply_updates(p, updates)
                out.append(updates)
            results.append(out)
        kit.assert_bitwise_equal(results[1], results[0], f"{name} updates")
    else:
        for count in range(4):
            kit.assert_bitwise_equal(jnp.asarray(y(jnp.asarray(count))), jnp.asarray(x(jnp.asarray(count))),
                                     f"{name}({count})")


def assert_round_trip(x, name, compare_updates=True):
    config = optcore.to_config(x)
    text = json.dumps(config)
    assert json.loads(text) == config, f"{name}: the config is not plain JSON data"
    y = optcore.from_config(json.loads(text))
    assert optcore.to_config(y) == config, f"{name}: the rebuilt object's config differs"
    if name.split(" ")[0] in FACTORY_RESULTS:  # a factory: what it builds must round-trip too
        x, y = x(learning_rate=0.05, momentum=0.5), y(learning_rate=0.05, momentum=0.5)
        assert optcore.to_config(y) == optcore.to_config(x)
        assert optcore.to_config(optcore.from_config(optcore.to_config(x))) == optcore.to_config(x)
    if compare_updates:
        assert_same_behaviour(x, y, name)
    return config


@pytest.mark.parametrize("name", _names())
def test_every_registered_name_round_trips_exactly(name):
    if name in NOT_FACTORIES:
        pytest.skip(NOT_FACTORIES[name])
    kind = HOST.resolve(name).kind
    default = build(name)
    config = assert_round_trip(default, name)
    assert optcore.get(config["@name"]) is optcore.get(name), config  # partition is multi_transform
    assert_round_trip(build(name, **non_default_overrides(name)), f"{name} (non-default)")
    if kind == "schedule" and not hasattr(default, "init"):
        assert_round_trip(optcore.sgd(default), f"{name} (as a learning rate)")
    elif hasattr(default, "update") and not callable(default) and name not in NO_NESTING:  # a transformation
        nested = optcore.chain(optcore.masked(default, {"layer1": {"w": True}, "scale": True}), optcore.scale(1.0))
        assert_round_trip(nested, f"{name} (nested)", compare_updates=name not in SLOW)
        if kind == "optimizer":
            injected = optcore.inject_hyperparams(optcore.get(name))(
                **{k: v for k, v in _required(name).items()})
            assert_round_trip(injected, f"{name} (injected)", compare_updates=name not in SLOW)


def _required(name):
    return {p.name: SAMPLES[p.name]() for p in inspect.signature(optcore.get(name)).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


# -- the format -----------------------------------------------------------------------------------


def test_format_of_a_nested_optimizer_is_readable_and_unambiguous():
    opt = optcore.chain(
        optcore.clip_by_global_norm(1.0),
        optcore.adamw(optcore.linear_schedule(1e-2, 0.0, 10), weight_decay=1e-3, mask={"name": True, "@b": False}),
    )
    config = optcore.to_config(opt)
    assert config == {
        "@name": "chain",
        "@args": [
            {"@name": "clip_by_global_norm", "max_norm": 1.0},
            {"@name": "adamw",
             "learning_rate": {"@name": "linear_schedule", "init_value": 0.01, "end_value": 0.0,
                               "transition_steps": 10},
             "weight_decay": 0.001,
             "mask": {"@dict": [["name", True], ["@b", False]]}},
        ],
    }
    # data with a key "name" stays data (the older format would have called it)
    masked = optcore.masked(optcore.sgd(0.1), {"name": True, "other": False})
    config = optcore.to_config(masked)
    assert config["mask"] == {"name": True, "other": False}
    rebuilt = optcore.from_config(config)
    params = {"name": jnp.ones(2), "other": jnp.ones(2)}
    updates, _ = rebuilt.update(params, rebuilt.init(params))
    np.testing.assert_array_equal(updates["name"], -0.1 * np.ones(2, np.float32))  # masked in: sgd's -lr * g
    np.testing.assert_array_equal(updates["other"], np.ones(2))  # masked out: passed through


def test_values_arrays_dtypes_tuples_and_int_keys_round_trip():
    value = {
        "a": jnp.asarray([[1.0, 2.5]], jnp.bfloat16), "b": np.arange(3, dtype=np.int16), "c": np.float32(0.1),
        "d": jnp.float32, "e": (1, "x", None), "f": {3: True, "k": [1.5, False]}, "g": jnp.dtype("float16"),
    }
    from optcore.plugins._configs import _decode, _encode, _registered_index

    config = _encode(value, "v", _registered_index())
    assert config["a"] == {"@array": [[1.0, 2.5]], "@dtype": "bfloat16"}
    assert config["b"] == {"@ndarray": [0, 1, 2], "@dtype": "int16"}
    assert config["c"] == {"@scalar": float(np.float32(0.1)), "@dtype": "float32"}
    assert config["d"] == {"@dtype": "float32"} and config["g"] == {"@dtype": "float16"}
    assert config["e"] == {"@tuple": [1, "x", None]}
    assert config["f"] == {"@dict": [[3, True], ["k", [1.5, False]]]}
    back = _decode(json.loads(json.dumps(config)), "v")
    assert back["a"].dtype == jnp.bfloat16 and isinstance(back["a"], jax.Array)
    np.testing.assert_array_equal(np.asarray(back["a"], np.float32), [[1.0, 2.5]])
    assert isinstance(back["b"], np.ndarray) and back["b"].dtype == np.int16
    assert type(back["c"]) is np.float32 and back["c"] == np.float32(0.1)
    assert back["d"] == jnp.dtype("float32") and back["e"] == (1, "x", None) and back["f"] == {3: True, "k": [1.5, False]}


def test_a_factory_referred_to_without_being_called():
    assert optcore.to_config(optcore.adamw) == {"@name": "adamw", "@partial": True}
    assert optcore.from_config({"@name": "adamw", "@partial": True}) is optcore.adamw
    bound = optcore.from_config({"@name": "adamw", "@partial": True, "b1": 0.5})
    assert isinstance(bound, functools.partial) and bound.func is optcore.adamw and bound.keywords == {"b1": 0.5}
    assert optcore.to_config(bound) == {"@name": "adamw", "@partial": True, "b1": 0.5}
    injected = optcore.inject_hyperparams(optcore.adamw)(learning_rate=0.1)
    assert optcore.to_config(injected) == {
        "@call": {"@name": "inject_hyperparams", "inner_factory": {"@name": "adamw", "@partial": True}},
        "learning_rate": 0.1,
    }


def test_built_through_get_and_from_config_and_the_old_format():
    want = {"@name": "sgd", "learning_rate": 0.1, "momentum": 0.9}
    assert optcore.to_config(optcore.sgd(0.1, 0.9)) == want
    assert optcore.to_config(optcore.get("sgd", learning_rate=0.1, momentum=0.9)) == want
    assert optcore.to_config(optcore.from_config(want)) == want
    assert optcore.to_config(optcore.from_config({"name": "sgd", "learning_rate": 0.1, "momentum": 0.9})) == want


def test_multisteps_as_a_plain_transformation_has_the_config_of_its_wrapper():
    steps = optcore.MultiSteps(optcore.adam(0.1), every_k_schedule=3)
    config = optcore.to_config(optcore.chain(steps.gradient_transformation(), optcore.scale(0.5)))
    assert config["@args"][0] == {"@name": "MultiSteps", "opt": {"@name": "adam", "learning_rate": 0.1},
                                  "every_k_schedule": 3}
    assert optcore.to_config(optcore.from_config(config)) == config


def test_the_outermost_registered_call_is_recorded():
    config = optcore.to_config(optcore.adamw(1e-3))  # adamw builds a chain of scale_by_adam etc. inside
    assert config == {"@name": "adamw", "learning_rate": 0.001}


def test_a_runtime_registered_optimizer_records_when_called_directly():
    with plugins.scoped_host():
        @optcore.register(kind="optimizer")
        def cfg_my_sgd(learning_rate):
            return optcore.sgd(learning_rate)

        assert optcore.to_config(cfg_my_sgd(0.3)) == {"@name": "cfg_my_sgd", "learning_rate": 0.3}
        assert inspect.signature(cfg_my_sgd) == inspect.signature(inspect.unwrap(cfg_my_sgd))


# -- errors ----------------------------------------------------------------------------------------


def test_a_lambda_is_an_error_naming_its_path():
    opt = optcore.chain(optcore.sgd(0.1), optcore.masked(optcore.adam(0.1), lambda params: params))
    with pytest.raises(optcore.ConfigError, match=r"^chain\.args\[1\]\.mask: a Python function cannot be written to "
                                                  r"a config; register it with optcore.register or pass a tree"):
        optcore.to_config(opt)
    with pytest.raises(optcore.ConfigError, match=r"^adamw\.mask\['w'\]: a Python function"):
        optcore.to_config(optcore.adamw(0.1, mask={"w": lambda p: True}))


def test_objects_not_built_by_a_registered_factory_are_errors():
    handmade = optcore.GradientTransformation(lambda p: (), lambda u, s, p=None: (u, s))
    with pytest.raises(optcore.ConfigError, match="not built by a registered factory"):
        optcore.to_config(handmade)
    with pytest.raises(optcore.ConfigError, match=r"^chain\.args\[0\]: this GradientTransformation was not built"):
        optcore.to_config(optcore.chain(handmade))
    with pytest.raises(optcore.ConfigError, match=r"^masked\.mask\['w'\]: a set cannot be written"):
        optcore.to_config(optcore.masked(optcore.sgd(0.1), {"w": {1, 2}}))


@pytest.mark.parametrize("config, pattern", [
    ({"@name": "adam", "learning_rat": 1e-3}, "learning_rat"),
    ({"@name": "adam", "@args": 3}, r"adam\.@args must be a list"),
    ({"@name": "adam", "@bogus": 1}, "unknown reserved key"),
    ({"@name": 3}, "@name must be a string"),
    ({"@name": "adam", "@partial": "yes"}, "@partial must be true or false"),
    ({"@name": "adam", "learning_rate": {"@array": [1.0]}}, r"adam\.learning_rate: '@array' needs an '@dtype'"),
    ({"@name": "adam", "learning_rate": {"@dtype": "floaty"}}, "'floaty' is not a dtype"),
    ({"@name": "adam", "learning_rate": {"@what": 1}}, "unknown reserved key"),
    ({"@call": 0.1}, "cannot be called"),
    ({"@name": "adam", "@provider": "contrib"}, "@provider must be"),
])
def test_malformed_configs_name_the_bad_part(config, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern):
        optcore.from_config(config)


# -- provenance ------------------------------------------------------------------------------------


class _FixturePlugin:
    @staticmethod
    @optcore.hookimpl
    def optcore_register(register):
        register("cfg_fixture_sgd", lambda learning_rate=0.1: optcore.sgd(learning_rate), kind="optimizer")


def test_plugin_entries_record_their_distribution_and_a_version_change_warns():
    with plugins.scoped_host():
        HOST.ensure_loaded()
        HOST.add_plugin(_FixturePlugin, name="cfg_fixture", distribution="cfg-fixture", version="1.2")
        config = optcore.to_config(optcore.get("cfg_fixture_sgd", learning_rate=0.2))
        assert config == {"@name": "cfg_fixture_sgd", "@provider": {"distribution": "cfg-fixture", "version": "1.2"},
                          "learning_rate": 0.2}
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            optcore.from_config(config)  # same version: silent
        old = {**config, "@provider": {"distribution": "cfg-fixture", "version": "1.0"}}
        with pytest.warns(plugins.ConfigVersionWarning, match=r"'cfg_fixture_sgd' comes from cfg-fixture 1\.2, but the "
                                                              r"config was written with cfg-fixture 1\.0"):
            rebuilt = optcore.from_config(old)
        assert issubclass(plugins.ConfigVersionWarning, plugins.PluginWarning)
        assert optcore.to_config(rebuilt) == config  # the installed version is what it records now


def test_a_config_needing_a_missing_plugin_gives_the_install_command(monkeypatch):
    missing = {"@name": "cfg_gone", "@provider": {"distribution": "cfg-gone", "version": "2.1"}, "learning_rate": 0.1}
    with pytest.raises(optcore.PluginNotInstalledError, match=r"pip install 'cfg-gone==2\.1'") as info:
        optcore.from_config({"@name": "chain", "@args": [missing]})
    assert info.value.install_command == "pip install 'cfg-gone==2.1'"
    assert str(info.value).startswith("chain.args[0]: 'cfg_gone' is provided by the plugin distribution 'cfg-gone'")
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")  # no plugin installed: a first-party name gives its hint
    with plugins.scoped_host():
        with pytest.raises(optcore.PluginNotInstalledError, match="pip install") as info:
            optcore.from_config({"@name": "muon", "@provider": {"distribution": "optcore-contrib", "version": "0.1.0"},
                                 "learning_rate": 0.1})
        assert info.value.distribution == "optcore-contrib"


# -- files and the command line ---------------------------------------------------------------------


def test_json_written_and_read_toml_read(tmp_path):
    opt = optcore.adamw(optcore.cosine_decay_schedule(0.1, 100), b1=0.8, mask={"layer1": {"w": True}, "scale": False})
    config = optcore.to_config(opt, tmp_path / "opt.json")
    assert json.loads((tmp_path / "opt.json").read_text()) == config
    assert optcore.to_config(optcore.from_config(tmp_path / "opt.json")) == config
    (tmp_path / "opt.toml").write_text(
        '"@name" = "adamw"\nb1 = 0.8\n\n[learning_rate]\n"@name" = "cosine_decay_schedule"\n'
        'init_value = 0.1\ndecay_steps = 100\n\n[mask]\nscale = false\n[mask.layer1]\nw = true\n'
    )
    assert optcore.to_config(optcore.from_config(str(tmp_path / "opt.toml"))) == config
    with pytest.raises(ValueError, match="written as JSON only"):
        optcore.to_config(opt, tmp_path / "opt.toml")
    (tmp_path / "bad.toml").write_text("= nope")
    with pytest.raises(ValueError, match="not valid TOML"):
        optcore.from_config(tmp_path / "bad.toml")


def test_toml_without_a_parser_says_what_to_install(tmp_path, monkeypatch):
    import sys

    (tmp_path / "opt.toml").write_text('"@name" = "sgd"\nlearning_rate = 0.1\n')
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10 without tomli
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ImportError, match="pip install tomli"):
        optcore.from_config(tmp_path / "opt.toml")


def _run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_cli_config_show_fills_every_default_and_check_validates(tmp_path):
    path = tmp_path / "opt.json"
    optcore.to_config(optcore.chain(optcore.clip(1.0), optcore.adamw(0.01)), path)
    code, out, _ = _run(["config", "show", str(path)])
    shown = json.loads(out)
    assert code == 0
    adamw = shown["@args"][1]
    defaults = {p.name: p.default for p in inspect.signature(optcore.adamw).parameters.values()}
    assert adamw == {"@name": "adamw", "learning_rate": 0.01, **{k: v for k, v in defaults.items() if k != "learning_rate"}}
    assert optcore.to_config(optcore.from_config(shown)) == shown  # what it shows is what from_config builds
    code, out, _ = _run(["config", "check", str(path)])
    assert code == 0 and "ok" in out and "chain" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"@name": "chain", "@args": [{"@name": "adamw", "learning_rat": 0.1}]}))
    code, _, err = _run(["config", "check", str(bad)])
    assert code == 1 and "chain.args[0] ('adamw'): unknown argument 'learning_rat'" in err
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"name": "sgd", "learning_rate": 0.1}))
    code, out, _ = _run(["config", "show", str(old)])  # the older format is shown in the current one
    assert code == 0 and json.loads(out) == {"@name": "sgd", "learning_rate": 0.1, "momentum": None,
                                             "nesterov": False, "accumulator_dtype": None}
    code, _, err = _run(["config", "show", str(tmp_path / "nowhere.json")])
    assert code == 1 and "nowhere.json" in err


# -- what recording leaves unchanged ----------------------------------------------------------------


def test_recording_factories_keep_signature_pickling_and_warning_locations():
    import pickle
    import optcore.optimizers._adaptive as adaptive

    assert str(inspect.signature(optcore.adamw)).startswith("(learning_rate")
    assert optcore.adamw.__doc__ == inspect.unwrap(optcore.adamw).__doc__
    assert adaptive.adamw is optcore.adamw  # where it is defined too, so pickle finds it by name
    for factory in (optcore.adamw, optcore.chain, optcore.linear_schedule, optcore.inject_hyperparams):
        assert pickle.loads(pickle.dumps(factory)) is factory
    with pytest.warns(DeprecationWarning, match="optimistic_adam") as caught:
        optcore.optimistic_adam(0.1)
    assert caught[0].filename == __file__  # the caller's line, not the recording wrapper's


def test_jit_and_donation_see_the_same_update():
    opt = optcore.adamw(1e-2)
    raw = inspect.unwrap(optcore.adamw)(1e-2)  # the factory itself: nothing recorded
    params = kit.small_params()
    grads = jax.grad(kit.objective)(params)
    got, _ = jax.jit(lambda g, s, p: opt.update(g, s, p), donate_argnums=(1,))(grads, opt.init(params), params)
    want, _ = jax.jit(lambda g, s, p: raw.update(g, s, p), donate_argnums=(1,))(grads, raw.init(params), params)
    kit.assert_bitwise_equal(got, want, "adamw updates")
    assert optcore.plugins._recording.record_of(raw) is None and optcore.to_config(opt) == {
        "@name": "adamw", "learning_rate": 0.01}
