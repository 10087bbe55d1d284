"""
A group member's start before the group's first view (`sentinel.group`,
DESIGN.md section 2.4: checking never waits on publishing), on a Clock
with the in-memory ZooKeeper of `tests.groupfakes`: with ZooKeeper not
connected it checks every instance it knows at once and publishes none;
with ZooKeeper connected it waits for the view, as before.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from sentinel.group import CONNECT_WAIT, PRIMARY
from sentinel.health import UP
from sentinel.membership import SETTLE
from sentinel.stopping import STOP_DELETE_TIMEOUT
from tests.groupfakes import INTERVAL, ROOT, Fleet, Member
from tests.test_group import group_report, handoffs

NAMES = [f"r{i:02d}" for i in range(30)]
# The default wait for a first view once connected: the session timeout.
FIRST_VIEW_WAIT = 10.0
# Past the connect wait and the first tick after it.
CHECKED_BY = CONNECT_WAIT + INTERVAL + 0.1


def started_unreachable(member: Member) -> Member:
    """`member` started with its ZooKeeper never answering (not connected)."""
    member.publisher.startService()
    member.monitor.startService()
    return member


def writes_to(member: Member, names: set[str]) -> int:
    """The creates, sets and replaces `member` sent to the nodes of `names`."""
    return sum(
        member.zk.calls_by_path[kind, f"{ROOT}/instances/{name}"]
        for kind in ("create", "set", "replace")
        for name in names
    )


class UnreachableAtStartTests(SynchronousTestCase):
    """ZooKeeper not connected when a group member starts."""

    def test_checks_everything_known_at_once(self) -> None:
        """
        A member whose ZooKeeper is not connected `CONNECT_WAIT` after
        start checks every instance it knows from the next tick (it
        checked nothing for the whole session timeout), and /healthz says
        why, and that nothing is published meanwhile.
        """
        fleet = Fleet()
        member = started_unreachable(fleet.add("a", NAMES))
        fleet.run(CONNECT_WAIT - 0.1)
        self.assertEqual(member.watched, set())
        fleet.run(CHECKED_BY - CONNECT_WAIT + 0.1)
        self.assertEqual(member.watched, set(NAMES))
        self.assertTrue(
            all(s.health.status == UP for s in member.monitor.states.values())
        )
        reason = member.group.unhealthy_reason() or ""
        self.assertIn("ZooKeeper not connected", reason)
        self.assertIn(
            f"checking every instance this agent knows ({len(NAMES)})", reason
        )
        self.assertIn("publishing none", reason)

    def test_first_view_lets_go_what_others_observe(self) -> None:
        """
        When ZooKeeper connects, the first view applies: the instances
        another member observes are let go (their probes closed), those
        this member observes keep their state (no decision made again),
        and it writes no node of an instance another member is primary of.
        """
        fleet = Fleet()
        other = fleet.add("b", NAMES).start()
        fleet.run(2.0)
        member = started_unreachable(fleet.add("a", NAMES))
        fleet.run(CHECKED_BY + 2 * INTERVAL)
        states = dict(member.monitor.states)
        probes = dict(member.probes)
        checks = {name: state.health.checks for name, state in states.items()}
        member.zk.connect()
        fleet.run(SETTLE + 2 * INTERVAL)
        mine = {n for n in NAMES if member.group.role(n) == PRIMARY}
        theirs = set(NAMES) - mine
        self.assertTrue(mine and theirs)
        self.assertEqual(member.watched, mine)
        for name in mine:
            self.assertIs(member.monitor.states[name], states[name])
            self.assertGreater(states[name].health.checks, checks[name])
            self.assertEqual(fleet.owner_of(name), fleet.session_of("a"))
        for name in theirs:
            self.assertTrue(probes[name].closed)
            self.assertEqual(fleet.owner_of(name), fleet.session_of("b"))
        self.assertEqual(writes_to(member, theirs), 0)
        self.assertIsNone(member.group.unhealthy_reason())
        del other

    def test_long_outage_publishes_nothing_of_others(self) -> None:
        """
        ZooKeeper unreachable for longer than the wait for a first view:
        the member does not take a view of itself alone (its nodes marked
        for every instance it knows, written as their primary as soon as
        ZooKeeper answered, before the first listing): once connected, it
        writes no node of the instances another member is primary of.
        """
        fleet = Fleet()
        fleet.add("b", NAMES).start()
        fleet.run(2.0)
        member = started_unreachable(fleet.add("a", NAMES))
        fleet.run(FIRST_VIEW_WAIT + 2.0)
        self.assertEqual(member.watched, set(NAMES))
        member.zk.connect()
        fleet.run(SETTLE + 2 * INTERVAL)
        theirs = {n for n in NAMES if member.group.role(n) is None}
        self.assertTrue(theirs)
        self.assertEqual(writes_to(member, theirs), 0)
        self.assertEqual(member.watched, set(NAMES) - theirs)

    def test_lost_before_the_first_view(self) -> None:
        """
        ZooKeeper connected, then lost before any view came: at the end of
        the wait for a first view the member checks provisionally, not as
        a group of one (whose nodes it would write on reconnecting).
        """
        fleet = Fleet()
        member = fleet.add("a", NAMES)
        member.zk.hang("get_children")
        member.start()
        fleet.run(2.0)
        self.assertEqual(member.watched, set())
        member.zk.suspend()
        fleet.run(FIRST_VIEW_WAIT)
        self.assertEqual(member.watched, set(NAMES))
        self.assertTrue(member.group.provisional)
        self.assertEqual(
            [name for name in NAMES if member.group.role(name) is not None], []
        )

    def test_group_and_instances_say_provisional(self) -> None:
        """
        While checking provisionally, ``GET /group`` says so (since when,
        why) and counts every instance known as observed, not none of
        them unobserved, in its own member row too, and ``GET /instances``
        gives each the role ``provisional``, not null; once the first view
        applies, both say the roles it gives, and ``provisional`` is false
        again.
        """
        fleet = Fleet()
        fleet.add("b", NAMES).start()
        fleet.run(2.0)
        member = started_unreachable(fleet.add("a", NAMES))
        started = member.clock.seconds()
        fleet.run(CHECKED_BY)
        report = group_report(member.group)
        self.assertEqual(
            (report["provisional"], report["observing"], report["unobserved"]),
            (True, len(NAMES), 0),
        )
        # This agent's own row agrees (it said 0 beside the top's count).
        self.assertEqual(
            [(row["agent"], row["observing"]) for row in report["members"]],
            [("a", len(NAMES))],
        )
        self.assertEqual(report["primary"], 0)
        self.assertEqual(report["provisional_why"], "ZooKeeper not connected")
        self.assertApproximates(
            report["provisional_since"], started + CONNECT_WAIT, 0.1
        )
        self.assertEqual(
            {member.group.instance_view(n)["observing_as"] for n in NAMES},
            {"provisional"},
        )
        self.assertTrue(member.group.summary()["provisional"])
        member.zk.connect()
        fleet.run(SETTLE + 2 * INTERVAL)
        report = group_report(member.group)
        mine = {n for n in NAMES if member.group.role(n) is not None}
        self.assertEqual(
            (report["provisional"], report["provisional_since"]), (False, None)
        )
        self.assertEqual(report["observing"], len(mine))
        self.assertEqual(
            {n: member.group.instance_view(n)["observing_as"] for n in mine},
            {n: member.group.role(n) for n in mine},
        )

    def test_reload_while_provisional(self) -> None:
        """
        A reload while checking provisionally: an instance added is
        checked, one removed is no longer.
        """
        fleet = Fleet()
        member = started_unreachable(fleet.add("a", NAMES))
        fleet.run(CHECKED_BY)
        added = fleet.add("x", ["new"]).group.known["new"]
        member.group.change_instances(["r00"], [], [added])
        fleet.run(INTERVAL)
        self.assertEqual(member.watched, set(NAMES[1:]) | {"new"})


class ReachableAtStartTests(SynchronousTestCase):
    """ZooKeeper connected when a group member starts: no burst."""

    def test_waits_for_the_first_view(self) -> None:
        """
        Connected, a member checks nothing until the first view (a view of
        itself alone would take every instance for a moment), however
        long the listing takes, up to the wait for a first view; then it
        observes everything it knows, alone.
        """
        fleet = Fleet()
        member = fleet.add("a", NAMES)
        member.zk.hang("get_children")
        member.start()
        fleet.run(FIRST_VIEW_WAIT - 0.5)
        self.assertEqual(member.watched, set())
        self.assertFalse(member.group.provisional)
        reason = member.group.unhealthy_reason() or ""
        self.assertIn("membership not known yet; observing nothing", reason)
        fleet.run(1.0 + INTERVAL)
        self.assertEqual(member.watched, set(NAMES))
        self.assertEqual(member.group.role(NAMES[0]), PRIMARY)

    def test_only_its_share_is_ever_checked(self) -> None:
        """
        A member joining a live group, ZooKeeper connected, starts
        checking its share only: nothing else is ever checked.
        """
        fleet = Fleet()
        fleet.add("b", NAMES).start()
        fleet.run(2.0)
        member = fleet.add("a", NAMES).start()
        fleet.run(SETTLE + 3 * INTERVAL)
        mine = {n for n in NAMES if member.group.role(n) is not None}
        self.assertEqual(set(member.probes), mine)


class InheritedSessionTests(SynchronousTestCase):
    """
    A restart with a state_dir while ZooKeeper is unreachable: the new
    process checks provisionally, then reattaches to the session its
    previous process left, whose nodes are its own.
    """

    def test_first_view_leaves_inherited_nodes_for_their_primary(self) -> None:
        """
        The instances let go when the first view comes were never published
        by this process: the nodes its previous process left of those now
        another member's (b joined meanwhile) stay for that member's
        takeover, as on a start that observed none of them. Before, each
        went through the publisher's removal: the inherited node was
        deleted, missing (read every 50 ms here) until b made it again.
        """
        fleet = Fleet()
        handoff = handoffs(fleet, os.path.abspath(self.mktemp()))
        a = fleet.add("a", NAMES, handoff=handoff()).start()
        fleet.run(SETTLE + 2 * INTERVAL)
        session = a.zk.session_id
        self.assertTrue(all(fleet.owner_of(n) == session for n in NAMES))
        stopped = a.stop()
        fleet.run(STOP_DELETE_TIMEOUT)
        self.successResultOf(stopped)
        fleet.server.drop(a.zk)
        again = started_unreachable(fleet.add("a", NAMES, handoff=handoff()))
        fleet.run(CHECKED_BY + INTERVAL)
        self.assertEqual(again.watched, set(NAMES))
        b = fleet.add("b", NAMES).start()
        again.zk.connect()
        self.assertEqual(again.zk.session_id, session)
        missing: set[str] = set()
        for _ in range(int((SETTLE + 4 * INTERVAL) / 0.05)):
            fleet.run(0.05)
            missing.update(n for n in NAMES if fleet.node(n) is None)
        theirs = {n for n in NAMES if b.group.role(n) == PRIMARY}
        self.assertTrue(theirs)
        self.assertEqual(again.watched, set(NAMES) - theirs)
        self.assertEqual(missing, set())
        deleted = sum(
            again.zk.calls_by_path["delete", f"{ROOT}/instances/{name}"]
            for name in theirs
        )
        self.assertEqual(deleted, 0)
        self.assertTrue(all(fleet.owner_of(n) == b.zk.session_id for n in theirs))
