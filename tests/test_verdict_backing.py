"""A group's verdict says ``checked_at`` of checks that bear its status out."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.groupfakes import DOWN, INTERVAL, UP, Fleet
from tests.test_publisher import REFRESH

STEP = 0.05


class VerdictCheckedAtTests(SynchronousTestCase):
    """The primary's own checks that contradict an ``up`` renew nothing."""

    def test_failures_short_of_fall_renew_no_verdict(self) -> None:
        """
        Two observers see an instance up; its primary's checks fail twice
        in every three (``fall`` is 3: still up) for two refreshes. Each
        verdict written meanwhile (its refreshes) says ``up`` and a
        ``checked_at`` of one of the primary's successes, never of a
        failure: no evidence that it is up. Before, the verdict took the
        primary's last check, whatever it found.
        """
        fleet = Fleet()
        for agent in ("a", "b"):
            fleet.add(agent, ["x"], replicas=2, rise=2, fall=3).start()
        fleet.run(3.0)
        primary = fleet.members[(fleet.node("x") or {})["agent"]]
        health = primary.monitor.states["x"].health
        failed: set[float] = set()
        said: set[float] = set()
        for _ in range(round(2 * REFRESH / (3 * INTERVAL))):
            for observation in (DOWN, DOWN, UP):
                primary.see("x", observation)
                for _ in range(round(INTERVAL / STEP)):
                    fleet.clock.advance(STEP)
                    if health.consecutive_failures and health.checked_at:
                        failed.add(health.checked_at)
                    document = fleet.node("x") or {}
                    self.assertEqual(document["status"], "up")
                    said.add(document["checked_at"])
        self.assertEqual(health.status, "up")
        self.assertGreater(len(said), 2)
        self.assertTrue(failed)
        self.assertEqual(said & failed, set())
