"""
A check that would decide a status directly and times out while the agent
waited for a CPU says nothing (`sentinel.runqueue`); every other failure
decides as before.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock
from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from sentinel.firstchecks import WINDOW
from sentinel.health import DOWN, UP
from sentinel.monitor import Monitor
from sentinel.runqueue import STARVED_SHARE, RunQueueWait, _SchedStat
from tests.fakes import FAILED, FakeProbe, make_monitor
from tests.test_firstchecks import Lines

TIMEOUT = 0.5


class Starvation:
    """A run-queue wait the test adds to by hand, read as the kernel's is."""

    def __init__(self) -> None:
        self.waited = 0.0

    def __call__(self) -> float:
        return self.waited


def starved_monitor(
    case: SynchronousTestCase, hang: bool = True
) -> tuple[Monitor, Clock, FakeProbe, Starvation]:
    """One instance ``a``, hung if `hang`, on a monitor that reads `Starvation`."""
    clock = Clock()
    starvation = Starvation()
    monitor, _, probes, _ = make_monitor(
        ["a"], timeout=TIMEOUT, clock=clock, run_queue=RunQueueWait(clock, starvation)
    )
    probe = probes["a"]
    probe.hang = hang
    monitor.startService()
    case.addCleanup(monitor.stopService)
    return monitor, clock, probe, starvation


# Over and under the share of the timeout the thread may wait.
STARVED = STARVED_SHARE * TIMEOUT + 0.2
FED = STARVED_SHARE * TIMEOUT - 0.05


class FirstCheckStarvedTests(SynchronousTestCase):
    """The first check of an instance, timed out on the agent's CPU."""

    def test_first_timeout_while_starved_decides_nothing(self) -> None:
        """
        A first check that times out while the agent waited 0.325 s of
        its 0.5 s for a CPU leaves the instance unknown, unpublished and
        said as unjudged for that reason; the next check, on time, decides
        it up. (Before: down on that first check, published.)
        """
        monitor, clock, probe, starvation = starved_monitor(self)
        state = monitor.states["a"]
        starvation.waited += STARVED
        clock.advance(TIMEOUT)
        self.assertIsNone(state.health.status)
        self.assertEqual(state.health.checks, 0)
        self.assertEqual(monitor.starved_first_checks, 1)
        self.assertEqual(state.unjudged_since, 0.0)
        self.assertIn("the agent's CPU was short", state.why_unjudged)
        self.assertIn("timeout (ping)", state.why_unjudged)
        probe.hang = False
        clock.advance(1.0 - TIMEOUT)
        self.assertEqual(state.health.status, UP)
        self.assertIsNone(state.unjudged_since)

    def test_first_timeout_with_cpu_decides_down(self) -> None:
        """
        A first check that times out while the agent waited less than the
        share for a CPU decides down at once, as ever: a hung server at
        start-up is found on its first check.
        """
        monitor, clock, _, starvation = starved_monitor(self)
        starvation.waited += FED
        clock.advance(TIMEOUT)
        self.assertEqual(monitor.states["a"].health.status, DOWN)
        self.assertEqual(monitor.starved_first_checks, 0)

    def test_refused_while_starved_decides_down(self) -> None:
        """
        A refused connection is no one's lateness: it decides down on the
        first check however short of CPU the agent was.
        """
        monitor, clock, probe, starvation = starved_monitor(self)
        monitor.stopService()
        probe.hang = False
        probe.result = FAILED
        starvation.waited += 5.0
        monitor.startService()
        self.assertEqual(monitor.states["a"].health.status, DOWN)
        self.assertEqual(monitor.starved_first_checks, 0)

    def test_later_timeout_while_starved_counts_to_fall(self) -> None:
        """
        Once decided, a timeout while starved goes through rise/fall as any
        failure does (one is not `fall`): the rule touches only checks that
        decide directly, and a hung server still goes down in `fall` checks.
        """
        monitor, clock, probe, starvation = starved_monitor(self, hang=False)
        health = monitor.states["a"].health
        self.assertEqual(health.status, UP)
        probe.hang = True
        clock.advance(1.0)
        for _ in range(3):
            starvation.waited += STARVED
            clock.advance(1.0)
        self.assertEqual(health.consecutive_failures, 3)
        self.assertEqual(health.status, DOWN)
        self.assertEqual(monitor.starved_first_checks, 0)

    def test_timeout_after_gap_while_starved_decides_nothing(self) -> None:
        """
        The first check after a stale history decides directly as a first
        one does; timed out while starved, it too says nothing.
        """
        monitor, clock, probe, starvation = starved_monitor(self, hang=False)
        state = monitor.states["a"]
        self.assertEqual(state.health.status, UP)
        monitor.stopService()
        clock.advance(state.health.stale_after + 1.0)
        probe.hang = True
        monitor.startService()
        starvation.waited += STARVED
        clock.advance(TIMEOUT)
        self.assertEqual(state.health.status, UP)
        self.assertFalse(state.health.current(clock.seconds()))
        self.assertEqual(monitor.starved_first_checks, 1)

    def test_fall_starved_first_timeouts_in_a_row_decide_down(self) -> None:
        """
        A hung server's first checks, each timed out while the agent
        waited for a CPU: `fall` - 1 (2) are put off, the instance unknown
        and the reason saying how many; the third decides it down. (Before:
        put off for ever, the instance never decided.)
        """
        monitor, clock, _, starvation = starved_monitor(self)
        state = monitor.states["a"]
        for put_off in (1, 2):
            starvation.waited += STARVED
            clock.advance(TIMEOUT)
            self.assertIsNone(state.health.status)
            self.assertIn(f"put off {put_off} time(s) in a row", state.why_unjudged)
            clock.advance(1.0 - TIMEOUT)
        starvation.waited += STARVED
        clock.advance(TIMEOUT)
        self.assertEqual(state.health.status, DOWN)
        self.assertEqual(state.health.error, "timeout (ping)")
        self.assertEqual(monitor.starved_first_checks, 2)

    def test_after_gap_starved_timeouts_decide_down_at_fall(self) -> None:
        """
        A status gone stale (up) whose checks then time out while the agent
        waits for a CPU stays up for two such checks, and the third in a
        row decides it down; an answer between starts the count again.
        (Before: up for ever, every such check put off.)
        """
        monitor, clock, probe, starvation = starved_monitor(self, hang=False)
        state = monitor.states["a"]
        health = state.health

        def gap_then_starved_timeouts(count: int) -> None:
            monitor.stopService()
            clock.advance(health.stale_after + 1.0)
            probe.hang = True
            monitor.startService()
            for number in range(count):
                if number:
                    clock.advance(1.0 - TIMEOUT)
                starvation.waited += STARVED
                clock.advance(TIMEOUT)

        gap_then_starved_timeouts(2)
        self.assertEqual(health.status, UP)
        self.assertFalse(health.current(clock.seconds()))
        probe.hang = False
        clock.advance(1.0 - TIMEOUT)
        self.assertTrue(health.current(clock.seconds()))
        gap_then_starved_timeouts(2)
        self.assertEqual(health.status, UP)
        clock.advance(1.0 - TIMEOUT)
        starvation.waited += STARVED
        clock.advance(TIMEOUT)
        self.assertEqual(health.status, DOWN)
        self.assertEqual(monitor.starved_first_checks, 4)

    def test_reason_gives_way_to_the_probes(self) -> None:
        """
        The reason is the last check's: a check the probe itself says
        nothing of after a starved one gives the probe's reason.
        """
        monitor, clock, probe, starvation = starved_monitor(self)
        starvation.waited += STARVED
        clock.advance(TIMEOUT)
        state = monitor.states["a"]
        probe.hang = False
        probe.result = None
        probe.why_unjudged = "its connect waits in line for the connection pacer"
        clock.advance(1.0 - TIMEOUT)
        self.assertEqual(state.why_unjudged, probe.why_unjudged)

    def test_summed_up_as_a_warning(self) -> None:
        """The checks put off are said in the summary line, as a warning."""
        lines = Lines(self)
        monitor, clock, _, starvation = starved_monitor(self)
        starvation.waited += STARVED
        clock.advance(TIMEOUT)
        clock.advance(WINDOW)
        self.assertEqual(
            lines.at(LogLevel.warn),
            [
                "1 check(s) that would have decided a status timed out while"
                " the agent waited for a CPU or after its own stall: not"
                " decided, checked again (a)"
            ],
        )


