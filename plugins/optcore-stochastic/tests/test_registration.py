"""The plugin's entries reach optcore by name, by attribute and through its namespaces."""

import optcore
import optcore_stochastic
import optcore_stochastic.perturbations
from optcore.plugins import _catalog  # the core's table of first-party names (test-only use)
from optcore_stochastic import _plugin

KINDS = {
    "estimator": optcore_stochastic.ESTIMATORS,
    "control_variate": optcore_stochastic.CONTROL_VARIATES,
    "utility": optcore_stochastic.UTILITIES,
}


def test_every_name_is_registered_with_its_kind():
    for kind, names in KINDS.items():
        rows = {row.name: row for row in optcore.available(kind)}
        for name in names:
            obj = getattr(optcore_stochastic, name)
            assert optcore.get(name) is obj
            assert getattr(optcore, name) is obj
            assert getattr(optcore.stochastic, name) is obj
            assert rows[name].distribution == "optcore-stochastic"


def test_namespaces():
    assert optcore.stochastic is optcore_stochastic
    assert optcore.perturbations is optcore_stochastic.perturbations
    assert optcore.perturbations.make_perturbed_fun is optcore.make_perturbed_fun
    assert optcore.stochastic.utils.multi_normal is optcore.multi_normal


def test_catalog_block_matches_what_the_hook_registers():
    registered = []
    _plugin.optcore_register(lambda name, obj, *, kind, override=False: registered.append((name, kind)))
    (entry,) = [p for p in _catalog.FIRST_PARTY if p.distribution == "optcore-stochastic"]
    assert tuple(n for n, k in registered if k == "namespace") == entry.namespaces
    assert sorted(n for n, k in registered if k != "namespace") == sorted(entry.names)
    assert sorted(optcore_stochastic.__all__) == sorted(entry.names)
