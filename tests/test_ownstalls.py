"""
The agent's own stalls (`sentinel.ownstalls`): a history they alone made
stale is not decided anew by one timeout (`sentinel.monitor`).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.clocksteps import ClockSteps
from sentinel.health import DOWN, UP
from sentinel.monitor import Monitor
from sentinel.ownstalls import STALL_AT, OwnStalls
from tests.fakes import FAILED, FakeProbe, make_monitor

INTERVAL = 0.5
TIMEOUT = 0.4


def up_monitor(case: SynchronousTestCase) -> tuple[Monitor, Clock, FakeProbe]:
    """One instance ``a``, checked and up, at interval 0.5 s (stale after 2 s)."""
    monitor, clock, probes, _ = make_monitor(["a"], interval=INTERVAL, timeout=TIMEOUT)
    monitor.startService()
    case.addCleanup(monitor.stopService)
    clock.advance(INTERVAL)
    case.assertEqual(monitor.states["a"].health.status, UP)
    return monitor, clock, probes["a"]


def stall(clock: Clock, seconds: float) -> None:
    """The agent stopped for `seconds`: every timer due fires after it, at once."""
    clock.advance(seconds)


def run(clock: Clock, seconds: float) -> None:
    """`seconds` pass with the agent running, a loop's step at a time."""
    for _ in range(round(seconds / 0.05)):
        clock.advance(0.05)


class OwnStallsTests(SynchronousTestCase):
    """The gaps between launches, as stalls."""

    def test_gaps_over_the_step_are_stalls(self) -> None:
        """
        Launches a step apart are no stall, nor one late by less than
        `STALL_AT`; a gap of 2.05 s at a 0.05 s step is a stall of 2 s,
        counted from a time inside it only from then.
        """
        stalls = OwnStalls()
        stalls.launched(0.0, 0.05)
        stalls.launched(0.05, 0.05)
        stalls.launched(0.1 + STALL_AT / 2, 0.05)
        self.assertEqual(stalls.since(0.0), 0.0)
        stalls.launched(2.2, 0.05)
        self.assertAlmostEqual(stalls.since(0.0), 2.2 - 0.15 - STALL_AT / 2)
        self.assertAlmostEqual(stalls.since(1.2), 1.0)
        self.assertEqual(stalls.since(2.2), 0.0)

    def test_restart_is_no_stall(self) -> None:
        """The time between a stop and a start of the loop is no stall."""
        stalls = OwnStalls()
        stalls.launched(0.0, 0.05)
        stalls.restarted()
        stalls.launched(10.0, 0.05)
        self.assertEqual(stalls.since(0.0), 0.0)


