"""
The membership's audit (`sentinel.membership`, "Auditing the view"):
each agent compares its view's child version of {root}/catalogs with
ZooKeeper's every `AUDIT_EVERY` seconds, lists again a change that no
watch told of, and /healthz fails while the view is known behind.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sentinel.membership import AUDIT_EVERY, BEHIND_AFTER, LISTING_PACE_LIMIT, SETTLE
from tests.groupfakes import ROOT, Fleet, Member
from tests.test_group import group_report


class AuditTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.fleet = Fleet()
        self.a = self.fleet.add("a", ["x", "y"]).start()
        self.b = self.fleet.add("b", ["x", "y"]).start()
        self.fleet.run(2)
        self.assertEqual(set(self.a.group.membership.view), {"a", "b"})

    def view_of(self, member: Member) -> set[str]:
        return set(member.group.membership.view)

    def test_lost_watch_listed_by_audit(self) -> None:
        """
        A member that joins after this agent's children watch was lost
        (no event told of it) is seen by the audit within two audits,
        and counted as missed; before, it was never seen.
        """
        self.a.zk.lose_watches()
        self.fleet.add("c", ["x", "y"]).start()
        self.fleet.run(1)
        self.assertEqual(self.view_of(self.b), {"a", "b", "c"})
        self.assertEqual(self.view_of(self.a), {"a", "b"})
        self.fleet.run(2 * AUDIT_EVERY + 1)
        self.assertEqual(self.view_of(self.a), {"a", "b", "c"})
        membership = self.a.group.membership
        self.assertEqual(membership.missed, 1)
        self.assertIsNone(membership.behind_seconds())
        report = group_report(self.a.group)
        self.assertEqual(report["missed_changes"], 1)
        self.assertIsNone(report["view_behind_seconds"])
        self.assertIsNone(self.a.group.unhealthy_reason())

    def test_changes_told_are_not_missed(self) -> None:
        """
        Joins and leaves told by the watch are never counted as missed,
        nor listed again by the audit: in a quiet group it costs one
        ``exists`` per audit and no listing.
        """
        c = self.fleet.add("c", ["x", "y"]).start()
        self.fleet.run(AUDIT_EVERY * 3)
        c.stop()
        self.fleet.run(AUDIT_EVERY * 3)
        self.assertEqual(self.view_of(self.a), {"a", "b"})
        membership = self.a.group.membership
        listings = membership.listings
        exists = self.a.zk.calls_by_path["exists", membership.path]
        self.fleet.run(AUDIT_EVERY * 10)
        self.assertEqual(membership.listings, listings)
        self.assertEqual(
            self.a.zk.calls_by_path["exists", membership.path] - exists, 10
        )
        self.assertEqual(membership.missed, 0)
        self.assertGreater(membership.audits, 10)

    def test_behind_fails_healthz(self) -> None:
        """
        While the view stays known behind ZooKeeper (here its listing
        hangs after a lost watch) for `BEHIND_AFTER` seconds, /healthz
        says so, with both versions; it is 200 again once the view
        catches up, and /group says for how long it was behind meanwhile.
        """
        self.a.zk.lose_watches()
        self.fleet.add("c", ["x", "y"]).start()
        self.a.zk.hang("get_children")
        self.fleet.run(AUDIT_EVERY * 2 + 1)
        reason = self.a.group.unhealthy_reason() or ""
        self.assertNotIn("behind ZooKeeper", reason)
        self.assertIsNotNone(group_report(self.a.group)["view_behind_seconds"])
        self.fleet.run(BEHIND_AFTER)
        reason = self.a.group.unhealthy_reason() or ""
        self.assertIn("view of the membership has been behind ZooKeeper", reason)
        self.assertRegex(reason, r"/catalogs at child version \d+, the view at \d+")
        self.a.zk.unhang()
        self.a.zk.release()
        self.fleet.run(AUDIT_EVERY * 2 + 2)
        self.assertEqual(self.view_of(self.a), {"a", "b", "c"})
        self.assertIsNone(self.a.group.unhealthy_reason())
        self.assertIsNone(group_report(self.a.group)["view_behind_seconds"])

    def test_audit_answered_after_stop_lists_nothing(self) -> None:
        """
        An audit whose answer comes after the membership stopped (the
        agent leaving) lists nothing, though it finds the view behind.
        """
        self.a.zk.lose_watches()
        self.fleet.add("c", ["x", "y"]).start()
        self.fleet.run(AUDIT_EVERY + 0.1)
        self.a.zk.hold_answers("exists")
        self.fleet.run(AUDIT_EVERY)
        membership = self.a.group.membership
        membership.stop()
        listings = self.a.zk.calls["get_children"]
        self.a.zk.unhang()
        self.a.zk.release()
        self.fleet.run(1)
        self.assertEqual(self.a.zk.calls["get_children"], listings)
        self.assertEqual(membership.missed, 0)


class ChurnTests(SynchronousTestCase):
    """A group whose membership changes during each of an agent's listings."""

    def setUp(self) -> None:
        self.fleet = Fleet()
        server = self.fleet.server
        # Children no listing takes for a catalog, but which make each
        # listing long enough to be paced past the settle time.
        for i in range(600):
            server.put(f"{ROOT}/catalogs/filler-{i:04d}-{'x' * 30}", b"")
        self.a = self.fleet.add("a", ["x", "y"]).start()
        self.b = self.fleet.add("b", ["x", "y"]).start()
        self.fleet.run(8)
        self.assertEqual(set(self.a.group.membership.view), {"a", "b"})
        self.assertGreater(self.a.group.membership._pace(), SETTLE)

    def churn_during_listings(self) -> None:
        """From now on, a child comes under {root}/catalogs in each listing."""
        zk, server = self.a.zk, self.fleet.server
        listed = zk.children_and_stat
        made = iter(range(10**6))

        def children_and_stat(path: str, watch: Any, ahead: bool = False) -> Any:
            d = listed(path, watch, ahead)
            server.put(f"{ROOT}/catalogs/churn-{next(made):06d}", b"")
            return d

        zk.children_and_stat = children_and_stat  # type: ignore[method-assign]

    def test_view_applied_while_changes_keep_coming(self) -> None:
        """
        A member that joins while a change comes during each of this
        agent's listings is in its view within `LISTING_PACE_LIMIT`, the
        pace and the settle time: before, each view waited for a listing
        that no change came during, and none came, for as long as the
        changes did (a rolling deploy: views 14.5 s old at the median,
        all the deploy's 30 s at most).
        """
        self.churn_during_listings()
        self.fleet.add("c", ["x", "y"]).start()
        self.fleet.run(LISTING_PACE_LIMIT + 2 * self.a.group.membership._pace() + 1)
        self.assertEqual(set(self.a.group.membership.view), {"a", "b", "c"})
        self.assertIsNone(self.a.group.unhealthy_reason())
