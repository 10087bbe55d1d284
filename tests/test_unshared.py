"""
A member waiting before it joins its group again (`sentinel.holdoff`)
still publishes the instances no other listed member knows
(`sentinel.unshared`), and nothing else: each node of theirs is back in
its new session at once, a further end of its session brings them back
at once again, an instance another member learns of by a reload is that
member's from then on, and /healthz, /group and /metrics say which.
"""

from __future__ import annotations

import json

from kazoo.exceptions import NoAuthError
from twisted.trial.unittest import SynchronousTestCase

from sentinel.group import PRIMARY, GroupMetrics
from sentinel.holdoff import FIRST_WAIT
from sentinel.listing import PageQuery
from sentinel.observation import Observation
from sentinel.unshared import Unshared, unshared_names
from tests.groupfakes import DISCOVERY, ROOT, Fleet, Member, instance

SHARED = [f"s{i:02d}" for i in range(20)]
PRIVATE = [f"p{i:02d}" for i in range(6)]
SERVERSET = "serverset"


class UnsharedNamesTests(SynchronousTestCase):
    """Which names a member alone knows, from the listed catalogs."""

    def test_names_no_other_member_knows(self) -> None:
        """Its own catalog counts for nothing; any other member's does."""
        fleet = Fleet()
        fleet.add("a", SHARED + PRIVATE).start()
        fleet.add("b", SHARED + PRIVATE[:2]).start()
        fleet.run(3.0)
        listed = fleet.members["a"].group.membership.listed
        self.assertEqual(
            unshared_names(SHARED + PRIVATE, "a", listed), frozenset(PRIVATE[2:])
        )
        unshared = Unshared("a")
        self.assertEqual(unshared.found(PRIVATE, listed), frozenset(PRIVATE[2:]))
        self.assertEqual(unshared.found(PRIVATE[1:], listed), frozenset())
        said = unshared.said()
        self.assertIn("no other listed member knows (p02, p03, p04, p05)", said)
        unshared.clear()
        self.assertEqual(unshared.said(), "writes nothing")


