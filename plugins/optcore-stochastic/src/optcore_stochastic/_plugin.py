"""The optcore plugin hook of optcore-stochastic (found through its entry point)."""

import optcore

import optcore_stochastic

_KIND_OF_GROUP = (
    ("estimator", optcore_stochastic.ESTIMATORS),
    ("control_variate", optcore_stochastic.CONTROL_VARIATES),
    ("utility", optcore_stochastic.UTILITIES),
)


@optcore.hookimpl
def optcore_register(register):
    register("stochastic", optcore_stochastic, kind="namespace")
    register("perturbations", optcore_stochastic.perturbations, kind="namespace")
    for kind, names in _KIND_OF_GROUP:
        for name in names:
            register(name, getattr(optcore_stochastic, name), kind=kind)
