"""QHAdam keeps every guarantee of optcore's own optimizers: the conformance kit, in three lines."""

import optcore.testing


@optcore.testing.parametrize_registry(distribution="optcore-plugin-example")
def test_every_optimizer_of_this_plugin_conforms(case):
    case.check()