class WaitingMemberTests(SynchronousTestCase):
    """``a`` knows `PRIVATE` alone and shares `SHARED` with ``b``; R = 2."""

    replicas = 2

    def setUp(self) -> None:
        self.fleet = Fleet()
        discovery = (SERVERSET, DISCOVERY)
        self.a = self.fleet.add(
            "a", SHARED + PRIVATE, replicas=self.replicas, discovery=discovery
        ).start()
        self.b = self.fleet.add(
            "b", SHARED, replicas=self.replicas, discovery=discovery
        ).start()
        self.fleet.run(3.0)
        self.assertEqual(self.missing(), [])

    def hold_off(self) -> None:
        """Two ends in a row: ``a`` waits `FIRST_WAIT` before it joins."""
        self.fleet.expire(self.a)
        self.fleet.run(10.0)
        self.fleet.expire(self.a)
        self.assertTrue(self.a.group.holdoff.holding)

    def missing(self) -> list[str]:
        return [n for n in SHARED + PRIVATE if self.fleet.node(n) is None]

    def held(self) -> list[str]:
        """Every node ``a``'s session holds, by path."""
        session = self.a.zk.session_id
        return sorted(
            p for p, n in self.fleet.server.nodes.items() if n.owner == session
        )

    def test_publishes_what_nobody_else_knows_while_it_waits(self) -> None:
        """
        Through the whole wait every node of an instance only ``a`` knows
        is there, made by ``a``'s new session within a second (instance
        node, discovery member, opinion), and ``a`` writes nothing else:
        no catalog, no agent node, nothing of a shared instance; its
        /healthz line, /group and /metrics name what it publishes.
        """
        self.hold_off()
        self.fleet.run(1.0)
        for _ in range(round((FIRST_WAIT - 2.0) / 0.5)):
            self.assertEqual(self.missing(), [])
            held = self.held()
            self.assertEqual(
                [p for p in held if p.startswith(f"{ROOT}/instances/")],
                [f"{ROOT}/instances/{n}" for n in PRIVATE],
            )
            own = (f"{ROOT}/agents", f"{ROOT}/catalogs")
            self.assertFalse([p for p in held if p.startswith(own)])
            self.assertFalse([p for p in held if any(s in p for s in SHARED)])
            self.fleet.run(0.5)
        self.assertEqual(len(self.fleet.members_of(PRIVATE[0])), 1)
        if self.replicas > 1:
            self.assertIn(f"{ROOT}/opinions/{PRIVATE[0]}/a", self.held())
        reason = self.a.group.unhealthy_reason() or ""
        self.assertIn(
            f"writes nothing but the nodes of the {len(PRIVATE)} instance(s) no"
            " other listed member knows (p00, p01, p02, p03, p04 and 1 more)",
            reason,
        )
        self.assertEqual(reason.count("; "), 0, reason)
        head = json.loads(b"".join(self.a.group.report_slices(PageQuery(10))))
        self.assertEqual(head["hold_off_unshared"], len(PRIVATE))
        self.assertEqual(head["hold_off_unshared_names"], PRIVATE[:5])
        gauges = {
            family.name: family.samples[0].value
            for family in GroupMetrics(self.a.group).collect()
        }
        self.assertEqual(
            gauges["sentinel_group_hold_off_unshared_instances"], len(PRIVATE)
        )
        # The wait over, it joins as before, its share taken back.
        self.fleet.run(4.0)
        self.assertFalse(self.a.group.holdoff.holding)
        self.assertIn(f"{ROOT}/agents/a", self.held())
        self.assertEqual(self.a.group.unshared.names, frozenset())
        self.assertEqual(self.missing(), [])

    def test_an_end_during_the_wait_brings_them_back_at_once(self) -> None:
        """
        Another end during the wait takes ``a``'s private nodes with it;
        its next session makes them again at once, as a lone agent's.
        """
        self.hold_off()
        self.fleet.run(2.0)
        self.fleet.expire(self.a)
        self.assertTrue(self.a.group.holdoff.holding)
        self.fleet.run(1.0)
        self.assertEqual(self.missing(), [])
        self.assertEqual(
            [p for p in self.held() if p.startswith(f"{ROOT}/instances/")],
            [f"{ROOT}/instances/{n}" for n in PRIVATE],
        )

    def test_an_instance_another_member_learns_of_is_its_own(self) -> None:
        """
        ``b`` learns of one of ``a``'s private instances by a reload
        during the wait: ``a`` stops writing it, ``b`` takes its node over
        without a gap and keeps it for the rest of the wait.
        """
        self.hold_off()
        self.fleet.run(1.0)
        learnt = PRIVATE[0]
        self.b.group.add_instance(instance(learnt))
        self.fleet.run(3.0)
        self.assertNotIn(learnt, self.a.group.unshared)
        self.assertTrue(self.a.group.holdoff.holding)
        session_b = self.b.zk.session_id
        self.assertEqual(self.fleet.owner_of(learnt), session_b)
        for _ in range(round((FIRST_WAIT - 5.0) / 0.5)):
            self.fleet.run(0.5)
            self.assertEqual(self.missing(), [])
            self.assertEqual(self.fleet.owner_of(learnt), session_b)
        self.assertEqual(
            [p for p in self.held() if p.startswith(f"{ROOT}/instances/")],
            [f"{ROOT}/instances/{n}" for n in PRIVATE[1:]],
        )

    def test_an_instance_its_own_reload_removes_goes(self) -> None:
        """
        A reload of ``a``'s during the wait removes one it alone knows:
        its node goes at once, as a lone agent's would.
        """
        self.hold_off()
        self.fleet.run(1.0)
        self.assertIsNotNone(self.fleet.node(PRIVATE[0]))
        self.a.group.remove_instance(PRIVATE[0])
        self.fleet.run(1.0)
        self.assertIsNone(self.fleet.node(PRIVATE[0]))
        self.assertEqual(self.fleet.members_of(PRIVATE[0]), [])

    def test_an_instance_its_own_reload_adds_is_published(self) -> None:
        """
        A reload of ``a``'s during the wait renames one it alone knows
        (one removed, one added): the new one's node is made within a
        second, as a lone agent's would be, not at the wait's end, and
        /healthz counts it.
        """
        self.hold_off()
        self.fleet.run(1.0)
        renamed = "p99"
        self.a.group.change_instances([PRIVATE[0]], [], [instance(renamed)])
        self.fleet.run(1.0)
        self.assertTrue(self.a.group.holdoff.holding)
        self.assertIsNone(self.fleet.node(PRIVATE[0]))
        self.assertEqual(self.fleet.owner_of(renamed), self.a.zk.session_id)
        self.assertIn(renamed, self.a.group.unshared)
        self.assertIn(
            f"the nodes of the {len(PRIVATE)} instance(s)",
            self.a.group.unhealthy_reason() or "",
        )

    def test_a_failing_write_of_theirs_is_named(self) -> None:
        """
        Writes of one of the nodes ``a`` publishes while it waits keep
        failing (ZooKeeper refuses them): /healthz names that node as it
        would for any agent's, its published status being stale, and
        names none of the nodes it holds off on purpose.
        """
        self.hold_off()
        self.fleet.run(1.0)
        path = f"{ROOT}/instances/{PRIVATE[0]}"
        for kind in ("set", "create"):
            self.a.zk.fail_next(kind, NoAuthError(), path=path, times=1000)
        self.a.see(PRIVATE[0], Observation(ok=False, error="connection refused"))
        self.fleet.run(8.0)
        self.assertTrue(self.a.group.holdoff.holding)
        reason = self.a.publisher.unhealthy_reason() or ""
        self.assertIn(f"{path} not written for", reason)
        self.assertIn("its published status is stale", reason)
        self.assertNotIn(SHARED[0], reason)

    def test_a_stop_during_the_wait_deletes_them(self) -> None:
        """
        A stop during the wait (no state directory: a deregistration)
        deletes the nodes ``a`` published meanwhile, and completes.
        """
        self.hold_off()
        self.fleet.run(1.0)
        stopped = self.a.stop()
        self.fleet.run(5.0)
        self.successResultOf(stopped)
        self.assertEqual(self.missing(), PRIVATE)


