"""Errors raised by name lookup."""

from __future__ import annotations


class UnknownNameError(LookupError):
    """No installed plugin registers the requested name."""

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return str(self.args[0]) if self.args else ""


class PluginNotInstalledError(UnknownNameError):
    """The name belongs to a first-party plugin that is not installed."""

    def __init__(self, message: str, distribution: str, install_command: str):
        super().__init__(message)
        self.distribution = distribution
        self.install_command = install_command


class NameCollisionError(LookupError):
    """Several plugins register the same name and none overrides the others."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
