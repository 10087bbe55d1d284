"""
The twistd side: C{twistd sentinel} options into a validated L{Config}, and
the agent service made from it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from sentinel.config import Config, ConfigError, load_config


def _number(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise usage.UsageError(f"{option}: {text!r} is not a number") from None


def _integer(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise usage.UsageError(f"{option}: {text!r} is not an integer") from None


def check_endpoint(label: str, description: str, reactor: Any) -> None:
    """
    Parse C{description} as a server endpoint string (C{"none"} is allowed),
    without listening.

    @raise ConfigError: naming C{label} and the string if it does not parse.
    """
    if description == "none":
        return
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(
            f"{label}: {description!r} is not a valid endpoint: {reason}"
        ) from None


class Options(usage.Options):
    """
    C{twistd sentinel} options; every option also has a key in the C{--config}
    TOML file, and only the options given override it (the defaults live in
    L{sentinel.config}).
    """

    synopsis = "[options]"
    longdesc = (
        "Check Redis instances with PING every interval, decide up/down with "
        "rise/fall, and publish their status to ZooKeeper."
    )

    optParameters = [
        ["config", None, None, "TOML config file; options given here override it."],
        ["zookeeper", None, None, "ZooKeeper hosts h1:2181,h2:2181[/chroot]."],
        ["zk-root", None, None, "Base znode path [default: /sentinel]."],
        [
            "http",
            None,
            None,
            "HTTP endpoint string, or none [default: tcp:6060:interface=127.0.0.1].",
        ],
        ["agent-id", None, None, "Name of this agent's znode [default: host name]."],
    ]

    # The option each optParameter overrides, as config.load_config keys it.
    _parameter_keys = {
        "zookeeper": "zookeeper.hosts",
        "zk-root": "zookeeper.root",
        "http": "http",
        "agent-id": "agent_id",
    }

    config: Config
    config_path: str | None

    def __init__(self, reactor: Any = None) -> None:
        """
        @param reactor: checks the C{--http} endpoint string; the global
            reactor if L{None} (twistd's case).
        """
        super().__init__()
        self._reactor = reactor
        self._redis: list[str] = []
        self.overrides: dict[str, object] = {}

    def opt_redis(self, address: str) -> None:
        """[NAME=]HOST:PORT to watch; repeatable; replaces the file's [[redis]]."""
        self._redis.append(address)

    def opt_interval(self, seconds: str) -> None:
        """Seconds between checks of an instance [default: 1.0]."""
        self.overrides["interval"] = _number("--interval", seconds)

    def opt_timeout(self, seconds: str) -> None:
        """Seconds a check may take, connect included [default: 0.5]."""
        self.overrides["timeout"] = _number("--timeout", seconds)

    def opt_rise(self, count: str) -> None:
        """Consecutive successes that make an instance up [default: 2]."""
        self.overrides["rise"] = _integer("--rise", count)

    def opt_fall(self, count: str) -> None:
        """Consecutive failures that make an instance down [default: 3]."""
        self.overrides["fall"] = _integer("--fall", count)

    def opt_zk_session_timeout(self, seconds: str) -> None:
        """Requested ZooKeeper session timeout, seconds [default: 10.0]."""
        self.overrides["zookeeper.session_timeout"] = _number(
            "--zk-session-timeout", seconds
        )

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse as usual, but end the process with one line on stderr for any
        invalid input, instead of twistd's full usage text.
        """
        try:
            super().parseOptions(options)
        except (usage.UsageError, ConfigError) as e:
            message = " ".join(str(e).splitlines())
            raise SystemExit(f"sentinel: {message}") from None

    def parseArgs(self, *args: str) -> None:
        """Refuse positional arguments."""
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}")

    def postOptions(self) -> None:
        """Load and validate the whole configuration."""
        for name, key in self._parameter_keys.items():
            if self[name] is not None:
                self.overrides[key] = self[name]
        if self._redis:
            self.overrides["redis"] = list(self._redis)
        path = self["config"]
        self.config_path = None if path is None else os.path.abspath(path)
        self.config = self.load()
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        label = "--http" if "http" in self.overrides else "http"
        check_endpoint(label, self.config.http, reactor)

    def load(self) -> Config:
        """
        Load the config file (again, on SIGHUP) with the same command-line
        overrides over it.

        @raise ConfigError: for an invalid file or value.
        """
        return load_config(self.config_path, self.overrides, socket.gethostname())


def makeService(options: Options) -> IService:
    """The agent service for the validated C{options}."""
    from twisted.internet import reactor

    from sentinel.agent import make_agent

    reload = options.load if options.config_path is not None else None
    return make_agent(options.config, reload, reactor)