class OneReplicaTests(WaitingMemberTests):
    """The same with ``replicas = 1``: no opinions."""

    replicas = 1


JOINT = [f"j{i:02d}" for i in range(10)]


class NobodyElseTests(SynchronousTestCase):
    """
    ``a`` shares `SHARED` with ``b`` and `JOINT` with ``d`` alone, and
    knows `PRIVATE` alone; ``replicas = 1``.
    """

    replicas = 1

    def setUp(self) -> None:
        self.fleet = Fleet()
        kw = {"replicas": self.replicas, "discovery": (SERVERSET, DISCOVERY)}
        self.a = self.fleet.add("a", SHARED + PRIVATE + JOINT, **kw).start()
        self.b = self.fleet.add("b", SHARED, **kw).start()
        self.d = self.fleet.add("d", JOINT, **kw).start()
        self.fleet.run(5.0)
        self.assertEqual(self.missing(), [])
        # Some of `JOINT` are d's, some a's: the view ``a`` keeps while it
        # waits gives those d's to d.
        mine = [name for name in JOINT if self.a.group.role(name) == PRIMARY]
        self.assertTrue(0 < len(mine) < len(JOINT), mine)

    def missing(self) -> list[str]:
        return [n for n in SHARED + PRIVATE + JOINT if self.fleet.node(n) is None]

    def hold_off(self) -> None:
        """
        Three ends in a row: ``a`` waits twice `FIRST_WAIT`, and is 13 s
        into it, past its wait for the members of its last view (a
        session timeout and a little more).
        """
        for _ in range(2):
            self.fleet.expire(self.a)
            self.fleet.run(5.0)
        self.fleet.expire(self.a)
        self.assertTrue(self.a.group.holdoff.holding)
        self.assertGreater(self.a.group.holdoff.remaining() or 0.0, 15.0)
        self.fleet.run(13.0)
        self.assertTrue(self.a.group.holdoff.holding)
        self.assertEqual(self.missing(), [])

    def test_a_member_that_leaves_during_the_wait(self) -> None:
        """
        ``d`` dies during ``a``'s wait: `JOINT` has nobody but ``a`` to
        publish it, those of it that ``a``'s kept view gave to ``d`` too.
        The wait ends at once (not at its end, 7 s later; up to minutes in
        a longer wait), and every node of `JOINT` is back within a few
        seconds, as when any member dies.
        """
        self.hold_off()
        self.d.crash()
        self.fleet.run(4.0)
        self.assertEqual(self.missing(), [])
        self.assertFalse(self.a.group.holdoff.holding)
        self.assertEqual(self.a.group.holdoff.released, 1)

    def test_an_instance_the_other_forgets_during_the_wait(self) -> None:
        """
        A reload of ``d``'s during ``a``'s wait removes one of `JOINT`
        whose primary is ``d`` in ``a``'s kept view: nobody else publishes
        it, so the wait ends, and its node is back within seconds.
        """
        self.hold_off()
        forgotten = next(n for n in JOINT if self.a.group.role(n) != PRIMARY)
        self.d.group.remove_instance(forgotten)
        self.fleet.run(4.0)
        self.assertEqual(self.missing(), [])
        self.assertFalse(self.a.group.holdoff.holding)


