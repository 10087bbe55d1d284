"""
Start-up at scale, in memory: inconclusive checks change nothing, a dead
instance is still found, nothing builds up while thousands wait to connect,
and /healthz and /debug/stats say what start-up is doing.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.application.service import IServiceCollection
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import agent
from sentinel.config import Config, RedisInstance
from sentinel.health import DOWN
from sentinel.monitor import Monitor, NullPublisher, Settings
from sentinel.pacing import BEAT, ConnectPacer
from sentinel.probe import RedisProbe
from sentinel.resolve import Resolver
from sentinel.startup import StartupReport
from sentinel.tracker import PendingTracker
from tests.fakes import FAILED, OK, make_monitor
from tests.httptest import agent_get


class InconclusiveTests(SynchronousTestCase):
    """What the monitor does with a check the agent did not get to."""

    def test_kept_state_and_counted(self) -> None:
        """
        Inconclusive checks publish nothing and leave the status as it was
        (unknown at start, up after a handoff would keep it); they are
        counted apart from checks and failures.
        """
        monitor, clock, probes, publisher = make_monitor(["a", "b"])
        probes["a"].result = probes["b"].result = None
        monitor.startService()
        for _ in range(3):
            clock.advance(1.0)
        self.assertEqual(publisher.published, [])
        self.assertEqual((monitor.checks, monitor.failures), (0, 0))
        self.assertEqual(monitor.inconclusive, 8)
        self.assertIsNone(monitor.states["a"].health.status)
        probes["a"].result = OK
        clock.advance(1.0)
        self.assertEqual(monitor.states["a"].health.status, "up")
        probes["a"].result = None
        clock.advance(1.0)
        self.assertEqual(monitor.states["a"].health.status, "up")

    def test_dead_instance_down_once_looked_at(self) -> None:
        """
        An instance whose first checks were inconclusive is down at the
        first failed check the agent does get to run.
        """
        monitor, clock, probes, _ = make_monitor(["a"])
        probes["a"].result = None
        monitor.startService()
        clock.advance(2.0)
        probes["a"].result = FAILED
        clock.advance(1.0)
        self.assertEqual(monitor.states["a"].health.status, DOWN)


class BoundedTests(SynchronousTestCase):
    """Thousands waiting to connect: nothing grows, every check ends."""

    def test_nothing_builds_up(self) -> None:
        """
        2,000 instances whose connections never complete, one pacer with 20
        slots, 30 rounds on an on-time reactor: attempts in flight stay
        within the cap, none waits in line (they are turned away, not
        queued), checks in flight are at most one per instance, pacer
        timers at most one, and once stopped nothing is left pending.
        """
        reactor = MemoryReactorClock()
        pacer = ConnectPacer(reactor, 20, 0.5)
        resolver = Resolver(reactor)
        settings = Settings(
            interval=1.0, timeout=0.5, rise=2, fall=3, info_every=10, slices=20
        )

        def probe_for(instance: RedisInstance) -> RedisProbe:
            return RedisProbe(instance, reactor, pacer, 0.5, resolver)

        monitor = Monitor(
            reactor, settings, probe_for, NullPublisher(), PendingTracker()
        )
        for i in range(2000):
            monitor.add_instance(RedisInstance(f"r{i}", "127.0.0.1", 7000))
        pacer.startService()
        monitor.startService()
        most_in_flight = most_pending = 0
        for _ in range(30):
            for _ in range(round(1.0 / BEAT)):
                reactor.advance(BEAT)
                most_in_flight = max(most_in_flight, pacer.in_flight)
                most_pending = max(most_pending, len(monitor.tracker))
        self.assertLessEqual(most_in_flight, 20)
        self.assertLessEqual(most_pending, 2000)
        self.assertEqual(pacer.waiting, 0)
        self.assertGreater(pacer.turned_away, 0)
        # Connects that never complete fail on their own bound, on time:
        # those are real failures, reported.
        self.assertGreater(monitor.failures, 0)
        stopped = monitor.stopService()
        pacer.stopService()
        # The probes closed 500 a turn, after the pacer's stop (as in the agent).
        reactor.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(len(monitor.tracker), 0)
        self.assertEqual(pacer.in_flight, 0)
        self.assertEqual(reactor.getDelayedCalls(), [])


class _Unwalkable(dict[str, Any]):
    """A mapping whose size can be read, not its instances."""

    def __iter__(self) -> Any:
        raise AssertionError("every instance walked")

    def values(self) -> Any:
        raise AssertionError("every instance walked")

    def items(self) -> Any:
        raise AssertionError("every instance walked")


class NotLookedAtTests(SynchronousTestCase):
    """How many instances wait for a first look, as /healthz asks it."""

    def test_counted_without_walking_the_instances(self) -> None:
        """
        The instances not looked at yet are counted from the monitor's
        counts, whatever decides, removes or replaces them: /healthz,
        asked at any rate, never walks every instance.
        """
        monitor, clock, probes, _ = make_monitor(["a", "b", "c"])
        probes["c"].result = None  # The agent does not get to look.
        monitor.startService()
        report = StartupReport(monitor, ConnectPacer(clock, 20, 0.5))
        states = monitor.states
        monitor.states = _Unwalkable(states)
        self.assertEqual(report.not_looked_at(), 1)
        self.assertEqual(
            report.progress(),
            {
                "instances_not_looked_at": 1,
                "connects_queued": 0,
                "connects_in_flight": 0,
            },
        )
        monitor.states = states
        monitor.remove_instance("a")
        monitor.replace_instance(RedisInstance("b", "127.0.0.1", 7200))
        monitor.states = _Unwalkable(states)
        self.assertEqual(report.not_looked_at(), 2)
        monitor.states = states
        probes["c"].result = OK
        monitor.add_instance(RedisInstance("d", "127.0.0.1", 7300))
        clock.advance(1.0)
        monitor.states = _Unwalkable(states)
        self.assertEqual(report.not_looked_at(), 0)
        self.assertIsNone(report.progress())
        monitor.states = states


class ReportTests(SynchronousTestCase):
    """What /healthz and /debug/stats say about start-up."""

    def get(self, top: Any, path: str) -> tuple[int, Any]:
        return agent_get(self, top, path)

    def test_starting_then_settled(self) -> None:
        """
        While an instance has not been looked at, /healthz is 200 and says
        so under ``starting``; once every instance has, ``starting`` is
        gone. /debug/stats has the ``startup`` counters throughout.
        """
        reactor = MemoryReactorClock()
        config = Config(
            instances=(RedisInstance("a", "127.0.0.1", 6379),), agent_id="me"
        )
        top = agent.make_agent(config, None, reactor)
        monitor = cast(Monitor, IServiceCollection(top).getServiceNamed("monitor"))
        top.startService()
        self.addCleanup(top.stopService)
        code, body = self.get(top, "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(body["starting"]["instances_not_looked_at"], 1)
        stats = self.get(top, "/debug/stats")[1]["startup"]
        self.assertEqual(stats["instances_not_looked_at"], 1)
        self.assertIn("connects_in_flight", stats)
        self.assertIn("tick_lag_max_seconds", stats)
        # A check recorded as the monitor records it (it keeps the counts).
        now = reactor.seconds()
        monitor._record(monitor.states["a"], OK, now, now)
        code, body = self.get(top, "/healthz")
        self.assertEqual((code, body), (200, {"status": "ok"}))
