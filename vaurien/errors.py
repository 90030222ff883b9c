"""The one exception family of Vaurien.

Library code raises these; each boundary translates them once: the command line into
``vaurien: error: ...`` and exit status 2, the control API into a 400 answer, a session into
one log line. Any other exception is a bug, logged with its traceback.
"""


class VaurienError(Exception):
    """Base class of every error Vaurien reports to a user."""


class ConfigError(VaurienError):
    """A configuration file, a setting or a command-line value is wrong."""


class SpecError(VaurienError):
    """A ``--behavior`` spec cannot be parsed."""


class PluginError(VaurienError):
    """A plugin cannot be found, imported or registered."""


class OptionError(VaurienError):
    """An option (of a plugin, or a global setting) has a bad value.

    ``option`` names the option (``sleep``), so that the API can report the field; ``problem``
    is the message without that name, for places that name the option their own way (a flag,
    an INI key).
    """

    def __init__(self, option: str, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.option = option
        self.problem = problem if problem is not None else message


class ProtocolError(VaurienError):
    """Traffic does not follow the protocol the proxy was told to expect."""