class NobodyElseReplicasTests(NobodyElseTests):
    """The same with ``replicas = 2``: ``a`` observes `JOINT` with ``d``."""

    replicas = 2


class FlappingTogetherTests(SynchronousTestCase):
    """
    ``a`` and ``d`` reach ZooKeeper by one path (one rack, one zone):
    both share `SHARED` with ``b`` and `JOINT` with each other alone;
    ``replicas = 1``.
    """

    def setUp(self) -> None:
        self.fleet = Fleet()
        kw = {"replicas": 1, "discovery": (SERVERSET, DISCOVERY)}
        self.a = self.fleet.add("a", SHARED + JOINT, **kw).start()
        self.b = self.fleet.add("b", SHARED, **kw).start()
        self.d = self.fleet.add("d", SHARED + JOINT, **kw).start()
        self.fleet.run(5.0)
        self.assertEqual(self.missing(), [])

    def missing(self) -> list[str]:
        return [n for n in SHARED + JOINT if self.fleet.node(n) is None]

    def flap(self) -> tuple[Member, Member]:
        """The path flaps: both sessions end together, four times."""
        both = (self.a, self.d)
        for _ in range(4):
            sessions = [member.zk.session_id for member in both]
            for member in both:
                member.zk.suspend()
            self.fleet.run(1.0)
            for session in sessions:
                assert session is not None
                self.fleet.server.end_session(session)
            self.fleet.run(3.0)
            for member in both:
                member.zk.connect()
            self.fleet.run(1.0)
        return both

    def test_checks_read_in_the_background(self) -> None:
        """
        A check's reads, one per instance left to the other member (3,000
        at once in a large fleet), are asked in the background, behind the
        agent's other reads (a guard's first watch, a discovery member's
        read), which would otherwise wait for all of them: 0.5--0.8 s at
        3,000 against a real ZooKeeper (BENCHMARKS.rst).
        """
        self.flap()
        zk = self.a.zk
        zk.background_exists.clear()
        zk.calls_by_path.clear()
        checks = self.a.group.unpublished.checks
        self.fleet.run(2 * zk.session_timeout)
        self.assertGreater(self.a.group.unpublished.checks, checks)
        self.assertTrue(self.a.group.holdoff.holding)
        left = {f"{ROOT}/instances/{name}" for name in JOINT}
        asked = sum(zk.calls_by_path["exists", path] for path in left)
        background = sum(path in left for path in zk.background_exists)
        self.assertGreater(asked, 0)
        self.assertEqual(background, asked)

    def test_neither_ends_its_wait_for_the_other(self) -> None:
        """
        The path flaps: both sessions end together, four times. Each,
        back, finds the other unlisted, which waits too and publishes its
        part of `JOINT`: neither ends its wait for it (each took its share
        of `SHARED` back at every cut of a path that still flapped), and
        every node of `JOINT` is there through the waits, each checked.
        Once ``d`` dies, ``a`` finds the nodes ``d`` published gone at a
        check and ends its wait; they are back within seconds.
        """
        both = self.flap()
        # Past the first check (a session timeout and the spread), inside
        # the wait of 40 s.
        self.fleet.run(4.0)
        for _ in range(20):
            self.assertEqual(self.missing(), [])
            self.fleet.run(0.5)
        for member in both:
            self.assertTrue(member.group.holdoff.holding)
            self.assertEqual(member.group.holdoff.released, 0)
            self.assertGreater(member.group.unpublished.checks, 0)
        self.d.crash()
        self.fleet.run(1.0)
        self.assertTrue(self.a.group.holdoff.holding)
        self.fleet.run(2 * self.a.zk.session_timeout)
        self.assertFalse(self.a.group.holdoff.holding)
        self.assertEqual(self.a.group.holdoff.released, 1)
        self.fleet.run(4.0)
        self.assertEqual(self.missing(), [])
