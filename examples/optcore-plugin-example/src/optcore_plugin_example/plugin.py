"""The entry-point module: optcore calls this hook on the first lookup."""

import optcore

from optcore_plugin_example.qhadam import qhadam, scale_by_qhadam


@optcore.hookimpl
def optcore_register(register):
    register("qhadam", qhadam, kind="optimizer")
    register("scale_by_qhadam", scale_by_qhadam, kind="transform")