class RunQueueWaitTests(SynchronousTestCase):
    """The sampled wait."""

    def test_waited_since_a_sample(self) -> None:
        """
        The wait from a time is counted from the last sample at or before
        it; before the first sample kept, from that one.
        """
        clock = Clock()
        starvation = Starvation()
        wait = RunQueueWait(clock, starvation)
        self.assertEqual(wait.waited_since(0.0), 0.0)
        wait.sample()
        clock.advance(1.0)
        starvation.waited = 0.4
        wait.sample()
        clock.advance(1.0)
        starvation.waited = 0.5
        self.assertAlmostEqual(wait.waited_since(0.0), 0.5)
        self.assertAlmostEqual(wait.waited_since(1.5), 0.1)
        self.assertAlmostEqual(wait.waited_since(-3.0), 0.5)
        self.assertIsNone(wait.starved_since(1.5, TIMEOUT))
        self.assertAlmostEqual(wait.starved_since(0.0, TIMEOUT) or 0.0, 0.5)

    def test_history_bounded(self) -> None:
        """Samples older than the history are dropped as new ones come."""
        clock = Clock()
        starvation = Starvation()
        wait = RunQueueWait(clock, starvation)
        for _ in range(1000):
            wait.sample()
            clock.advance(0.05)
        self.assertLessEqual(len(wait._samples), 202)

    def test_unreadable_is_no_wait(self) -> None:
        """Where the count cannot be read, no check is put off for it."""
        wait = RunQueueWait(Clock(), lambda: None)
        wait.sample()
        self.assertEqual(wait.waited_since(0.0), 0.0)

    def test_schedstat_second_field(self) -> None:
        """The kernel's line is read as its second field, in ns."""
        path = Path(self.mktemp())
        path.write_bytes(b"123 2500000000 7\n")
        read = _SchedStat(str(path))
        self.addCleanup(read.close)
        self.assertEqual(read(), 2.5)
        self.assertIsNone(_SchedStat(str(path) + ".absent")())
