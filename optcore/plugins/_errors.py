"""Errors raised by name lookup."""

from __future__ import annotations


class UnknownNameError(LookupError):
    """No installed plugin registers the requested name.

    Attributes:
      disabled_plugins: the third-party plugins turned off by
        ``OPTCORE_DISABLE_PLUGINS``/``OPTCORE_LOAD_PLUGINS`` when the lookup
        failed (one of them may provide the name); empty when none is off.
    """

    def __init__(self, message: str = "", *, disabled_plugins: tuple = ()):
        super().__init__(message)
        self.disabled_plugins = tuple(disabled_plugins)

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return str(self.args[0]) if self.args else ""


class PluginNotInstalledError(UnknownNameError):
    """The name belongs to a first-party plugin that is not installed."""

    def __init__(self, message: str, distribution: str, install_command: str):
        super().__init__(message)
        self.distribution = distribution
        self.install_command = install_command


class PluginDisabledError(UnknownNameError):
    """The name belongs to a plugin that is installed but turned off.

    Raised for the names of a plugin excluded by ``OPTCORE_DISABLE_PLUGINS``
    or left out of ``OPTCORE_LOAD_PLUGINS``. ``plugin`` is the name
    ``optcore list`` shows, ``variable`` the environment variable that turned
    it off, ``enable_hint`` what to change to turn it on.
    """

    def __init__(self, message: str, *, plugin: str, distribution: "str | None", variable: str, enable_hint: str):
        super().__init__(message)
        self.plugin = plugin
        self.distribution = distribution
        self.variable = variable
        self.enable_hint = enable_hint


class NameCollisionError(LookupError):
    """Several plugins register the same name and none overrides the others."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginError(Exception):
    """A plugin's factory raised while building one of its names.

    The message names the entry, the plugin and its distribution; the
    original exception is ``__cause__``. A ``ValueError`` or ``TypeError``
    (a rejected hyperparameter, say) is re-raised as :class:`PluginValueError`
    or :class:`PluginTypeError`, which are also ``ValueError``/``TypeError``,
    so ``except ValueError`` keeps working.
    """

    def __init__(self, message: str, *, name: str, plugin: str, distribution: "str | None"):
        super().__init__(message)
        self.name = name
        self.plugin = plugin
        self.distribution = distribution


class PluginValueError(PluginError, ValueError):
    """A :class:`PluginError` whose cause is a ``ValueError``."""


class PluginTypeError(PluginError, TypeError):
    """A :class:`PluginError` whose cause is a ``TypeError``."""


class ConfigError(ValueError):
    """A config cannot be written (a lambda in it, say) or read (malformed); the message gives the path."""
