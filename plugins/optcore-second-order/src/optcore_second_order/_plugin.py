"""Registers the second-order functions with optcore (entry point group ``optcore``)."""

import optcore
import optcore_second_order


@optcore.hookimpl
def optcore_register(register):
    register("second_order", optcore_second_order, kind="namespace")
    for name in optcore_second_order.__all__:
        register(name, getattr(optcore_second_order, name), kind="curvature")
