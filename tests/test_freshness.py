"""Published status the agent no longer keeps fresh turns /healthz to 503."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.freshness import RESCAN_AFTER, Freshness, stale_after, unjudged_after
from sentinel.health import UP
from sentinel.observation import Replication
from sentinel.runqueue import RunQueueWait
from tests.fakes import OK, make_monitor
from tests.test_runqueue import STARVED, TIMEOUT, Starvation


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

    def test_checked_since_the_scan_is_not_reported(self) -> None:
        """
        An instance found stale by a scan and checked since (the agent
        back from a pause of its own) is not reported until the next scan:
        /healthz, asked between two scans, looks again (before, it stayed
        503 up to a second with every instance checked).
        """
        self.probes["b"].result = None
        for _ in range(10):
            self.clock.advance(1.0)
        self.assertIsNotNone(self.freshness.unhealthy_reason())
        # No scan from now on: what follows happens between two scans.
        self.freshness.timer.stopService()
        self.probes["b"].result = self.probes["a"].result
        self.clock.advance(1.0)
        self.assertIsNone(self.freshness.unhealthy_reason())
        self.assertEqual(self.freshness.stats()["stale_instances"], 0)

    def test_answers_in_a_loop_scan_once_a_tenth_of_a_second(self) -> None:
        """
        While a scan found instances, /healthz asked in a loop scans again
        at most once per `RESCAN_AFTER`, however many answers it gets:
        before, each answer scanned every instance (3--5 ms at 19,000), so
        a client looping on /healthz made the agent, already behind on its
        checks, scan at every answer. An instance checked since is still
        not reported once `RESCAN_AFTER` has passed.
        """
        self.probes["b"].result = None
        for _ in range(10):
            self.clock.advance(1.0)
        self.freshness.timer.stopService()
        scans = []
        scan = self.freshness.scan

        def counted() -> None:
            scans.append(self.clock.seconds())
            scan()

        self.freshness.scan = counted  # type: ignore[method-assign]
        for _ in range(1000):
            self.assertIsNotNone(self.freshness.unhealthy_reason())
            self.clock.advance(0.001)
        self.assertLessEqual(len(scans), 11)
        self.probes["b"].result = self.probes["a"].result
        self.clock.advance(1.0)
        self.clock.advance(RESCAN_AFTER)
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


class DoubtedTests(SynchronousTestCase):
    """A status said up whose timeouts are put off for the agent's CPU."""

    def test_up_with_starved_timeouts_put_off_fails_healthz(self) -> None:
        """
        An instance up, then unchecked past its history's bound, whose
        next check times out while the agent waited for a CPU (put off,
        `sentinel.runqueue`) still says up: /healthz fails at the next
        scan, naming it and why, well before the stale bound (7 s), and
        recovers once a check is recorded. (Before: 200 until the stale
        bound, the frozen server's instances published up meanwhile.)
        """
        clock = Clock()
        starvation = Starvation()
        monitor, _, probes, _ = make_monitor(
            ["a", "b"], clock=clock, run_queue=RunQueueWait(clock, starvation)
        )
        freshness = Freshness(clock, lambda: monitor.states, lambda: monitor.settings)
        monitor.startService()
        freshness.timer.startService()
        self.addCleanup(freshness.timer.stopService)
        self.addCleanup(monitor.stopService)
        health = monitor.states["a"].health
        self.assertEqual(health.status, UP)
        monitor.stopService()
        clock.advance(health.stale_after + 0.5)
        probes["a"].hang = True
        monitor.startService()
        starvation.waited += STARVED
        clock.advance(TIMEOUT)
        freshness.scan()  # The next second's.
        self.assertEqual(health.status, UP)
        self.assertLess(clock.seconds() - (health.checked_at or 0.0), 7.0)
        reason = freshness.unhealthy_reason() or ""
        self.assertIn(
            "1 instance(s) said up whose checks time out, put off while the"
            " agent waits for a CPU (the oldest ",
            reason,
        )
        self.assertIn(": a; a: the agent's CPU was short", reason)
        self.assertIn("until 3 such timeouts in a row decide them", reason)
        self.assertEqual(freshness.stats()["doubted_instances"], 1)
        probes["a"].hang = False
        clock.advance(1.0)
        self.assertIsNone(freshness.unhealthy_reason())
