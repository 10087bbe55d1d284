"""Published status the agent no longer keeps fresh turns /healthz to 503."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.freshness import Freshness, stale_after, unjudged_after
from sentinel.observation import Replication
from tests.fakes import OK, make_monitor


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

    def test_undecided_instances_are_unjudged_not_stale(self) -> None:
        """
        An instance never decided (its checks all inconclusive since it was
        added) has published nothing: it is not stale, but unjudged, and
        /healthz fails once it has been watched for `unjudged_after`
        without a judgement, by its own time (no /healthz asked before),
        naming it, how long, and why its checks say nothing. Before, it
        was counted nowhere here, and start-up's report counted from the
        first /healthz answer that found instances waiting: 200 then.
        """
        bound = unjudged_after(self.monitor.settings)
        self.assertEqual(bound, 10.0)
        self.monitor.add_instance(RedisInstance("d", "127.0.0.1", 7100))
        self.probes["d"].result = None
        self.probes["d"].why_unjudged = "held back, say"
        for _ in range(int(bound)):
            self.clock.advance(1.0)
        self.assertIsNone(self.freshness.unhealthy_reason())
        self.clock.advance(1.0)
        self.assertIsNone(self.monitor.states["d"].health.status)
        self.assertEqual(
            self.freshness.unhealthy_reason(),
            "1 instance(s) never judged in over 10 s since watched (the oldest"
            " 11.0 s: d; d: held back, say): nothing of theirs is published by"
            " this agent (their nodes missing for readers, or another's)",
        )
        stats = self.freshness.stats()
        self.assertEqual(stats["stale_instances"], 0)
        self.assertEqual(stats["unjudged_instances"], 1)
        self.assertEqual(stats["oldest_unjudged_seconds"], 11.0)
        self.probes["d"].result = OK
        self.clock.advance(1.0)
        self.assertIsNone(self.freshness.unhealthy_reason())
        self.assertEqual(self.freshness.stats()["unjudged_instances"], 0)

    def test_inherited_status_never_checked_is_unjudged(self) -> None:
        """
        A status inherited from a previous primary (a group's takeover) is
        not this agent's judgement: never checked here, the instance is
        unjudged past the bound. Before, it was neither stale (no
        ``checked_at``) nor waiting for a first look (decided).
        """
        self.monitor.add_instance(RedisInstance("d", "127.0.0.1", 7100))
        self.probes["d"].result = None
        self.monitor.inherit("d", "up", True, Replication(role="master"))
        self.assertEqual(self.monitor.states["d"].health.status, "up")
        for _ in range(int(unjudged_after(self.monitor.settings)) + 1):
            self.clock.advance(1.0)
        self.assertIn(
            "1 instance(s) never judged in over 10 s since watched (the oldest"
            " 11.0 s: d;",
            self.freshness.unhealthy_reason() or "",
        )

    def test_stale_and_unjudged_both_said(self) -> None:
        """
        An instance judged, then silent, is stale past its bound (and the
        reason says why its checks say nothing); one never judged beside it
        is unjudged: both reasons are given.
        """
        self.monitor.add_instance(RedisInstance("d", "127.0.0.1", 7100))
        self.probes["d"].result = None
        self.clock.advance(1.0)
        self.probes["b"].result = None
        self.probes["b"].why_unjudged = "its connect waits in line"
        for _ in range(10):
            self.clock.advance(1.0)
        reason = self.freshness.unhealthy_reason() or ""
        self.assertIn(
            "1 instance(s) not checked for over 7 s (the oldest 10.0 s: b; b: its"
            " connect waits in line): the agent cannot keep up",
            reason,
        )
        self.assertIn("; 1 instance(s) never judged in over 10 s", reason)

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
        self.assertIn(": s7, s6, s5, s4, s3 and 3 more; s7: not checked yet)", reason)
