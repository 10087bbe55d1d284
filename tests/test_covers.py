"""
A live primary slow to write its instance node (`sentinel.covers`): the
other observers make the node where it stays missing, create only, and
keep it until the primary takes it over. Rules on a Clock, then a group
of real publishers over one in-memory ZooKeeper (`tests.groupfakes`).
"""

from __future__ import annotations

import json
from typing import Any

from kazoo.protocol.states import EventType, KeeperState, WatchedEvent
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel.behind import VIEW_LAG, BehindVerdicts
from sentinel.behind import late_after as verdict_late_after
from sentinel.covers import COVER_GRACE, COVER_LIMIT, COVER_LOOK, Covers, covering
from sentinel.documents import SERVERSET
from sentinel.group import OBSERVER, PRIMARY
from sentinel.listing import PageQuery
from sentinel.observation import Observation
from sentinel.opinions import FIRST_VERDICT_READ
from sentinel.stopping import STOP_BUDGET
from tests.groupfakes import DISCOVERY, INTERVAL, ROOT, UP, Fleet, Member

NAMES = [f"r{i:02d}" for i in range(30)]
REFUSED = Observation(ok=False, error="connection refused")


class CoveringOrderTests(SynchronousTestCase):
    """`covering`: the order of observers while this agent covers."""

    def test_secondary_put_first(self) -> None:
        """A secondary covering is put first, the others in their order."""
        self.assertEqual(covering(("a", "b", "c"), "c"), ("c", "a", "b"))

    def test_primary_or_stranger_unchanged(self) -> None:
        """The primary itself, or an agent not observing, changes nothing."""
        self.assertEqual(covering(("a", "b"), "a"), ("a", "b"))
        self.assertEqual(covering(("a", "b"), "z"), ("a", "b"))


