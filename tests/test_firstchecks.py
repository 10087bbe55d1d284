"""
Statuses decided by one check (a first check, or the first after a gap)
are summed up in one line a second, each instance's own line at debug.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import firstchecks
from sentinel import monitor as monitor_module
from sentinel.firstchecks import NAMED, WINDOW, FirstChecks
from sentinel.health import DOWN, UP
from tests.fakes import FAILED, make_monitor


class Lines:
    """Every line logged by the monitor and the summary, with its level."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[LogEvent] = []
        case.patch(monitor_module, "log", Logger(observer=self.events.append))
        case.patch(firstchecks, "log", Logger(observer=self.events.append))

    def at(self, *levels: LogLevel) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] in levels]


class MonitorStartTests(SynchronousTestCase):
    """What a start of many instances logs at info and above."""

    def test_start_is_one_line_not_one_per_instance(self) -> None:
        """
        300 instances decided at their first check (297 up, 3 down) make one
        summary line, a warning naming the down ones; a down one's own line
        is at debug, an up one has none. (Before: 300 lines at info and
        warn.)
        """
        lines = Lines(self)
        names = [f"r{i}" for i in range(300)]
        monitor, clock, probes, _ = make_monitor(names)
        for name in ("r7", "r42", "r299"):
            probes[name].result = FAILED
        monitor.startService()
        self.addCleanup(monitor.stopService)
        clock.advance(WINDOW)
        self.assertEqual(
            lines.at(LogLevel.info, LogLevel.warn),
            [
                "300 instance(s) decided by their first check: 297 up, 3 down "
                "(down: r7, r42, r299)"
            ],
        )
        self.assertEqual(lines.events[-1]["log_level"], LogLevel.warn)
        self.assertEqual(
            lines.at(LogLevel.debug),
            [
                f"{name} is down (was unknown): connection refused"
                for name in ("r7", "r42", "r299")
            ],
        )

    def test_changes_by_rise_and_fall_keep_their_own_line(self) -> None:
        """
        A status moved by the hysteresis (3 failures in a row) is still a
        warning of its own, at once: only decisions by one check are summed.
        """
        lines = Lines(self)
        monitor, clock, probes, _ = make_monitor(["a", "b"], fall=3)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        clock.advance(WINDOW)
        probes["a"].result = FAILED
        clock.pump([1.0] * 3)
        self.assertEqual(
            lines.at(LogLevel.info, LogLevel.warn),
            [
                "2 instance(s) decided by their first check: 2 up, 0 down (up: a, b)",
                "a is down (was up): connection refused",
            ],
        )

    def test_gap_decisions_summed_apart(self) -> None:
        """
        After a gap in the agent's own checks longer than the hysteresis
        (the loop stopped, then started again), the decisions anew are
        summed in a line of their own, with the gap.
        """
        lines = Lines(self)
        monitor, clock, probes, _ = make_monitor(["a", "b"], rise=2, fall=3)
        monitor.startService()
        clock.advance(WINDOW)
        monitor.loop.stopService()
        clock.advance(10.0)
        probes["b"].result = FAILED
        monitor.loop.startService()
        clock.advance(WINDOW)
        monitor.stopService()
        self.assertEqual(
            lines.at(LogLevel.info, LogLevel.warn)[-1],
            "2 instance(s) decided anew by their first check after a gap (the "
            "agent did not check them for 4.0 s or more): 1 up, 1 down "
            "(down: b; up: a)",
        )


class FirstChecksTests(SynchronousTestCase):
    """The summary itself."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.lines = Lines(self)
        self.first = FirstChecks(self.clock)

    def test_one_line_a_window(self) -> None:
        """Decisions within `WINDOW` of the first are one line, said then."""
        self.first.decided("a", UP, False, 4.0)
        self.clock.advance(WINDOW / 2)
        self.first.decided("b", UP, False, 4.0)
        self.assertEqual(self.lines.at(LogLevel.info), [])
        self.clock.advance(WINDOW / 2)
        self.assertEqual(
            self.lines.at(LogLevel.info),
            ["2 instance(s) decided by their first check: 2 up, 0 down (up: a, b)"],
        )
        self.first.decided("c", UP, False, 4.0)
        self.clock.advance(WINDOW)
        self.assertEqual(len(self.lines.at(LogLevel.info)), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_names_bounded(self) -> None:
        """
        At most `NAMED` down instances are named, with how many more; up
        ones are not named among many.
        """
        for i in range(NAMED + 5):
            self.first.decided(f"d{i}", DOWN, False, 4.0)
        for i in range(100):
            self.first.decided(f"u{i}", UP, False, 4.0)
        self.clock.advance(WINDOW)
        named = ", ".join(f"d{i}" for i in range(NAMED))
        self.assertEqual(
            self.lines.at(LogLevel.warn),
            [
                f"{NAMED + 105} instance(s) decided by their first check: 100 up, "
                f"{NAMED + 5} down (down: {named} and 5 more)"
            ],
        )

    def test_stop_says_the_rest_at_once(self) -> None:
        """At the stop, decisions not summed yet are said, and nothing waits."""
        self.first.decided("a", DOWN, True, 4.0)
        self.first.stop()
        self.assertEqual(
            self.lines.at(LogLevel.warn),
            [
                "1 instance(s) decided anew by their first check after a gap "
                "(the agent did not check them for 4.0 s or more): 0 up, 1 down "
                "(down: a)"
            ],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.first.stop()
        self.assertEqual(len(self.lines.events), 1)
