"""The core with no plugin installed (the tox `core` env): it works, and plugin names say how to install."""

from __future__ import annotations

import importlib.metadata
import os

import jax
import jax.numpy as jnp
import pytest

import optcore
from optcore import plugins

pytestmark = pytest.mark.skipif(
    os.environ.get("OPTCORE_TEST_ENV") != "core", reason="checks the core-only environment (tox -e core)"
)


def test_no_plugin_distribution_is_installed():
    for plugin in plugins.FIRST_PARTY:
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(plugin.distribution)
    assert [p.name for p in plugins.list_plugins()] == ["optcore"]


@pytest.mark.parametrize("plugin", plugins.FIRST_PARTY, ids=lambda p: p.distribution)
def test_every_plugin_name_gives_the_install_hint(plugin):
    for name in plugin.names + plugin.namespaces:
        with pytest.raises(plugins.PluginNotInstalledError) as err:
            optcore.get(name)
        assert err.value.distribution == plugin.distribution
        assert f'pip install "optcore[{plugin.extra}]"' in str(err.value)
        with pytest.raises(AttributeError, match=plugin.distribution):
            getattr(optcore, name)


def test_the_core_trains_without_plugins():
    opt = optcore.get("adamw", learning_rate=0.1)
    x = jnp.array([3.0, -1.0])
    state = opt.init(x)
    loss = lambda x: jnp.sum((x - 1.0) ** 2)  # noqa: E731
    for _ in range(100):
        updates, state = jax.jit(opt.update)(jax.grad(loss)(x), state, x)
        x = optcore.apply_updates(x, updates)
    assert float(loss(x)) < 1e-2
