"""An example third-party optcore plugin providing QHAdam."""

from optcore_plugin_example.qhadam import ScaleByQHAdamState, qhadam, scale_by_qhadam

__all__ = ["ScaleByQHAdamState", "qhadam", "scale_by_qhadam"]
