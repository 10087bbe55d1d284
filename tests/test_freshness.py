"""Published status the agent no longer keeps fresh turns /healthz to 503."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.freshness import Freshness, stale_after
from tests.fakes import make_monitor


class FreshnessTests(SynchronousTestCase):
    """An instance whose checks stop recording goes stale after the bound."""

    def setUp(self) -> None:
        self.monitor, self.clock, self.probes, _ = make_monitor(
            ["a", "b", "c"], interval=1.0, timeout=0.5, fall=3
        )
        self.clock.advance(1000.0)
        self.freshness = Freshness(
            self.clock, lambda: self.monitor.states, lambda: self.monitor.settings
        )
        self.monitor.startService()
        self.freshness.timer.startService()
        self.addCleanup(self.freshness.timer.stopService)
        self.addCleanup(self.monitor.stopService)

    def test_inconclusive_checks_go_stale(self) -> None:
        """
        While every check records, nothing is stale; once one instance's
        checks end inconclusive (the agent could not serve them: None),
        /healthz fails after 2 x (interval x fall + timeout), naming the
        count and the age, and recovers with its next recorded check.
        """
        bound = stale_after(self.monitor.settings)
        self.assertEqual(bound, 7.0)
        for _ in range(10):
            self.clock.advance(1.0)
        self.assertIsNone(self.freshness.unhealthy_reason())
        self.probes["b"].result = None  # The agent did not get to look.
        for _ in range(int(bound)):
            self.clock.advance(1.0)
        self.assertIsNone(self.freshness.unhealthy_reason())
        for _ in range(2):
            self.clock.advance(1.0)
        reason = self.freshness.unhealthy_reason()
        self.assertIsNotNone(reason)
        self.assertIn("1 instance(s) not checked for over 7 s", reason or "")
        self.assertEqual(self.freshness.stats()["stale_instances"], 1)
        self.probes["b"].result = self.probes["a"].result
        for _ in range(2):
            self.clock.advance(1.0)
        self.assertIsNone(self.freshness.unhealthy_reason())

    def test_undecided_instances_are_not_stale(self) -> None:
        """
        An instance never decided (its checks all inconclusive since it was
        added) has published nothing: it is unknown, not stale.
        """
        self.monitor.add_instance(RedisInstance("d", "127.0.0.1", 7100))
        self.probes["d"].result = None
        for _ in range(30):
            self.clock.advance(1.0)
        self.assertIsNone(self.monitor.states["d"].health.status)
        self.assertIsNone(self.freshness.unhealthy_reason())
        self.assertEqual(self.freshness.stats()["stale_instances"], 0)

    def test_oldest_stale_named(self) -> None:
        """
        The reason names the oldest stale instances, at most `NAMED` of
        them, and says how many more there are: an operator finds them
        (in a group, among the verdicts this agent writes).
        """
        for i in range(8):
            self.monitor.add_instance(RedisInstance(f"s{i}", "127.0.0.1", 7200 + i))
        for _ in range(3):
            self.clock.advance(1.0)
        # s7 stops recording first, then s6, ... then s0: s7 is the oldest.
        for i in reversed(range(8)):
            self.probes[f"s{i}"].result = None
            self.clock.advance(1.0)
        for _ in range(int(stale_after(self.monitor.settings)) + 1):
            self.clock.advance(1.0)
        reason = self.freshness.unhealthy_reason() or ""
        self.assertIn("8 instance(s) not checked for over 7 s", reason)
        self.assertIn(": s7, s6, s5, s4, s3 and 3 more)", reason)
