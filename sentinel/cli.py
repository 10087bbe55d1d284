"""
``sentinel-agent``: the agent in the foreground, exactly as
``twistd --nodaemon --pidfile= sentinel ...`` runs it, without Twisted's
plugin discovery.

    sentinel-agent [--log-format text|json] [--log-level LEVEL] [options]

``twistd sentinel`` finds the plugin through Twisted's plugin cache, which
must be rebuilt after an install and cannot be written by an unprivileged
service user (twistd then warns on every start). This entry point offers the
one plugin directly, so an installed package runs with no extra step. Every
other argument is ``twistd sentinel``'s (``sentinel-agent --help``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application import app

from sentinel.logs import LEVEL_VARIABLE, level_named
from sentinel.signals import START_SIGNALS

_FORMATS = ("text", "json")


def _split_log_options(argv: Sequence[str]) -> tuple[str, str | None, list[str]]:
    """
    Take ``--log-format`` and ``--log-level`` (``--opt value`` or
    ``--opt=value``) out of `argv`; return the format, the level (None when
    not given) and the other arguments, in order.

    @raise SystemExit: with one line naming the option, for a bad or
        missing value.
    """
    values = {"--log-format": "text", "--log-level": None}
    rest: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        name, equals, value = argument.partition("=")
        if name not in values:
            rest.append(argument)
            continue
        if not equals:
            value = next(arguments, "")
        if not value:
            raise SystemExit(f"sentinel: {name}: a value is required")
        values[name] = value
    log_format = values["--log-format"] or "text"
    if log_format not in _FORMATS:
        raise SystemExit(
            f"sentinel: --log-format: {log_format!r} is not one of text, json"
        )
    level = values["--log-level"]
    if level is not None:
        level_named(level, "--log-level")  # One line now if it is not a level.
    return log_format, level, rest


def agent(argv: Sequence[str] | None = None) -> None:
    """Run the agent in the foreground with `argv` (default: the command line)."""
    # First: a SIGHUP (systemctl reload), SIGUSR2, SIGTERM or SIGINT from
    # here on is noted, and acted on once the agent runs (sentinel.signals).
    START_SIGNALS.install()
    from twisted.scripts import twistd

    log_format, level, rest = _split_log_options(sys.argv[1:] if argv is None else argv)
    if level is not None:
        os.environ[LEVEL_VARIABLE] = level

    class AgentOptions(twistd.ServerOptions):  # type: ignore[name-defined,misc]
        """twistd's options, offering the sentinel plugin alone."""

        # ServerOptions lists its subcommands through this hook (Twisted's
        # own tests replace it the same way): no plugin cache is read or
        # written.
        _getPlugins = staticmethod(_sentinel_plugin)

    sys.argv = [
        "sentinel-agent",
        "--nodaemon",
        "--pidfile=",
        f"--logger=sentinel.logs.{log_format}_observer",
        "sentinel",
        *rest,
    ]
    app.run(twistd.runApp, AgentOptions)


def _sentinel_plugin(interface: object, package: object = None) -> list[Any]:
    from twisted.plugins.sentinel_plugin import sentinel

    return [_AgentPlugin(sentinel)]


class _AgentPlugin:
    """
    The sentinel plugin as ``sentinel-agent`` offers it: the same service,
    with a ``--help`` that names this command and its own two options
    (twistd's said ``Usage: twistd [options] sentinel [options]`` and
    left them out).
    """

    def __init__(self, plugin: Any) -> None:
        self.tapname = plugin.tapname
        self.description = plugin.description
        self.makeService = plugin.makeService
        self._plugin = plugin

    def options(self) -> Any:
        """The plugin's options, their usage text this command's."""
        base = self._plugin.options

        class AgentCommandOptions(base):  # type: ignore[misc,valid-type]
            __doc__ = base.__doc__
            longdesc = f"{base.longdesc} {AGENT_OPTIONS}"

            twistd_options_hint = (
                "{option} is twistd's own option, which sentinel-agent does not"
                " take (it runs twistd --nodaemon --pidfile= sentinel): run"
                " twistd {option} ... sentinel ... for it"
            )

            def getSynopsis(self) -> str:
                return AGENT_SYNOPSIS

        return AgentCommandOptions()


AGENT_SYNOPSIS = (
    "Usage: sentinel-agent [--log-format text|json] [--log-level LEVEL] [options]"
)
AGENT_OPTIONS = (
    "sentinel-agent runs in the foreground and logs to standard output: "
    "--log-format text (the default) or json (one object per line); "
    "--log-level debug, info (the default, or $SENTINEL_LOG_LEVEL), warn, "
    "error or critical hides what is below it."
)
