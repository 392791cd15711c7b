"""One exception type per kind of failure; the CLI maps each to an exit code."""

from __future__ import annotations


class OvertureError(Exception):
    """Base of every error Overture reports to its user without a traceback."""

    exit_code = 1


class UsageError(OvertureError):
    """The command line asked for something that does not exist or conflicts."""

    exit_code = 2


class ConfigError(OvertureError):
    """A config file is unreadable or invalid; the message names file and line."""

    exit_code = 2


class GraphError(ConfigError):
    """The dependency graph is invalid: a cycle or an unknown name."""


class StartError(OvertureError):
    """A selected service could not be brought up."""

    exit_code = 1


class NotRunningError(OvertureError):
    """A client command found no running Overture daemon for this project."""

    exit_code = 1