class StalledHistoryTests(SynchronousTestCase):
    """A history made stale by the agent's own stall, then a timeout."""

    def test_timeout_after_own_stall_decides_nothing(self) -> None:
        """
        The agent stops for 2.1 s (its history, 2 s, stale for it alone)
        and its first check after times out: the instance stays up, that
        check said nothing, and why says the stall; the next check, answered,
        keeps it up. (Before: published down by that one timeout.)
        """
        monitor, clock, probe = up_monitor(self)
        state = monitor.states["a"]
        probe.hang = True
        stall(clock, 2.1)
        clock.advance(TIMEOUT)
        self.assertEqual(state.health.status, UP)
        self.assertEqual(monitor.starved_first_checks, 1)
        self.assertIn("the agent stalled", state.why_unjudged)
        self.assertIn("timeout (ping)", state.why_unjudged)
        probe.hang = False
        clock.advance(INTERVAL)
        self.assertEqual(state.health.status, UP)
        self.assertTrue(state.health.current(clock.seconds()))

    def test_frozen_during_stall_down_at_fall(self) -> None:
        """
        A server that froze during the agent's stall: its timeouts after
        it are put off twice, and the third in a row decides it down, 1.4 s
        after the agent resumed (interval x (fall - 1) + timeout).
        """
        monitor, clock, probe = up_monitor(self)
        state = monitor.states["a"]
        probe.hang = True
        stall(clock, 2.1)
        resumed = clock.seconds()
        while state.health.status == UP and clock.seconds() - resumed < 5.0:
            clock.advance(0.05)
        self.assertEqual(state.health.status, DOWN)
        self.assertAlmostEqual(clock.seconds() - resumed, 1.4, delta=0.06)
        self.assertEqual(monitor.starved_first_checks, 2)

    def test_refused_after_stall_decides_down(self) -> None:
        """
        A server killed during the agent's stall refuses: down at the first
        check after it, as ever.
        """
        monitor, clock, probe = up_monitor(self)
        probe.result = FAILED
        stall(clock, 2.1)
        self.assertEqual(monitor.states["a"].health.status, DOWN)
        self.assertEqual(monitor.starved_first_checks, 0)

    def test_gap_not_the_agents_decides_down(self) -> None:
        """
        A history stale for a gap the agent did not stall in (its loop
        stopped and started again) is decided anew by one timeout, as
        before.
        """
        monitor, clock, probe = up_monitor(self)
        monitor.stopService()
        clock.advance(2.1)
        probe.hang = True
        monitor.startService()
        clock.advance(TIMEOUT)
        self.assertEqual(monitor.states["a"].health.status, DOWN)
        self.assertEqual(monitor.starved_first_checks, 0)

    def test_stall_shorter_than_the_gap_decides_down(self) -> None:
        """
        A stall that does not account for the whole gap (the agent stalled
        0.3 s, the instance unchecked 2.4 s) excuses nothing.
        """
        monitor, clock, probe = up_monitor(self)
        state = monitor.states["a"]
        monitor.stopService()
        clock.advance(2.1)
        probe.hang = True
        monitor.startService()
        stall(clock, 0.3)
        clock.advance(TIMEOUT)
        self.assertEqual(state.health.status, DOWN)


class ClockStepTests(SynchronousTestCase):
    """The wall clock, which the reactor times by, steps (`sentinel.clocksteps`)."""

    def stepped(self, seconds: float) -> tuple[Monitor, Clock, FakeProbe]:
        """
        An up instance, after a stall of the agent (2.1 s, answered) and
        checks since, then the wall clock stepped by `seconds`, handled
        as the agent does (its calls and loop moved, the histories too).
        """
        monitor, clock, probe = up_monitor(self)
        stall(clock, 2.1)
        run(clock, 4 * INTERVAL)
        self.assertEqual(monitor.starved_first_checks, 0)
        steps = ClockSteps(
            clock,
            lambda: [monitor.loop],
            wall=clock.seconds,
            monotonic=lambda: 0.0,
            boot=lambda: 0.0,
        )
        steps.moved = monitor.clock_stepped
        clock.rightNow += seconds
        steps.look()
        self.assertEqual(steps.steps, 1)
        return monitor, clock, probe

    def test_stalls_before_a_step_back_excuse_nothing_after(self) -> None:
        """
        Stalls recorded before the clock stepped back an hour are not
        counted as if they came after every later check: a history stale
        for a gap the agent did not stall in (its loop stopped) is then
        decided anew by one timeout, as without them. Before, the earlier
        stall excused it, for as long as the clock took to catch up.
        """
        monitor, clock, probe = self.stepped(-3600.0)
        run(clock, 2 * INTERVAL)
        monitor.stopService()
        run(clock, 2.1)
        probe.hang = True
        monitor.startService()
        clock.advance(TIMEOUT)
        self.assertEqual(monitor.states["a"].health.status, DOWN)
        self.assertEqual(monitor.starved_first_checks, 0)

    def test_step_forward_is_no_stall(self) -> None:
        """
        A step forward of the wall clock (its loop's next launch moved with
        it) is no stall of the agent's: nothing new is recorded.
        """
        monitor, clock, _ = self.stepped(3600.0)
        before = monitor.own_stalls.since(clock.seconds() - 10.0)
        run(clock, 2 * INTERVAL)
        self.assertEqual(monitor.own_stalls.since(clock.seconds() - 10.0), before)
