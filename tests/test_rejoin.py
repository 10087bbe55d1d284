"""
A member of a group back on a new session after its own expired
(`Membership.rejoin`): it takes no node over before the others' views
hold it again, and makes only the nodes of its own share that are
missing meanwhile (`Membership.returning`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from sentinel.documents import SERVERSET
from sentinel.membership import LISTING_FAILING_AFTER, SETTLE
from sentinel.zk import REPLACE_SPREAD
from tests.groupfakes import DISCOVERY, ROOT, Fleet, Member
from tests.test_publisher import REFRESH

NAMES = [f"r{i:02d}" for i in range(30)]


def settled_fleet() -> Fleet:
    """Members ``a``, ``b`` and ``c``, two replicas, serverset members, settled."""
    fleet = Fleet()
    for agent in ("a", "b", "c"):
        fleet.add(agent, NAMES, replicas=2, discovery=(SERVERSET, DISCOVERY)).start()
    fleet.run(3.0)
    return fleet


class RejoinTests(SynchronousTestCase):
    """Three members, two replicas, serverset members; ``a`` cut off."""

    def setUp(self) -> None:
        self.fleet = settled_fleet()
        self.frozen = self.fleet.members["a"]
        self.share = {n for n in NAMES if self.fleet.node(n)["agent"] == "a"}  # type: ignore[index]
        self.assertTrue(self.share)

    def expire(self) -> Member:
        """``a`` cut off until its session expired; the others took over."""
        fleet, frozen = self.fleet, self.frozen
        fleet.cut_off(frozen)
        for name in NAMES:
            self.assertIn(fleet.node(name)["agent"], ("b", "c"))  # type: ignore[index]
        return frozen

    def held_by(self, session: int | None) -> list[str]:
        """The instance nodes and discovery members `session` holds."""
        nodes = self.fleet.server.nodes
        return [
            path
            for path, node in nodes.items()
            if session is not None
            and node.owner == session
            and (path.startswith(f"{ROOT}/instances/") or path.startswith(DISCOVERY))
        ]

    def test_back_on_a_new_session_waits_for_the_others(self) -> None:
        """
        Back on a new session, ``a`` holds no instance node and no
        discovery member while either other member's view lacks it (it
        took them over at once, from its view of before, while they still
        wrote them as their primary); once their views hold it again, it
        is the primary of its share as before.
        """
        frozen = self.expire()
        frozen.zk.connect()
        others = [self.fleet.members[a] for a in ("b", "c")]
        early: list[str] = []
        for _ in range(round(3.0 / 0.05)):
            self.fleet.run(0.05)
            if any("a" not in m.group.membership.view for m in others):
                early += self.held_by(frozen.zk.session_id)
        self.assertEqual(early, [])
        self.fleet.run(3.0)
        self.assertEqual(
            {n for n in NAMES if self.fleet.node(n)["agent"] == "a"},  # type: ignore[index]
            self.share,
        )
        for name in self.share:
            self.assertEqual(self.fleet.owner_of(name), frozen.zk.session_id)
            self.assertEqual(len(self.fleet.members_of(name)), 1)

    def test_no_member_beside_a_node_kept(self) -> None:
        """
        Back on a new session, ``a`` keeps the nodes it was the primary
        of for the others (made again if missing, never taken), and makes
        no discovery member of its own for one before it holds the
        instance's node, also while it has not heard yet that the others
        hold them (its questions slow, and its checks of them go on): the
        other member's stands alone meanwhile (it made one at its first
        check beside the primary's, listed twice).
        """
        frozen = self.expire()
        takeovers = frozen.publisher._takeovers
        watch_handoff, keep = takeovers.watch_handoff, takeovers.keep

        def slow_question(node: Any) -> None:
            self.fleet.clock.callLater(1.5, watch_handoff, node)

        async def slow_keep(node: Any) -> None:
            await deferLater(self.fleet.clock, 1.5, lambda: None)
            await keep(node)

        self.patch(takeovers, "watch_handoff", slow_question)
        self.patch(takeovers, "keep", slow_keep)
        frozen.zk.connect()
        beside: list[str] = []
        for _ in range(round(4.0 / 0.05)):
            self.fleet.run(0.05)
            session = frozen.zk.session_id
            for name in NAMES:
                held = [
                    child
                    for child in self.fleet.members_of(name)
                    if self.fleet.server.nodes[f"{DISCOVERY}/{name}/{child}"].owner
                    == session
                ]
                if held and self.fleet.owner_of(name) != session:
                    beside.append(name)
        self.assertEqual(beside, [])

    def test_its_view_settles_from_its_own_catalog_listed(self) -> None:
        """
        Back on a new session, ``a`` keeps its last view, itself in it,
        and goes on checking its instances (`Membership.returning`); the
        view in which it is the primary of its share again, taking nodes
        over, comes the settle time after a listing in its new session
        found its own catalog there, held by that session: not before,
        while its catalog is not written.
        """
        frozen = self.expire()
        checked = set(frozen.monitor.states)
        frozen.zk.hang("create", "commit")
        frozen.zk.connect()
        self.fleet.run(2 * SETTLE)
        membership = frozen.group.membership
        self.assertIn("a", membership.view)
        self.assertTrue(membership.returning)
        self.assertEqual(set(frozen.monitor.states), checked)
        self.assertTrue(all(frozen.group.standing_in(n) for n in self.share))
        frozen.zk.unhang()
        frozen.zk.release("create", "commit")
        self.fleet.run(0.05)
        catalog = [
            p for p in self.fleet.server.nodes if p.startswith(f"{ROOT}/catalogs/a.")
        ]
        self.assertTrue(catalog)
        self.fleet.run(SETTLE - 0.15)
        self.assertTrue(membership.returning)
        self.fleet.run(0.5)
        self.assertFalse(membership.returning)
        self.assertFalse(any(frozen.group.standing_in(n) for n in self.share))

    def test_healthz_names_a_rejoin_not_listed(self) -> None:
        """
        A member back on a new session that is not listed again (its
        catalog's writes refused) observes nothing: /healthz says so once
        that lasts `LISTING_FAILING_AFTER`.
        """
        frozen = self.expire()
        frozen.zk.hang("create", "commit")
        frozen.zk.connect()
        self.fleet.run(LISTING_FAILING_AFTER - 0.5)
        self.assertNotIn("new ZooKeeper session", frozen.group.unhealthy_reason() or "")
        self.fleet.run(1.0)
        self.assertIn(
            "back on a new ZooKeeper session", frozen.group.unhealthy_reason() or ""
        )


class WipeTests(SynchronousTestCase):
    """
    Three members, two replicas, serverset members; ZooKeeper wiped, the
    members back on new sessions one after another (`Membership.rejoin`
    waits for the members of its last view).
    """

    def setUp(self) -> None:
        self.fleet = settled_fleet()
        self.primaries = {n: self.fleet.node(n)["agent"] for n in NAMES}  # type: ignore[index]
        self.assertEqual(set(self.primaries.values()), {"a", "b", "c"})
        self.fleet.server.wipe()
        self.fleet.run(1.0)

    def back(self, agent: str) -> Member:
        """`agent`'s client replaced: it connects on a new session."""
        member = self.fleet.members[agent]
        member.zk.replace_client()
        member.zk.connect()
        return member

    def written_not_as_before(self) -> set[str]:
        """The instance nodes whose writer is not their primary before the wipe."""
        return {
            n
            for n in NAMES
            if (node := self.fleet.node(n)) is not None
            and node["agent"] != self.primaries[n]
        }

    def test_back_one_after_another_nothing_moves(self) -> None:
        """
        The members back 1.5 s apart: the first one listed does not take
        every instance alone (to hand two thirds back as the others come),
        each writes only the nodes it was the primary of or, for a member
        not back yet, their next observer (`sentinel.standins`), and once
        all are back every node is written by its primary again, each
        service listing one member.
        """
        assignment = self.fleet.members["a"].group.assignment
        observers = {n: assignment.observers(n) for n in NAMES}
        foreign: set[str] = set()
        for agent in ("a", "b", "c"):
            self.back(agent)
            for _ in range(round(1.5 / 0.05)):
                self.fleet.run(0.05)
                foreign |= {
                    n
                    for n in self.written_not_as_before()
                    if self.fleet.node(n)["agent"] not in observers[n]  # type: ignore[index]
                }
        self.fleet.run(3.0)
        self.assertEqual(foreign, set())
        self.assertEqual(self.written_not_as_before(), set())
        self.assertEqual(
            {n: self.fleet.node(n) is not None for n in NAMES},
            dict.fromkeys(NAMES, True),
        )
        for name in NAMES:
            self.assertEqual(len(self.fleet.members_of(name)), 1)
        for member in self.fleet.members.values():
            self.assertEqual(set(member.group.membership.view), {"a", "b", "c"})

    def test_own_share_made_before_listed_again(self) -> None:
        """
        Back on a new session, a member makes the nodes of its own share
        of the last view that the wipe took at once, without waiting to
        be listed again (its listings held up here): its checks went on,
        and a create takes nothing from anyone. Listed again, it writes
        them as their primary; nothing moves, no service lists two.
        """
        first = self.fleet.members["a"]
        first.zk.replace_client()
        first.zk.hang("get_children")
        first.zk.connect()
        self.fleet.run(1.0)
        self.assertTrue(first.group.membership.returning)
        share = {n for n, agent in self.primaries.items() if agent == "a"}
        self.assertEqual(
            {n for n in share if self.fleet.owner_of(n) == first.zk.session_id},
            share,
        )
        self.assertEqual({self.fleet.node(n)["agent"] for n in share}, {"a"})  # type: ignore[index]
        self.back("b")
        self.back("c")
        first.zk.unhang()
        first.zk.release("get_children")
        self.fleet.run(4.0)
        self.assertFalse(first.group.membership.returning)
        self.assertEqual(self.written_not_as_before(), set())
        for name in NAMES:
            self.assertEqual(len(self.fleet.members_of(name)), 1)

    def test_member_not_back_dropped_after_the_wait(self) -> None:
        """
        A member that never comes back (``c`` died in the outage) stays in
        the others' views for a session timeout and the spread from their
        new sessions, /healthz naming it past `LISTING_FAILING_AFTER`; then
        it is dropped, and every instance is published by ``a`` or ``b``.
        """
        first = self.back("a")
        self.back("b")
        wait = first.zk.session_timeout * (1 + REPLACE_SPREAD)
        self.fleet.run(LISTING_FAILING_AFTER + 0.5)
        for agent in ("a", "b"):
            membership = self.fleet.members[agent].group.membership
            self.assertEqual(set(membership.view), {"a", "b", "c"})
            self.assertIn(
                "1 member(s) of the view before it not listed again (c)",
                self.fleet.members[agent].group.unhealthy_reason() or "",
            )
        self.fleet.run(wait - LISTING_FAILING_AFTER - 1.0)
        self.assertIn("c", first.group.membership.view)
        self.fleet.run(4.0)
        for agent in ("a", "b"):
            member = self.fleet.members[agent]
            self.assertEqual(set(member.group.membership.view), {"a", "b"})
            self.assertNotIn("not listed again", member.group.unhealthy_reason() or "")
        self.assertEqual({n for n in NAMES if self.fleet.node(n) is None}, set())
        self.assertEqual(
            {self.fleet.node(n)["agent"] for n in NAMES},
            {"a", "b"},  # type: ignore[index]
        )

    def test_not_dropped_by_a_listing_from_before_the_wait_ended(self) -> None:
        """
        The members back while ``a``'s listings are held up (behind its
        writes) are not dropped at the end of the wait on what a listing
        from before showed: only a listing begun after it may drop them,
        and that one lists them.
        """
        first = self.back("a")
        self.fleet.run(2.0)
        self.assertEqual(set(first.group.membership.view), {"a", "b", "c"})
        first.zk.hang("get_children")
        self.back("b")
        self.back("c")
        self.fleet.run(first.zk.session_timeout * (1 + REPLACE_SPREAD) + 1.0)
        self.assertEqual(set(first.group.membership.view), {"a", "b", "c"})
        first.zk.unhang()
        first.zk.release("get_children")
        self.fleet.run(3.0)
        self.assertEqual(set(first.group.membership.view), {"a", "b", "c"})
        self.assertEqual(self.written_not_as_before(), set())

    def test_dead_member_share_published_while_waited_for(self) -> None:
        """
        A member that died in the outage (``c``) is waited for, but its
        share is not left without a writer meanwhile: within the settle
        time of ``a`` and ``b``'s views, the next observer of each of its
        instances makes the node and its discovery member (DESIGN.md
        section 8: a dead agent's instances within a second), long before
        the wait for ``c`` ends; once it ends nothing moves again.
        """
        first = self.back("a")
        self.back("b")
        self.fleet.run(3.0)
        self.assertEqual(set(first.group.membership.view), {"a", "b", "c"})
        share = {n for n, agent in self.primaries.items() if agent == "c"}
        self.assertEqual({n for n in share if self.fleet.node(n) is None}, set())
        writers = {n: self.fleet.node(n)["agent"] for n in NAMES}  # type: ignore[index]
        self.assertEqual(set(writers.values()), {"a", "b"})
        for name in NAMES:
            self.assertEqual(len(self.fleet.members_of(name)), 1)
        self.fleet.run(first.zk.session_timeout * (1 + REPLACE_SPREAD))
        self.assertEqual(set(first.group.membership.view), {"a", "b"})
        self.assertEqual(
            {n: self.fleet.node(n)["agent"] for n in NAMES},  # type: ignore[index]
            writers,
        )

    def test_member_back_late_takes_its_share_over(self) -> None:
        """
        A member back after the others (``c``, 4 s later) finds its share
        published by its stand-ins from 1.5 s after theirs came back, and
        takes it over as any move: no node missing from then on, and each
        service lists one member.
        """
        self.back("a")
        self.back("b")
        self.fleet.run(1.5)
        missing: set[str] = set()
        for step in range(round(6.5 / 0.05)):
            if step == round(2.5 / 0.05):
                self.back("c")
            self.fleet.run(0.05)
            missing |= {n for n in NAMES if self.fleet.node(n) is None}
        self.assertEqual(missing, set())
        self.assertEqual(self.written_not_as_before(), set())
        for name in NAMES:
            self.assertEqual(len(self.fleet.members_of(name)), 1)

    def test_stand_in_takes_no_node_over(self) -> None:
        """
        A stand-in makes a node only where it is missing: ``c`` back and
        holding its share again while ``a``'s listings are held up (``a``
        still stands in for it), ``a`` does not take those nodes back,
        none goes missing, and ``a`` names no node of them as stale or
        in conflict (``c`` writes them) however long that lasts.
        """
        first = self.back("a")
        self.back("b")
        self.fleet.run(3.0)
        first.zk.hang("get_children")
        last = self.back("c")
        share = {n for n, agent in self.primaries.items() if agent == "c"}
        self.fleet.run(3.0)
        self.assertIn("c", first.group.membership.absent)
        taken_back: set[str] = set()
        reasons: set[str] = set()
        for _ in range(round(20.0 / 0.05)):
            self.fleet.run(0.05)
            taken_back |= {
                n for n in share if self.fleet.owner_of(n) != last.zk.session_id
            }
            reasons.add(first.publisher.unhealthy_reason() or "")
        self.assertEqual(taken_back, set())
        self.assertEqual(reasons, {""})
        first.zk.unhang()
        first.zk.release("get_children")
        self.fleet.run(3.0)
        self.assertEqual(first.group.membership.absent, frozenset())
        self.assertEqual(self.written_not_as_before(), set())
        for name in NAMES:
            self.assertEqual(len(self.fleet.members_of(name)), 1)

    def removed_while_cut_off(self, apart: float) -> set[str]:
        """
        Every member reloads a config without six instances while
        ZooKeeper is away (wiped), then is back on a new session, `apart`
        seconds after the one before; the removed instances whose node a
        poll found made again meanwhile.
        """
        removed = NAMES[:6]
        for member in self.fleet.members.values():
            member.group.change_instances(removed, [], [])
        self.fleet.run(1.0)
        made_again: set[str] = set()
        for agent in ("a", "b", "c"):
            self.back(agent)
            for _ in range(round(apart / 0.05)):
                self.fleet.run(0.05)
                made_again |= {n for n in removed if self.fleet.node(n) is not None}
        for _ in range(round(5.0 / 0.05)):
            self.fleet.run(0.05)
            made_again |= {n for n in removed if self.fleet.node(n) is not None}
        for name in NAMES[6:]:
            self.assertIsNotNone(self.fleet.node(name), name)
        for member in self.fleet.members.values():
            self.assertFalse(set(removed) & member.watched)
        return made_again

    def test_removed_while_cut_off_not_made_again(self) -> None:
        """
        Each member keeps the nodes of the removed instances it was the
        primary of for the next member its last view says knows them,
        which no longer does. Back on new sessions together, those nodes
        are gone and nobody knows their instances: none is made again,
        not even for the moment the others' new catalogs take to be read.
        """
        self.assertEqual(self.removed_while_cut_off(apart=0.0), set())

    def test_removed_while_cut_off_not_made_again_back_apart(self) -> None:
        """
        The same, the members back 1.5 s apart: a member listed again
        while another of its last view is not yet (whose catalog it has
        only from before) makes none of them again either.
        """
        self.assertEqual(self.removed_while_cut_off(apart=1.5), set())


class OldVersionTests(SynchronousTestCase):
    """Three members, two replicas; ``a`` back on a new session."""

    def test_no_set_at_the_old_sessions_versions(self) -> None:
        """
        Back on a new session, ``a`` sets none of the nodes its old
        session held at the version it had there: the group's view,
        applied at once with its share in it (`Membership.returning`),
        marked them before they were forgotten as ours, and a set at that
        version landed on the node another member had made there since,
        at the same version (the numbers are small): the node named ``a``
        while the other member held it (25 nodes in one run of
        ``benchmarks/rejoin.py``), and ``a``, reading it, took it for its
        own predecessor's and waited for that session to end.
        """
        fleet = settled_fleet()
        frozen = fleet.members["a"]
        share = {n for n in NAMES if fleet.node(n)["agent"] == "a"}  # type: ignore[index]
        nodes = frozen.publisher._nodes.instances
        session = frozen.zk.session_id
        assert session is not None
        frozen.zk.suspend()
        fleet.run(1.0)
        fleet.server.end_session(session)
        # Past its nodes' refresh: each is written at its next mark.
        fleet.run(REFRESH)
        for name in share:
            # The other member's node, at the version ``a``'s had.
            path = f"{ROOT}/instances/{name}"
            fleet.server.nodes[path].version = nodes[name].version
        landed: list[tuple[str, int]] = []
        sets = frozen.zk.set

        def watched_set(path: str, data: bytes, version: int = -1) -> Any:
            def landed_on(stat: Any) -> Any:
                landed.append((path, stat.ephemeralOwner))
                return stat

            return sets(path, data, version).addCallback(landed_on)

        self.patch(frozen.zk, "set", watched_set)
        frozen.zk.connect()
        fleet.run(4.0)
        self.assertTrue(landed)
        elsewhere = [path for path, owner in landed if owner != frozen.zk.session_id]
        self.assertEqual(elsewhere, [])
        for name in share:
            self.assertEqual(fleet.owner_of(name), frozen.zk.session_id)
