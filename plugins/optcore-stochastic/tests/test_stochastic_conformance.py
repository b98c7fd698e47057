"""Every optimizer optcore-stochastic registers keeps optcore's guarantees (the conformance kit).

It registers none today; an optimizer added later is checked without editing this file.
"""

import optcore.testing


@optcore.testing.parametrize_registry(distribution="optcore-stochastic")
def test_every_optimizer_of_this_plugin_conforms(case):
    case.check()
