"""
What each level of the log says: trouble (an instance going down) at
warning, news (coming back up) at info, housekeeping (the collector's
freezes) at debug; read through the same level filter as
``SENTINEL_LOG_LEVEL`` and ``sentinel-agent --log-level``.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import firstchecks, process
from sentinel import monitor as monitor_module
from sentinel.logs import LEVEL_VARIABLE, filtered, level_from
from sentinel.probe import Observation
from sentinel.process import HOUSEKEEPING_INTERVAL, ProcessPolicy
from tests.fakes import FAILED, make_monitor


class Shown:
    """The lines an observer filtered at one level lets through."""

    def __init__(self, level_name: str | None) -> None:
        self.events: list[LogEvent] = []
        environ = {} if level_name is None else {LEVEL_VARIABLE: level_name}
        self.observer = filtered(self.events.append, level_from(environ))

    def lines(self) -> list[tuple[LogLevel, str]]:
        return [(e["log_level"], formatEvent(e)) for e in self.events]


class MonitorLevelTests(SynchronousTestCase):
    """An instance's transitions."""

    def run_instance(self, shown: Shown) -> None:
        """'a' comes up, goes down, comes back up; its role is read on the way."""
        self.patch(monitor_module, "log", Logger(observer=shown.observer))
        self.patch(firstchecks, "log", Logger(observer=shown.observer))
        monitor, clock, probes, _ = make_monitor(["a"], rise=1, fall=1)
        probes["a"].result = FAILED
        monitor.startService()
        self.addCleanup(monitor.stopService)
        probes["a"].result = Observation(ok=True, ready=True, latency_ms=0.5)
        clock.advance(1.0)
        probes["a"].result = Observation(ok=True, ready=False, latency_ms=0.5)
        clock.advance(1.0)

    def test_down_is_a_warning(self) -> None:
        """
        Going down, even as the first decision, is a warning (the first
        decision's, in the summary of first checks; its own line at
        debug); coming up and a change of readiness are info.
        """
        shown = Shown("debug")
        self.run_instance(shown)
        self.assertEqual(
            shown.lines(),
            [
                (LogLevel.debug, "a is down (was unknown): connection refused"),
                (
                    LogLevel.warn,
                    "1 instance(s) decided by their first check: 0 up, 1 down "
                    "(down: a)",
                ),
                (LogLevel.info, "a is up (was down)"),
                (LogLevel.info, "a: ready=False role=master"),
            ],
        )

    def test_warn_level_shows_only_trouble(self) -> None:
        """At --log-level warn, going down is still shown; the rest is not."""
        shown = Shown("warn")
        self.run_instance(shown)
        self.assertEqual(
            shown.lines(),
            [
                (
                    LogLevel.warn,
                    "1 instance(s) decided by their first check: 0 up, 1 down "
                    "(down: a)",
                )
            ],
        )


class HousekeepingLevelTests(SynchronousTestCase):
    """The collector's freezes after start and every 10 minutes."""

    def run_policy(self, shown: Shown) -> None:
        """45 s after a start, with the check loop's rounds, then an hour."""
        self.patch(process, "log", Logger(observer=shown.observer))
        self.patch(process, "refreeze_gc", lambda: 0)
        # The rounds before settling freeze the collector: not this process's.
        self.patch(process.gc, "freeze", lambda: None)
        self.patch(process, "count_gc_objects", lambda frozen=None: 1000)
        clock = Clock()
        policy = ProcessPolicy(clock, 1)
        policy.startService()
        self.addCleanup(policy.stopService)
        for rounds in range(1, 46):
            policy.watched_for(rounds)
            clock.advance(1.0)
        clock.pump([HOUSEKEEPING_INTERVAL] * 360)

    def test_debug_only(self) -> None:
        """Every freeze, at start, after settling and periodic, is at debug."""
        shown = Shown("debug")
        self.run_policy(shown)
        levels = {level for level, _ in shown.lines()}
        self.assertEqual(levels, {LogLevel.debug})
        # At start and once settled (round 30; the rounds before only
        # freeze, silently), then every 10 minutes of the hour.
        self.assertEqual(len(shown.lines()), 2 + 6)

    def test_default_level_is_quiet(self) -> None:
        """At the default level (info) housekeeping says nothing."""
        shown = Shown(None)
        self.run_policy(shown)
        self.assertEqual(shown.lines(), [])