class RulesTests(SynchronousTestCase):
    """When a secondary covers a missing node, and when it stops."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.ranks: dict[str, int | None] = {"x": 1}
        self.stat: Any = None
        self.asked: list[str] = []
        self.applied: list[set[str]] = []
        self.settled: set[str] = set()
        self.watches: list[Any] = []
        self.made: list[str] = []
        self.covers = Covers(
            self.clock,
            self.exists,
            lambda name: self.ranks.get(name),
            self.applied.append,
            lambda name: name in self.settled,
            lambda name: f"{ROOT}/instances/{name}",
            made=self.made.append,
        )

    def exists(self, path: str, watch: Any = None) -> Deferred[Any]:
        if watch is None:
            self.asked.append(path)
        else:
            self.watches.append(watch)
        return succeed(self.stat)

    def test_covers_after_grace_times_rank(self) -> None:
        """
        A node found missing is asked about again `rank` graces later,
        and covered if still missing: not before.
        """
        self.ranks["x"] = 2
        self.covers.missing("x")
        self.clock.advance(2 * COVER_GRACE - 0.01)
        self.assertEqual((self.asked, self.applied), ([], []))
        self.clock.advance(0.01)
        self.assertEqual(self.asked, [f"{ROOT}/instances/x"])
        self.assertEqual(self.applied, [{"x"}])
        self.assertTrue(self.covers.covering("x"))

    def test_present_again_cancels(self) -> None:
        """A reading that finds the node there again cancels the cover."""
        self.covers.missing("x")
        self.covers.present("x")
        self.clock.advance(COVER_GRACE * 3)
        self.assertEqual((self.asked, self.applied), ([], []))

    def test_made_within_grace_not_covered(self) -> None:
        """
        A node made within the grace (its watch, armed at the reading that
        found it missing, fires) is not covered, though it is gone again
        by the grace's end; its verdict is read again.
        """
        self.covers.missing("x")
        [watch] = self.watches
        watch(WatchedEvent(EventType.CREATED, KeeperState.CONNECTED, "x"))
        self.clock.advance(COVER_GRACE * 3)
        self.assertEqual((self.asked, self.applied), ([], []))
        self.assertEqual(self.made, ["x"])

    def test_made_meanwhile_not_covered(self) -> None:
        """
        A node made meanwhile (its primary wrote it), found by the look
        that arms its watch, is left alone: nothing more is asked.
        """
        self.stat = object()
        self.covers.missing("x")
        self.clock.advance(COVER_GRACE)
        self.assertEqual((self.asked, len(self.watches)), ([], 1))
        self.assertEqual(self.applied, [])
        self.assertFalse(self.covers.covering("x"))

    def test_not_a_secondary_any_more(self) -> None:
        """No cover for an instance this agent is no secondary of by then."""
        self.covers.missing("x")
        self.ranks["x"] = None
        self.clock.advance(COVER_GRACE)
        self.assertEqual((self.asked, self.applied), ([], []))

    def test_failed_reading_covers_nothing(self) -> None:
        """A reading that fails (timed out) covers nothing."""
        self.covers = Covers(
            self.clock,
            lambda path, watch=None: fail(TimeoutError()),
            lambda name: 1,
            self.applied.append,
            lambda name: False,
            lambda name: name,
        )
        self.covers.missing("x")
        self.clock.advance(COVER_GRACE)
        self.assertEqual(self.applied, [])

    def test_ends_once_settled(self) -> None:
        """A cover ends once the node is made (ours or another's)."""
        self.covers.missing("x")
        self.clock.advance(COVER_GRACE)
        self.clock.advance(COVER_LOOK)
        self.assertEqual(self.applied, [{"x"}])
        self.settled.add("x")
        self.clock.advance(COVER_LOOK)
        self.assertEqual(self.applied, [{"x"}, {"x"}])
        self.assertFalse(self.covers.covering("x"))

    def test_look_that_raises_looks_again(self) -> None:
        """
        A look whose judging raises (a bug) does not leave the cover for
        good: the next look, `COVER_LOOK` later, ends it once settled.
        """
        self.covers.missing("x")
        self.clock.advance(COVER_GRACE)
        self.settled = None  # type: ignore[assignment]
        # The real reactor logs what a timed call raised; the Clock raises it.
        self.assertRaises(TypeError, self.clock.advance, COVER_LOOK)
        self.settled = {"x"}
        self.clock.advance(COVER_LOOK)
        self.assertFalse(self.covers.covering("x"))
        self.assertEqual(self.applied, [{"x"}, {"x"}])

    def test_ends_when_no_secondary(self) -> None:
        """A cover ends once this agent is no secondary of the instance."""
        self.covers.missing("x")
        self.clock.advance(COVER_GRACE)
        self.ranks["x"] = None
        self.clock.advance(COVER_LOOK)
        self.assertFalse(self.covers.covering("x"))
        self.assertEqual(self.applied, [{"x"}, {"x"}])

    def test_ends_at_limit(self) -> None:
        """A node never made (our own writes failing) is covered no longer."""
        self.covers.missing("x")
        self.clock.advance(COVER_GRACE)
        self.clock.advance(COVER_LIMIT)
        self.assertFalse(self.covers.covering("x"))

    def test_once_per_grace(self) -> None:
        """
        A node missing again right after a cover ended is covered again
        no sooner than a grace after the last cover began.
        """
        self.covers.missing("x")
        self.clock.advance(COVER_GRACE)
        self.settled.add("x")
        self.clock.advance(COVER_LOOK)
        self.assertFalse(self.covers.covering("x"))
        self.settled.clear()
        self.covers.missing("x")
        self.clock.advance(COVER_GRACE - COVER_LOOK - 0.01)
        self.assertEqual(len(self.asked), 1)
        self.clock.advance(COVER_GRACE)
        self.assertEqual(len(self.asked), 2)

    def test_one_line_for_many_covers(self) -> None:
        """
        A slow primary's 3,000 nodes covered at once are said in one log
        line with their count and the first one's path, not a line each.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        names = [f"i{i:04d}" for i in range(3000)]
        for name in names:
            self.ranks[name] = 1
            self.covers.missing(name)
        self.clock.advance(COVER_GRACE)
        self.clock.advance(COVER_LOOK)
        self.assertEqual(self.covers.covered, 3000)
        lines = [formatEvent(e) for e in events]
        lines = [line for line in lines if "missing for" in line]
        self.assertEqual(len(lines), 1, lines[:3])
        self.assertIn("3000 instance node(s)", lines[0])
        self.assertIn(f"{ROOT}/instances/i0000", lines[0])

    def test_stop_cancels(self) -> None:
        """Stopping cancels what is waiting: no timer is left."""
        self.covers.missing("x")
        self.covers.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.covers.missing("y")
        self.assertEqual(self.clock.getDelayedCalls(), [])


def slow_primary(
    fleet: Fleet, primary: Member, share: list[str], kinds: tuple[str, ...]
) -> None:
    """
    `primary`'s writes hang (its session lives on) and the nodes of
    `share` go, as at the close of a session that held them.
    """
    primary.zk.hang(*kinds)
    for name in share:
        fleet.server.remove(f"{ROOT}/instances/{name}")


WRITES = ("create", "set", "replace")


class SlowPrimaryTests(SynchronousTestCase):
    """A live primary that cannot write: its secondaries make its nodes."""

    def fleet(self, agents: tuple[str, ...], replicas: int) -> Fleet:
        fleet = Fleet()
        for agent in agents:
            fleet.add(agent, NAMES, replicas=replicas).start()
        fleet.run(3.0)
        return fleet

    def covered(
        self, fleet: Fleet, primary: Member, share: list[str]
    ) -> dict[str, dict[str, Any]]:
        """
        The nodes of `share` after `primary` writes nothing and they go,
        a check and a grace later: each made again.
        """
        slow_primary(fleet, primary, share, WRITES)
        fleet.run(2 * INTERVAL + COVER_GRACE + 0.5)
        documents = {name: fleet.node(name) for name in share}
        for name, document in documents.items():
            assert document is not None, name
        return {name: document or {} for name, document in documents.items()}

    def test_secondary_makes_missing_node(self) -> None:
        """
        Nodes of a live primary that writes nothing, gone, are made by
        the other observer within a check and a grace, up, while the
        primary keeps its role; once the primary writes again it takes
        each over and the other observer keeps none.
        """
        fleet = self.fleet(("a", "b"), 2)
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.assertTrue(share)
        for name, document in self.covered(fleet, a, share).items():
            self.assertEqual(document["status"], "up")
            self.assertEqual(document["agent"], "b")
            self.assertEqual(fleet.owner_of(name), b.zk.session_id)
            self.assertEqual(a.group.role(name), PRIMARY)
            self.assertEqual(b.group.role(name), OBSERVER)
        a.zk.unhang()
        fleet.run(30.0)
        for name in share:
            self.assertEqual((fleet.node(name) or {}).get("agent"), "a", name)
            self.assertEqual(fleet.owner_of(name), a.zk.session_id)
        self.assertEqual(b.group.publishing.kept, set())
        stats = b.publisher.stats()["group"]
        self.assertEqual(stats["covered"], len(share))
        self.assertFalse(any(b.group.covers.covering(n) for n in share))

    def test_one_cover_with_three_replicas(self) -> None:
        """
        With two secondaries, the first makes each node and the second,
        which waits two graces and finds it there, makes none: one
        create a missing node.
        """
        fleet = self.fleet(("a", "b", "c"), 3)
        a = fleet.members["a"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.assertTrue(share)
        paths = {name: f"{ROOT}/instances/{name}" for name in share}

        def creates(name: str) -> int:
            return sum(
                fleet.members[m].zk.calls_by_path["create", paths[name]]
                for m in ("b", "c")
            )

        before = {name: creates(name) for name in share}
        slow_primary(fleet, a, share, WRITES)
        fleet.run(2 * INTERVAL + 2 * COVER_GRACE + 0.5)
        for name in share:
            first = a.group.assignment.observers(name)[1]
            self.assertEqual((fleet.node(name) or {}).get("agent"), first, name)
            self.assertEqual(creates(name) - before[name], 1, name)

    def test_second_secondary_when_the_first_cannot_write(self) -> None:
        """
        With two secondaries, when the first cannot write either, the
        second makes the node at its own turn (two graces after its
        reading), so a slow first stand-in leaves nothing missing for
        good.
        """
        fleet = self.fleet(("a", "b", "c"), 3)
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(
            n
            for n in NAMES
            if (fleet.node(n) or {})["agent"] == "a"
            and a.group.assignment.observers(n)[1] == "b"
        )
        self.assertTrue(share)
        b.zk.hang(*WRITES)
        slow_primary(fleet, a, share, WRITES)
        fleet.run(2 * INTERVAL + COVER_GRACE)
        self.assertTrue(all(fleet.node(n) is None for n in share))
        fleet.run(COVER_GRACE + 0.5)
        for name in share:
            self.assertEqual((fleet.node(name) or {}).get("agent"), "c", name)

    def test_primary_that_writes_is_not_covered(self) -> None:
        """
        Nodes deleted under a primary that writes, made again by it a
        second and a half later (within the grace), after the other
        observer found them missing: that observer asks again at the
        grace's end, finds them, and creates none.
        """
        fleet = self.fleet(("a", "b"), 2)
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        created = b.zk.calls["create"]
        a.zk.hang("create")
        for name in share:
            fleet.server.remove(f"{ROOT}/instances/{name}")
        fleet.run(1.5)
        self.assertTrue(all(fleet.node(n) is None for n in share))
        a.zk.unhang()
        a.zk.release()
        fleet.run(2 * COVER_GRACE)
        for name in share:
            self.assertEqual((fleet.node(name) or {}).get("agent"), "a", name)
        self.assertEqual(b.zk.calls["create"], created)
        self.assertEqual(b.group.covers.covered, 0)

    def test_leavers_share_covered_by_new_observer(self) -> None:
        """
        A member leaves while the new primary of part of its share cannot
        write: once the leaver's session ends and takes those nodes, their
        other observer, new to them (it reads a verdict first soon after
        its first check, not a refresh later), makes them within a check
        and a grace.
        """
        fleet = self.fleet(("a", "b", "c"), 2)
        b, c = fleet.members["b"], fleet.members["c"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "b")
        session = b.zk.session_id
        assert session is not None
        c.zk.hang(*WRITES)
        stopped = b.stop()
        fleet.run(STOP_BUDGET + 0.5)
        self.successResultOf(stopped)
        moved = [n for n in share if c.group.role(n) == PRIMARY]
        self.assertTrue(moved)
        # Its session left open (the takeovers not done) ends.
        fleet.server.end_session(session)
        self.assertTrue(all(fleet.node(n) is None for n in moved))
        fleet.run(INTERVAL + COVER_GRACE + 0.5)
        for name in moved:
            self.assertEqual((fleet.node(name) or {}).get("agent"), "a", name)

    def test_cover_keeps_since(self) -> None:
        """
        A node a secondary makes for its slow primary says the ``since``
        its primary's verdict said, not the secondary's own first check
        of the instance (it joined later): the reading that found the
        node missing says nothing of its status.
        """
        fleet = Fleet()
        fleet.add("a", NAMES, replicas=2).start()
        fleet.run(3.0)
        a = fleet.members["a"]
        published = {name: (fleet.node(name) or {}).get("since") for name in NAMES}
        fleet.run(10.0)
        b = fleet.add("b", NAMES, replicas=2).start()
        fleet.run(10.0)
        share = sorted(
            n
            for n in NAMES
            if (fleet.node(n) or {})["agent"] == "a" and b.group.role(n) == OBSERVER
        )
        self.assertTrue(share)
        for name, document in self.covered(fleet, a, share).items():
            self.assertEqual(document["agent"], "b", name)
            self.assertEqual(document["since"], published[name], name)

    def test_deleted_in_a_loop_under_a_primary_that_writes(self) -> None:
        """
        Another client deleting the nodes of a primary that writes them
        in a loop, faster than the primary makes them again: the other
        observer covers none of them (the primary made each within the
        grace, however often it went again), so no node changes hands.
        """
        fleet = self.fleet(("a", "b"), 2)
        b = fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        for _ in range(300):
            for name in share:
                if fleet.node(name) is not None:
                    fleet.server.remove(f"{ROOT}/instances/{name}")
            fleet.run(0.05)
        self.assertEqual(b.group.covers.covered, 0)


class CoverQuorumTests(SynchronousTestCase):
    """
    The verdict a cover writes counts the observers that can speak: the
    slow primary it covers for, whose opinion stays as it last wrote it,
    is no more counted in the quorum than a silent observer, and one
    agent's own trouble still publishes no healthy instance down.
    """

    def fleet(
        self, agents: tuple[str, ...], replicas: int, quorum: int
    ) -> tuple[Fleet, list[str]]:
        """The group, steady, and the primary a's share, covered."""
        fleet = Fleet()
        for agent in agents:
            fleet.add(agent, NAMES, replicas=replicas, quorum=quorum).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        a = fleet.members["a"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.assertTrue(share)
        slow_primary(fleet, a, share, WRITES)
        fleet.run(2 * INTERVAL + (replicas - 1) * COVER_GRACE + 0.5)
        for name in share:
            self.assertNotIn((fleet.node(name) or {}).get("agent"), (None, "a"))
        return fleet, share

    def dies(self, fleet: Fleet, name: str, seen_by: str) -> None:
        """`name` answers no check of the members in `seen_by` from now on."""
        for agent in seen_by:
            fleet.members[agent].see(name, REFUSED)

    def test_down_during_cover_with_two_replicas(self) -> None:
        """
        Two replicas, quorum 2: an instance that dies while b covers for a
        (a live member whose writes hang, its opinion up as last written)
        is published down by b's verdict within a few checks, not held up
        by a's opinion, which a can no longer change; the verdict names a
        unheard (null) and its quorum 1.
        """
        fleet, share = self.fleet(("a", "b"), 2, 2)
        name = share[0]
        self.dies(fleet, name, "ab")
        fleet.run(5 * INTERVAL)
        document = fleet.node(name) or {}
        self.assertEqual(document.get("status"), "down")
        self.assertEqual(document.get("agent"), "b")
        self.assertEqual(document.get("observers"), {"b": "down", "a": None})
        self.assertEqual(document.get("quorum"), 1)
        for other in share[1:]:
            self.assertEqual((fleet.node(other) or {}).get("status"), "up", other)

    def test_down_where_the_slow_member_is_a_secondary(self) -> None:
        """
        Two replicas, quorum 2: while b covers for a, an instance b is the
        primary of, a its secondary, that dies is published down too: a's
        opinion of it is as frozen as of its own share (a cannot write, as
        b's covers show), and held it up.
        """
        fleet, share = self.fleet(("a", "b"), 2, 2)
        name = next(n for n in NAMES if n not in share)
        self.assertEqual((fleet.node(name) or {}).get("agent"), "b")
        self.dies(fleet, name, "ab")
        fleet.run(5 * INTERVAL)
        document = fleet.node(name) or {}
        self.assertEqual(document.get("status"), "down")
        self.assertEqual(document.get("observers"), {"b": "down", "a": None})

    def test_down_during_cover_with_three_replicas_quorum_three(self) -> None:
        """
        Three replicas, quorum 3: both secondaries seeing the instance down
        publish it down while a's writes hang (the quorum is capped at the
        two that can speak).
        """
        fleet, share = self.fleet(("a", "b", "c"), 3, 3)
        name = share[0]
        self.dies(fleet, name, "abc")
        fleet.run(5 * INTERVAL)
        self.assertEqual((fleet.node(name) or {}).get("status"), "down")

    def test_one_secondary_alone_publishes_no_down(self) -> None:
        """
        Three replicas, quorum 2: while b covers for a, b's own trouble
        (it alone fails its checks of an instance c sees up) publishes no
        down: the quorum counts c, which speaks.
        """
        fleet, share = self.fleet(("a", "b", "c"), 3, 2)
        for name in share:
            coverer = (fleet.node(name) or {})["agent"]
            self.dies(fleet, name, coverer)
        fleet.run(10 * INTERVAL)
        for name in share:
            self.assertEqual((fleet.node(name) or {}).get("status"), "up", name)

    def test_primary_that_writes_counts(self) -> None:
        """
        Two replicas, quorum 2, no cover: b alone seeing an instance down
        (its own trouble; a, which writes, sees it up) publishes no down.
        """
        fleet = Fleet()
        for agent in ("a", "b"):
            fleet.add(agent, NAMES, replicas=2, quorum=2).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.dies(fleet, share[0], "b")
        fleet.run(10 * INTERVAL)
        self.assertEqual((fleet.node(share[0]) or {}).get("status"), "up")

    def test_cover_past_a_view_change_leaves_out_only_its_member(self) -> None:
        """
        A cover under way (b's creates hang) when its slow member a leaves:
        b, the primary of a's instances in the new view until its next
        look at its covers, leaves out no other member's opinions
        meanwhile. Before, it left out c, its healthy secondary there, of
        every verdict it wrote for 0.3 s: with two replicas, b's word
        alone.
        """
        fleet = Fleet()
        for agent in ("a", "b", "c"):
            fleet.add(agent, NAMES, replicas=2, quorum=2).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        a, b = fleet.members["a"], fleet.members["b"]
        b.zk.hang("create")
        share = [n for n in NAMES if (fleet.node(n) or {})["agent"] == "a"]
        slow_primary(fleet, a, share, WRITES)
        fleet.run(2 * INTERVAL + COVER_GRACE + 0.5)
        self.assertTrue(b.group.publishing.slow_primaries)
        session = a.zk.session_id
        assert session is not None
        a.zk.suspend()
        fleet.server.end_session(session)
        left_out: set[str] = set()
        for _ in range(200):
            fleet.run(0.05)
            left_out.update(b.group.publishing.slow_members)
        self.assertEqual(left_out - {"a"}, set())

    def test_group_names_the_member_left_out(self) -> None:
        """
        ``GET /group`` of the coverer names the member whose opinions its
        verdicts leave out, with how many nodes it covers or keeps for it,
        and no longer once that member has taken them back: the operator
        learns why the coverer's verdicts stand on fewer opinions.
        """
        fleet, share = self.fleet(("a", "b"), 2, 2)
        a, b = fleet.members["a"], fleet.members["b"]

        def slow_members(member: Member) -> Any:
            head = json.loads(b"".join(member.group.report_slices(PageQuery(10))))
            return head["slow_members"]

        self.assertEqual(slow_members(b), {"a": len(share)})
        self.assertEqual(slow_members(a), {})
        a.zk.unhang()
        fleet.run(30.0)
        self.assertEqual(slow_members(b), {})

    def test_primary_back_counts_again(self) -> None:
        """
        Once a writes again and takes its nodes back, b keeps none and
        leaves out no opinion of a's any more: b alone seeing an instance
        down (a sees it up) publishes no down.
        """
        fleet, share = self.fleet(("a", "b"), 2, 2)
        a, b = fleet.members["a"], fleet.members["b"]
        a.zk.unhang()
        fleet.run(30.0)
        for name in share:
            self.assertEqual((fleet.node(name) or {}).get("agent"), "a", name)
        self.assertEqual(b.group.publishing.kept, set())
        self.assertEqual(b.group.publishing.slow_primaries, {})
        self.dies(fleet, share[0], "b")
        fleet.run(10 * INTERVAL)
        self.assertEqual((fleet.node(share[0]) or {}).get("status"), "up")


class CoverMemberTests(SynchronousTestCase):
    """
    With discovery, a cover lists no endpoint a live member lists already:
    the endpoint is listed once throughout, and after the primary takes
    its node back.
    """

    def fleet(self, seconds: float = 3.0 + FIRST_VERDICT_READ) -> Fleet:
        """
        Agents a and b, each endpoint listed once, `seconds` after their
        start: by default past b's first reading of each verdict (b
        watches the nodes).
        """
        fleet = Fleet()
        for agent in ("a", "b"):
            fleet.add(
                agent, NAMES, replicas=2, discovery=(SERVERSET, DISCOVERY)
            ).start()
        fleet.run(seconds)
        self.assertEqual(listed_wrong(fleet), [])
        return fleet

    def covered_then_back(
        self, fleet: Fleet, primary: Member, cover: Member, share: list[str]
    ) -> None:
        """
        `primary` cannot write and its nodes of `share` go: `cover` makes
        each, and each endpoint is listed once all along; `primary` writes
        again, takes each back, and its member alone lists each endpoint.
        """
        slow_primary(fleet, primary, share, WRITES)
        wrong = watch_listed(fleet, 2 * INTERVAL + COVER_GRACE + 5.0)
        self.assertEqual(cover.group.covers.covered, len(share))
        for name in share:
            self.assertEqual(
                (fleet.node(name) or {}).get("agent"), cover.agent_id, name
            )
        self.assertEqual(wrong, [])
        primary.zk.unhang()
        self.assertEqual(watch_listed(fleet, 40.0), [])
        self.assertEqual(listed_wrong(fleet), [])
        for name in share:
            self.assertEqual(
                (fleet.node(name) or {}).get("agent"), primary.agent_id, name
            )
            [child] = fleet.members_of(name)
            holder = fleet.server.nodes[f"{DISCOVERY}/{name}/{child}"].owner
            self.assertEqual(holder, primary.zk.session_id, name)

    def test_deleted_under_a_live_primary_that_cannot_write(self) -> None:
        """
        Another client deletes the nodes of a live primary that holds their
        discovery members and cannot write for the whole grace: the other
        observer makes each node, its member in the place of the
        primary's, so each endpoint is listed once all along; once the
        primary writes again it takes each node back, and each endpoint is
        still listed once, by the primary. (Before, each cover made a
        member beside the primary's: 11 of 11 endpoints listed twice until
        the primary wrote again.)
        """
        fleet = self.fleet()
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.assertTrue(share)
        self.covered_then_back(fleet, a, b, share)

    def test_primary_cut_off_then_back_on_its_session(self) -> None:
        """
        The primary's connection drops (its session lives) and another
        client deletes its nodes: covered, each endpoint listed once; back
        on its session, the primary writes its member again knowing
        nothing of what it held, finds it gone and the node it takes back
        naming the cover's member: its own replaces that one, so each
        endpoint is listed once throughout. (Made beside it, 11 of 11 were
        listed twice for 3 s, until the cover's agent let its own go.)
        """
        fleet = self.fleet()
        a = fleet.members["a"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        session = a.zk.session_id
        a.zk.suspend()
        for name in share:
            fleet.server.remove(f"{ROOT}/instances/{name}")
        self.assertEqual(watch_listed(fleet, 2 * INTERVAL + COVER_GRACE + 3.0), [])
        a.zk.connect()
        self.assertEqual(watch_listed(fleet, 40.0), [])
        self.assertEqual(a.zk.session_id, session)
        for name in share:
            self.assertEqual((fleet.node(name) or {}).get("agent"), "a", name)
            [child] = fleet.members_of(name)
            holder = fleet.server.nodes[f"{DISCOVERY}/{name}/{child}"].owner
            self.assertEqual(holder, session, name)

    def test_members_made_in_a_takeover_then_covered(self) -> None:
        """
        The primary's members were made in the transactions that took its
        nodes over at a leave (their answers late, after the members'
        queued writes): covered while it cannot write, each of those
        members replaced by the cover's is heard of, and once the primary
        writes again each endpoint is listed once, by the primary's
        member, within seconds, and stays so past the refresh. (Before,
        3 of 11 such members' replacement went unheard until the refresh:
        the cover's member listed them until then, and the primary's
        rewrite at the refresh had them unlisted for a while; with real
        agents, listed twice.)
        """
        fleet = Fleet()
        for agent in ("a", "b", "c"):
            fleet.add(
                agent, NAMES, replicas=2, discovery=(SERVERSET, DISCOVERY)
            ).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        a, b, c = (fleet.members[m] for m in "abc")
        a.zk.hold_answers("replace")
        c.stop()
        fleet.run(3.0)
        a.zk.release("replace")
        fleet.run(3.0 + FIRST_VERDICT_READ)
        self.assertEqual(listed_wrong(fleet), [])
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        slow_primary(fleet, a, share, WRITES)
        self.assertEqual(watch_listed(fleet, 2 * INTERVAL + COVER_GRACE + 5.0), [])
        self.assertEqual(b.group.covers.covered, len(share))
        a.zk.unhang()
        self.assertEqual(watch_listed(fleet, 5.0), [])
        for name in share:
            [child] = fleet.members_of(name)
            holder = fleet.server.nodes[f"{DISCOVERY}/{name}/{child}"].owner
            self.assertEqual(holder, a.zk.session_id, name)
        self.assertEqual(watch_listed(fleet, 35.0), [])

    def test_cover_costs_one_read_a_member(self) -> None:
        """
        What the cover's member costs: the member the last verdict named
        read once (ahead, as the cover begins: `Takeovers.coming`), and
        the transaction that replaces it in place of a create; no member
        created beside it.
        """
        fleet = self.fleet()
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        named = {n: (fleet.node(n) or {})["member"] for n in share}
        calls = calls_of_covers(fleet, a, b, share)
        for name in share:
            parent = f"{DISCOVERY}/{name}"
            self.assertEqual(calls.get(("get", named[name]), 0), 1, name)
            self.assertEqual(calls.get(("replace", named[name]), 0), 1, name)
            self.assertEqual(calls.get(("create", f"{parent}/member_"), 0), 0, name)

    def test_young_group_cover_never_read_the_node(self) -> None:
        """
        In a group younger than the secondary's first reading of the
        verdicts (and so of a refresh), the primary's nodes are deleted
        while it cannot write: the cover knows no member the node named,
        and replaces the one the primary's live session holds, found in
        the service, so each endpoint is listed once all along, and once,
        by the primary, after it takes its nodes back. (Before, each cover
        made its member beside the primary's: 11 of 11 endpoints listed
        twice until the primary wrote again.)
        """
        fleet = self.fleet(2.0)
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.assertTrue(share)
        # b has not read these verdicts yet: no member it could name.
        for name in share:
            self.assertIsNone(b.publisher._opinions.verdict_node_seen(name))
        self.covered_then_back(fleet, a, b, share)

    def test_cover_whose_take_raises_is_counted(self) -> None:
        """
        A bug of ours in replacing the primary's live member (here
        `Discovery.take_live` raising `KeyError`) is not passed over as a
        failed read: counted and shown as an internal error, once per
        cover, and the cover's member is made all the same, so no
        endpoint is listed by none. (Before, it was dropped in silence.)
        """
        fleet = self.fleet(2.0)
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.assertTrue(share)
        discovery = b.publisher._members.discovery
        assert discovery is not None

        async def raises(*args: object) -> bool:
            raise KeyError("a bug")

        discovery.take_live = raises  # type: ignore[method-assign]
        slow_primary(fleet, a, share, WRITES)
        fleet.run(2 * INTERVAL + COVER_GRACE + 5.0)
        bugs = b.zk.internal_errors
        self.assertEqual(bugs.count, len(share))
        self.assertIn("taking the live member a cover replaces", bugs.last or "")
        self.flushLoggedErrors(KeyError)
        for name in share:
            holders = [
                fleet.server.nodes[f"{DISCOVERY}/{name}/{child}"].owner
                for child in fleet.members_of(name)
            ]
            self.assertIn(fleet.session_of("b"), holders, name)

    def test_cover_read_an_older_member(self) -> None:
        """
        The primary's members are made again (another client deleted them)
        and its nodes, rewritten naming the new ones, are deleted before
        the secondary reads them again: the member the cover last read is
        gone, and the cover replaces the primary's new one, so each
        endpoint is listed once all along. (Before, 11 of 11 were listed
        twice until the primary wrote again.)
        """
        fleet = self.fleet()
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        named = {n: (fleet.node(n) or {})["member"] for n in share}
        for name in share:
            for child in fleet.members_of(name):
                fleet.server.remove(f"{DISCOVERY}/{name}/{child}")
        for _ in range(40):
            fleet.run(0.05)
            if all((fleet.node(n) or {})["member"] != named[n] for n in share):
                break
        # Each node names the new member; b's reading, forgotten at the
        # rewrite, named the old one, and is not made again yet.
        for name in share:
            self.assertNotEqual((fleet.node(name) or {})["member"], named[name])
            self.assertIsNone(b.publisher._opinions.verdict_node_seen(name))
        self.covered_then_back(fleet, a, b, share)

    def test_handed_member_kept_while_its_node_is_covered(self) -> None:
        """
        A joining member takes nodes over before its own members are made
        (each node still names the previous primary's, which that agent
        keeps for it), then cannot write, and another client deletes the
        nodes: the previous primary, still their observer, keeps each
        member listing the endpoint until a cover's member replaces it,
        so no endpoint is ever listed by none, nor twice. (Before, the
        node's going ended the wait, the kept members were deleted at
        the next look and 11 of 11 endpoints were listed by none until
        the covers' members were made.)
        """
        fleet = self.fleet()
        c = fleet.add("c", NAMES, replicas=2, discovery=(SERVERSET, DISCOVERY))
        c.start()
        share: list[str] = []
        for _ in range(100):
            fleet.run(0.05)
            share = sorted(
                n for n in NAMES if (fleet.node(n) or {}).get("agent") == "c"
            )
            if share:
                break
        self.assertTrue(share)
        # Each node taken over names the previous primary's member.
        c_session = c.zk.session_id
        for name in share:
            [child] = fleet.members_of(name)
            holder = fleet.server.nodes[f"{DISCOVERY}/{name}/{child}"].owner
            self.assertNotEqual(holder, c_session, name)
        slow_primary(fleet, c, share, WRITES)
        self.assertEqual(watch_listed(fleet, 2 * INTERVAL + COVER_GRACE + 5.0), [])
        c.zk.unhang()
        self.assertEqual(watch_listed(fleet, 40.0), [])
        self.assertEqual(listed_wrong(fleet), [])

    def test_cover_without_a_name_costs_a_listing(self) -> None:
        """
        What a cover's member costs when the cover knows no member the node
        named (a group younger than its first reading): one listing of the
        service more than the look begun with the cover, one ``get`` of
        the primary's member, and the transaction that replaces it; no
        member created beside it.
        """
        fleet = self.fleet(2.0)
        a, b = fleet.members["a"], fleet.members["b"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        held = {n: f"{DISCOVERY}/{n}/{fleet.members_of(n)[0]}" for n in share}
        calls = calls_of_covers(fleet, a, b, share)
        for name in share:
            parent = f"{DISCOVERY}/{name}"
            self.assertEqual(calls.get(("get_children", parent), 0), 2, name)
            self.assertEqual(calls.get(("get", held[name]), 0), 1, name)
            self.assertEqual(calls.get(("replace", held[name]), 0), 1, name)
            self.assertEqual(calls.get(("create", f"{parent}/member_"), 0), 0, name)

    def test_member_gone_with_the_session_made(self) -> None:
        """
        A cover of a primary whose member went with its nodes (its session
        ended, and it was listed again at once): the endpoint listed by
        none, the cover makes a member of its own, one for each.
        """
        fleet = self.fleet()
        a = fleet.members["a"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        slow_primary(fleet, a, share, WRITES)
        for name in share:
            for child in fleet.members_of(name):
                fleet.server.remove(f"{DISCOVERY}/{name}/{child}")
        fleet.run(2 * INTERVAL + COVER_GRACE + 5.0)
        self.assertEqual(listed_wrong(fleet), [])
        for name in share:
            [child] = fleet.members_of(name)
            holder = fleet.server.nodes[f"{DISCOVERY}/{name}/{child}"].owner
            self.assertEqual(holder, fleet.session_of("b"), name)

    def test_strangers_member_of_the_endpoint_left(self) -> None:
        """
        A cover that knows no member to take replaces only a member held by
        an agent of the group that observes the instance: a member of the
        same endpoint another client holds (a tool that registers the
        endpoint too, an agent of another group) is no cover's to delete.
        Here the primary's members went and another live session holds
        one of each endpoint: the cover makes its own beside it, and the
        stranger's stays. (Before, each cover replaced the stranger's:
        deleted for good, though its session lived.)
        """
        fleet = self.fleet()
        a = fleet.members["a"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.assertTrue(share)
        stranger = fleet.server.open_session()
        slow_primary(fleet, a, share, WRITES)
        theirs = {}
        for name in share:
            parent = f"{DISCOVERY}/{name}"
            [child] = fleet.members_of(name)
            data = fleet.server.nodes[f"{parent}/{child}"].data
            fleet.server.remove(f"{parent}/{child}")
            theirs[name] = f"{parent}/member_{fleet.server.sequence(parent):010d}"
            fleet.server.put(theirs[name], data, stranger)
        fleet.run(2 * INTERVAL + COVER_GRACE + 5.0)
        for name in share:
            self.assertEqual(fleet.server.nodes[theirs[name]].owner, stranger, name)
            holders = sorted(
                fleet.server.nodes[f"{DISCOVERY}/{name}/{child}"].owner
                for child in fleet.members_of(name)
            )
            self.assertEqual(
                holders, sorted([stranger, fleet.session_of("b") or 0]), name
            )


def calls_of_covers(
    fleet: Fleet, primary: Member, cover: Member, share: list[str]
) -> dict[tuple[str, str], int]:
    """
    The calls `cover` makes, by kind and path, while it covers the nodes
    of `share` for `primary`, which cannot write.
    """
    before = dict(cover.zk.calls_by_path)
    slow_primary(fleet, primary, share, WRITES)
    fleet.run(2 * INTERVAL + COVER_GRACE + 5.0)
    return {k: v - before.get(k, 0) for k, v in cover.zk.calls_by_path.items()}


def listed_wrong(fleet: Fleet) -> list[tuple[str, int]]:
    """Each instance whose service does not list it exactly once."""
    counts = [(n, len(fleet.members_of(n))) for n in NAMES]
    return [(n, count) for n, count in counts if count != 1]


def watch_listed(fleet: Fleet, seconds: float) -> list[tuple[str, int]]:
    """What a reader of the services sees wrong at any change, for `seconds`."""
    wrong: list[tuple[str, int]] = []
    fire = fleet.server.fire

    def seen(path: str, kind: Any) -> None:
        fire(path, kind)
        if path.startswith(DISCOVERY):
            wrong.extend(listed_wrong(fleet))

    fleet.server.fire = seen  # type: ignore[method-assign]
    try:
        fleet.run(seconds)
    finally:
        del fleet.server.fire
    return wrong


class LateVerdictTests(SynchronousTestCase):
    """
    A live primary that holds its nodes but cannot write them: its
    secondary, whose own opinion the verdict has not said for
    `LATE_AFTER`, takes the node over in one transaction and keeps it
    until the primary takes it back; a primary merely busy for less keeps
    its nodes, and ownership moves once each way.
    """

    def fleet(self, replicas: int = 2, quorum: int = 2) -> tuple[Fleet, list[str]]:
        """The group, steady and read, and the primary a's share."""
        fleet = Fleet()
        for agent in "abc"[:replicas]:
            fleet.add(agent, NAMES, replicas=replicas, quorum=quorum).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        self.assertTrue(share)
        return fleet, share

    def owners(self, fleet: Fleet, name: str, seconds: float) -> list[int | None]:
        """The sessions that held `name`'s node in turn, over `seconds`."""
        held = [fleet.owner_of(name)]
        for _ in range(round(seconds / 0.05)):
            fleet.run(0.05)
            owner = fleet.owner_of(name)
            if owner != held[-1]:
                held.append(owner)
        return held

    def test_dead_instance_of_a_primary_that_cannot_write(self) -> None:
        """
        Two replicas, quorum 2: a's writes hang with its nodes in place
        (its session lives) and an instance of its share dies: b takes the
        node over, never missing, and publishes it down within
        `LATE_AFTER` and a grace or two of its opinion, a left out; a's
        other nodes stay a's. Before, the node said up, a's, for good.
        """
        fleet, share = self.fleet()
        a, b = fleet.members["a"], fleet.members["b"]
        name = frozen_as_one_dies(fleet, share)
        held = self.owners(fleet, name, 3 * INTERVAL + late_after(a) + 3 * COVER_GRACE)
        self.assertNotIn(None, held)
        document = fleet.node(name) or {}
        self.assertEqual(document.get("status"), "down")
        self.assertEqual(document.get("agent"), "b")
        self.assertEqual(document.get("observers"), {"b": "down", "a": None})
        self.assertEqual(held, [a.zk.session_id, b.zk.session_id])
        self.assertEqual(b.group.publishing.slow_members, {"a": 1})
        for other in share[1:]:
            self.assertEqual(fleet.owner_of(other), a.zk.session_id, other)

    def test_taken_back_once_the_primary_writes(self) -> None:
        """
        Ownership moves once each way: b takes the late node, keeps it
        while a cannot write (60 s: not taken again and again), and a
        takes it back once it writes, down as the opinions say; b then
        keeps nothing and counts a again.
        """
        fleet, share = self.fleet()
        a, b = fleet.members["a"], fleet.members["b"]
        name = frozen_as_one_dies(fleet, share)
        held = self.owners(fleet, name, 60.0)
        a.zk.unhang()
        held += self.owners(fleet, name, 30.0)[1:]
        self.assertEqual(held, [a.zk.session_id, b.zk.session_id, a.zk.session_id])
        self.assertEqual((fleet.node(name) or {}).get("status"), "down")
        self.assertEqual(b.group.publishing.kept, set())
        self.assertEqual(b.group.publishing.slow_members, {})

    def test_primary_busy_for_a_moment_keeps_its_nodes(self) -> None:
        """
        a's writes hang for less than `LATE_AFTER` while an instance of
        its share dies: a writes it down itself once they go through, and
        b takes nothing over.
        """
        fleet, share = self.fleet()
        a, b = fleet.members["a"], fleet.members["b"]
        name = frozen_as_one_dies(fleet, share)
        fleet.run(late_after(a) - 3.0)
        a.zk.unhang()
        held = self.owners(fleet, name, 30.0)
        self.assertEqual(held, [a.zk.session_id])
        self.assertEqual((fleet.node(name) or {}).get("status"), "down")
        self.assertEqual(b.group.covers.covered, 0)

    def test_primary_that_writes_is_never_taken_over(self) -> None:
        """
        Three replicas, quorum 2: b alone sees an instance of a's share
        down (its own trouble). a writes b's opinion into the verdict,
        which stays up; nobody takes the node over, however long.
        """
        fleet, share = self.fleet(replicas=3, quorum=2)
        a, b = fleet.members["a"], fleet.members["b"]
        name = share[0]
        b.see(name, REFUSED)
        held = self.owners(fleet, name, 60.0)
        self.assertEqual(held, [a.zk.session_id])
        document = fleet.node(name) or {}
        self.assertEqual(document.get("status"), "up")
        self.assertEqual((document.get("observers") or {}).get("b"), "down")
        self.assertEqual(b.group.covers.covered, 0)


def frozen_as_one_dies(fleet: Fleet, share: list[str]) -> str:
    """
    a's writes hang, its session and nodes alive, as the first of its
    `share` dies for a and b: that instance.
    """
    name = share[0]
    fleet.members["a"].zk.hang(*WRITES)
    for agent in "ab":
        fleet.members[agent].see(name, REFUSED)
    return name


def late_after(member: Member) -> float:
    """Seconds a verdict may not say a secondary's opinion (`late_after`)."""
    timeout = member.zk.session_timeout
    assert timeout is not None
    return verdict_late_after(timeout)


class LateMemberLeftOutTests(SynchronousTestCase):
    """
    A primary found late by a secondary's reading is left out of the
    verdicts that agent writes, whether it covers for it or not.
    """

    def test_non_covering_primary_leaves_out_the_late_member(self) -> None:
        """
        Three replicas, quorum 3: a's writes hang, its session alive, and
        an instance of its share and one of the non-covering secondary's
        die for everyone. The coverer takes a's node over; the other,
        having found a's verdict late itself, publishes its own instance
        down too (quorum capped at the two that can write) and names a
        in /healthz. Before, a's frozen ``up`` held that one up for good.
        """
        fleet = Fleet()
        for agent in "abc":
            fleet.add(agent, NAMES, replicas=3, quorum=3).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        a = fleet.members["a"]
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        name = share[0]
        a.zk.hang(*WRITES)
        for member in fleet.members.values():
            member.see(name, REFUSED)
        fleet.run(3 * INTERVAL + late_after(a) + 3 * COVER_GRACE)
        coverer = (fleet.node(name) or {}).get("agent")
        self.assertIn(coverer, ("b", "c"))
        other = fleet.members["c" if coverer == "b" else "b"]
        self.assertEqual(other.group.covers.covered, 0)
        own = next(
            n for n in NAMES if (fleet.node(n) or {}).get("agent") == other.agent_id
        )
        for member in fleet.members.values():
            member.see(own, REFUSED)
        fleet.run(5 * INTERVAL)
        document = fleet.node(own) or {}
        self.assertEqual(document.get("status"), "down")
        self.assertIsNone((document.get("observers") or {}).get("a", "absent"))
        self.assertIn("group: 1 primary member(s)", other.publisher.unhealthy_reason())
        # Once a writes again (it takes its node back, its verdict says
        # everyone's opinion), it is late nowhere and counts again.
        a.zk.unhang()
        fleet.run(30.0)
        self.assertEqual((fleet.node(name) or {}).get("agent"), "a")
        self.assertNotIn("primary member(s)", other.publisher.unhealthy_reason() or "")
        for member in fleet.members.values():
            member.see(own, UP)
        other.see(own, REFUSED)
        fleet.run(5 * INTERVAL)
        self.assertEqual((fleet.node(own) or {}).get("observers", {}).get("a"), "up")

    def test_primary_whose_view_leaves_this_agent_out(self) -> None:
        """
        a's calls all hang (its session alive) as c crashes: in b's view
        b is the new secondary of a's instances that c observed, a's
        verdicts still name a and c. One that dies is taken over by b
        and published down, a bound and `VIEW_LAG` after b's opinion;
        not before the bound alone (a view may lag that long).
        """
        fleet = Fleet()
        for agent in "abc":
            fleet.add(agent, NAMES, replicas=2, quorum=2).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        a, b, c = (fleet.members[agent] for agent in "abc")
        name = next(
            n
            for n in NAMES
            if set((fleet.node(n) or {}).get("observers", {})) == {"a", "c"}
            and (fleet.node(n) or {}).get("agent") == "a"
        )
        a.zk.hang()
        c.crash()
        fleet.run(5.0)
        self.assertEqual(b.group.observers(name), ("a", "b"))
        for member in (a, b):
            member.see(name, REFUSED)
        fleet.run(3 * INTERVAL + late_after(a) + 2 * COVER_GRACE)
        self.assertEqual(fleet.owner_of(name), a.zk.session_id)
        fleet.run(VIEW_LAG + COVER_GRACE)
        document = fleet.node(name) or {}
        self.assertEqual(document.get("agent"), "b")
        self.assertEqual(document.get("status"), "down")


class LateVerdictMemberTests(SynchronousTestCase):
    """
    With discovery, a node taken over from a primary that holds it but
    cannot write it, and written ``down``, lists its endpoint nowhere: the
    taker's member, moved along in the takeover as the verdict taken
    over said (``up``), goes once the taker writes its own, and the
    primary makes none again once it writes, while the instance is down.
    """

    def steady(self) -> tuple[Fleet, str]:
        """a and b, each endpoint listed once; the first of a's share."""
        fleet = Fleet()
        for agent in "ab":
            fleet.add(
                agent, NAMES, replicas=2, discovery=(SERVERSET, DISCOVERY)
            ).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        self.assertEqual(listed_wrong(fleet), [])
        share = sorted(n for n in NAMES if (fleet.node(n) or {})["agent"] == "a")
        return fleet, share[0]

    def taken_down(self, steady: tuple[Fleet, str] | None = None) -> tuple[Fleet, str]:
        """
        Once `steady`, a's writes and deletes hang (its session lives) as
        an instance of its share dies, until b has taken the node over,
        down: that instance.
        """
        fleet, name = steady or self.steady()
        a, b = fleet.members["a"], fleet.members["b"]
        a.zk.hang(*WRITES, "delete")
        for agent in (a, b):
            agent.see(name, REFUSED)
        fleet.run(3 * INTERVAL + late_after(a) + 3 * COVER_GRACE)
        self.assertEqual((fleet.node(name) or {}).get("status"), "down")
        self.assertEqual(fleet.owner_of(name), b.zk.session_id)
        return fleet, name

    def listed_once_but(self, fleet: Fleet, name: str) -> None:
        """Every endpoint but `name`'s is listed once."""
        self.assertEqual(
            [n for n in NAMES if n != name and len(fleet.members_of(n)) != 1], []
        )

    def test_dead_instance_unlisted_by_the_taker(self) -> None:
        """
        b takes the node of a's dead instance over, down: a second later
        no member lists its endpoint (before, b's stayed for as long as b
        kept the node); every other endpoint is listed once.
        """
        fleet, name = self.taken_down()
        fleet.run(1.0)
        self.assertEqual(fleet.members_of(name), [])
        self.listed_once_but(fleet, name)

    def test_not_listed_again_by_the_primary_back(self) -> None:
        """
        a cannot write for 40 s more, then writes again and takes its node
        back, still down: from a second past b's takeover on, the endpoint
        is listed by no member (neither b's nor a's, made again), and
        every other endpoint stays listed once.
        """
        fleet, name = self.taken_down()
        a = fleet.members["a"]
        fleet.run(1.0)
        listed: list[int] = []
        for seconds in (40.0, 30.0):
            for _ in range(round(seconds / 0.05)):
                fleet.run(0.05)
                listed.append(len(fleet.members_of(name)))
            a.zk.unhang()
            a.zk.release()
        self.assertEqual(fleet.owner_of(name), a.zk.session_id)
        self.assertEqual((fleet.node(name) or {}).get("status"), "down")
        self.assertEqual(set(listed), {0})
        self.listed_once_but(fleet, name)

    def test_taken_back_within_seconds_of_a_short_hang(self) -> None:
        """
        a's writes hang only until just after b's takeover: the set of its
        node a sent before it, answered once a writes again, lands on b's
        new node (its versions begun again), and a takes the node back
        within 2 s of writing again, still down, its endpoint listed by
        nobody. Before, a took that set for a write of its own node and
        took the node back only at its next set, the refresh 30 s later.
        """
        fleet, name = self.taken_down()
        a = fleet.members["a"]
        a.zk.unhang()
        a.zk.release()
        fleet.run(2.0)
        self.assertEqual(fleet.owner_of(name), a.zk.session_id)
        self.assertEqual((fleet.node(name) or {}).get("status"), "down")
        self.assertEqual(fleet.members_of(name), [])
        self.listed_once_but(fleet, name)

    def test_strangers_member_of_the_endpoint_left(self) -> None:
        """
        Another client's member of the same endpoint (a tool that
        registers it too, an agent of another group), made before the
        instance died, stays once b writes the node down: b deletes its
        own member only. (Fails before the fix too: b's stays beside it.)
        """
        fleet, name = self.steady()
        parent = f"{DISCOVERY}/{name}"
        [child] = fleet.members_of(name)
        stranger = fleet.server.open_session()
        theirs = f"{parent}/member_{fleet.server.sequence(parent):010d}"
        fleet.server.put(theirs, fleet.server.nodes[f"{parent}/{child}"].data, stranger)
        self.taken_down((fleet, name))
        fleet.run(1.0)
        self.assertEqual(fleet.members_of(name), [theirs.rsplit("/", 1)[1]])
        self.assertEqual(fleet.server.nodes[theirs].owner, stranger)


class SlowMemberTests(SynchronousTestCase):
    """
    A member whose own writes are slow is no judge of the others'
    verdicts (`sentinel.behind`): the ones that leave it out on purpose,
    as late, name it null, and that is no evidence that they are late.
    """

    def test_member_back_from_a_hang_takes_nothing_of_its_coverer(self) -> None:
        """
        Two replicas, quorum 2: a's writes hang for 60 s, its session
        alive, and an instance of its share dies. b takes that node over
        and leaves a out of every verdict it writes, naming it null; a,
        reading those while its writes hang, its opinions of b's share
        long written, finds none of them late. Once its writes go
        through, a takes its node back and nothing else: none of b's
        nodes moves, over two minutes. Before, a took every node of b's
        share over at its first writes, and b took each back.
        """
        fleet = Fleet()
        for agent in "ab":
            fleet.add(agent, NAMES, replicas=2, quorum=2).start()
        fleet.run(3.0 + FIRST_VERDICT_READ)
        a, b = fleet.members["a"], fleet.members["b"]
        theirs = [n for n in NAMES if (fleet.node(n) or {})["agent"] == "b"]
        share = sorted(n for n in NAMES if n not in theirs)
        name = frozen_as_one_dies(fleet, share)
        moved: set[str] = set()
        for step in range(round(180.0 / 0.25)):
            if step == round(60.0 / 0.25):
                a.zk.unhang()
            fleet.run(0.25)
            moved.update(n for n in theirs if fleet.owner_of(n) != b.zk.session_id)
        self.assertEqual(moved, set())
        self.assertEqual(a.group.covers.taken, 0)
        self.assertEqual(b.group.covers.taken, 1)
        self.assertEqual(fleet.owner_of(name), a.zk.session_id)
        for member in (a, b):
            reason = member.publisher.unhealthy_reason() or ""
            self.assertNotIn("primary member(s)", reason)


class BehindListedTests(SynchronousTestCase):
    """
    `BehindVerdicts` names late only the members of the group's view: the
    ``agent`` a verdict document claims is anyone's text.
    """

    def test_unlisted_writer_not_named_late(self) -> None:
        """
        A verdict behind for the bound, written by an ``agent`` that is no
        member, is late (its bound is reported) but keeps no entry in
        ``late`` and no /healthz reason; a listed writer does.
        """
        behind = BehindVerdicts(lambda: 10.0, listed=lambda agent: agent == "a")
        self.assertEqual(behind.seen("r1", "down", "up", 7, "x" * 1000, 0.0), 10.0)
        self.assertEqual(behind.seen("r1", "down", "up", 7, "x" * 1000, 10.0), 10.0)
        self.assertEqual(behind.late, {})
        self.assertIsNone(behind.unhealthy_reason())
        behind.seen("r2", "down", "up", 8, "a", 0.0)
        behind.seen("r2", "down", "up", 8, "a", 10.0)
        self.assertEqual(behind.late, {"a": "r2"})
