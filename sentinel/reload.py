"""
SIGHUP reloads the ``--config`` file, hitlessly (as nerve does).

Added instances are checked from the next tick; removed ones stop, their
connection closes and their node goes; changed ones (address, auth, TLS)
start again from a fresh state under the same node; unchanged ones keep
their state, counters and connection. Global settings apply from the next
tick. Command-line options still override the file. A file that does not
load is logged with its one-line reason and the running config stays.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

import attr
from twisted.application.service import Service
from twisted.logger import Logger

from sentinel.config import Config, ConfigError
from sentinel.monitor import Monitor, Settings

log = Logger()

# Settings that only a restart applies: the HTTP listener, the agent's
# identity, and where and how it publishes.
_RESTART_ONLY = ("http", "agent_id", "zookeeper")


# Launches per interval are about this far apart (see `Settings.slices`).
SLICE_SECONDS = 0.05
MAX_SLICES = 20


def settings_of(config: Config) -> Settings:
    """The monitor's settings in `config`."""
    return Settings(
        interval=config.interval,
        timeout=config.timeout,
        rise=config.rise,
        fall=config.fall,
        info_every=config.info_every,
        agent_id=config.agent_id,
        slices=max(1, min(MAX_SLICES, round(config.interval / SLICE_SECONDS))),
    )


class ConfigReloader(Service):
    """Applies a freshly loaded config to the running monitor on SIGHUP."""

    def __init__(
        self,
        reactor: Any,
        load: Callable[[], Config],
        monitor: Monitor,
        config: Config,
        check_capacity: Callable[[int], object],
        install_signal: bool = True,
    ) -> None:
        self._reactor = reactor
        self._load = load
        self._monitor = monitor
        self.config = config
        self._check_capacity = check_capacity
        self._install_signal = install_signal
        self._previous_handler: Any = None
        self.reloads = 0
        self.last_error: str | None = None

    def startService(self) -> None:
        super().startService()
        if self._install_signal:
            self._previous_handler = signal.signal(signal.SIGHUP, self._hangup)

    def stopService(self) -> None:
        super().stopService()
        if self._install_signal:
            signal.signal(signal.SIGHUP, self._previous_handler or signal.SIG_DFL)

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        # In a signal handler: only hand over to the reactor.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """Load the file again and apply it; keep the old config on error."""
        try:
            new = self._load()
            self._check_capacity(len(new.instances))
        except ConfigError as e:
            self._refused(str(e))
            return
        except SystemExit as e:
            self._refused(str(e.code))
            return
        except Exception as e:
            log.failure("loading the config for a reload failed")
            self._refused(repr(e))
            return
        self.apply(new)

    def _refused(self, reason: str) -> None:
        self.last_error = reason
        log.error("reload refused, the running config stays: {reason}", reason=reason)

    def apply(self, new: Config) -> None:
        """Apply `new` over the running config (see the module docstring)."""
        old, monitor = self.config, self._monitor
        for key in _RESTART_ONLY:
            if getattr(new, key) != getattr(old, key):
                log.warn("reload: {key} changed; it takes a restart", key=key)
        new = _keep_restart_only(new, old)
        before = {i.name: i for i in old.instances}
        after = {i.name: i for i in new.instances}
        removed = [n for n in before if n not in after]
        added = [n for n in after if n not in before]
        changed = [n for n in after if n in before and after[n] != before[n]]
        for name in removed:
            monitor.remove_instance(name)
        for name in changed:
            monitor.replace_instance(after[name])
        for name in added:
            monitor.add_instance(after[name])
        monitor.update_settings(settings_of(new))
        self.config = new
        self.reloads += 1
        self.last_error = None
        log.info(
            "reloaded: {added} added, {removed} removed, {changed} changed, "
            "{kept} unchanged",
            added=len(added),
            removed=len(removed),
            changed=len(changed),
            kept=len(after) - len(added) - len(changed),
        )


def _keep_restart_only(new: Config, old: Config) -> Config:
    return attr.evolve(new, **{key: getattr(old, key) for key in _RESTART_ONLY})
