"""
`sentinel.guard`: our nodes deleted behind our back are written again
within about a second, with one line per burst; never those we delete
ourselves, a node someone else holds by then, nor after the session ends;
and a squatter deleting in a loop is paced. A catalog written over by
another client is written again under a new name.
"""

from __future__ import annotations

import json

from twisted.internet.defer import TimeoutError
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel.assignment import ranks_below
from sentinel.documents import NERVE
from sentinel.guard import (
    LOOP_BURSTS,
    LOOP_LOG_EVERY,
    LOOP_WINDOW,
    OVERWRITES_WINDOW,
    REWRITE_AFTER,
    TAKEN_OVER_GRACE,
)
from sentinel.membership import SETTLE
from sentinel.observation import Observation
from sentinel.rearming import RETRY_FIRST, UNARMED_LIMIT
from sentinel.writes import RETRY_DELAY
from sentinel.writewatch import CHECK_AFTER
from tests.groupfakes import Fleet
from tests.test_discovery import DISCOVERY, DiscoveryHarness
from tests.test_publisher import (
    AGENT,
    AGENT_PATH,
    DOWN,
    HEARTBEAT,
    REFRESH,
    ROOT,
    UP,
    PublisherHarness,
    path,
)


class GuardTests(PublisherHarness):
    """Nodes deleted by another client, on an in-memory ZooKeeper."""

    def setUp(self) -> None:
        super().setUp()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self) -> list[str]:
        """The warnings the guard logged."""
        return [
            formatEvent(e)
            for e in self.events
            if "behind the agent's back" in formatEvent(e)
        ]

    def published(self, count: int) -> list[str]:
        names = [f"redis-{i:02d}" for i in range(count)]
        self.start()
        for name in names:
            self.check(self.instance(name), UP)
        return names

    def test_deleted_node_written_again(self) -> None:
        """
        An instance node deleted by another client is ours again
        `REWRITE_AFTER` later, with the same document; one line says so,
        and the count goes up.
        """
        self.published(1)
        node = path("redis-00")
        before = self.zk.document(node)
        self.zk.remove(node)
        self.clock.advance(REWRITE_AFTER - 0.01)
        self.assertNotIn(node, self.zk.nodes)
        self.clock.advance(0.01)
        self.assertEqual(self.zk.owner(node), self.zk.session_id)
        self.assertEqual(self.zk.document(node), before)
        self.assertEqual(self.publisher.deleted_behind, 1)
        self.assertEqual(
            self.lines(),
            [f"1 nodes deleted behind the agent's back, written again: {node}"],
        )

    def test_watched_once_per_create(self) -> None:
        """
        A node is watched once when created, not at each of its writes:
        refreshes and changes cost no read.
        """
        self.published(1)
        node = path("redis-00")
        for _ in range(5):
            self.clock.advance(30.0)
            self.check(self.watched["redis-00"], UP)
        self.assertGreater(self.zk.calls_by_path["set", node], 1)
        self.assertEqual(self.zk.calls_by_path["get_children", node], 1)

    def test_wipe_one_line(self) -> None:
        """
        The whole tree deleted (agent node and 12 instance nodes) comes
        back at once, told in one line.
        """
        names = self.published(12)
        for name in names:
            self.zk.remove(path(name))
        self.zk.remove(AGENT_PATH)
        self.clock.advance(REWRITE_AFTER)
        for name in names:
            self.assertEqual(self.zk.owner(path(name)), self.zk.session_id)
        self.assertEqual(self.zk.owner(AGENT_PATH), self.zk.session_id)
        self.assertEqual(
            self.lines(),
            [
                "13 nodes deleted behind the agent's back, written again"
                " (its own node too: every node written again):"
                f" {path('redis-00')}, {path('redis-01')}, {path('redis-02')}"
                " and 10 more"
            ],
        )

    def test_own_delete_not_fought(self) -> None:
        """An instance no longer watched has its node deleted for good."""
        self.published(1)
        self.unwatch("redis-00")
        self.clock.advance(10 * REWRITE_AFTER)
        self.assertNotIn(path("redis-00"), self.zk.nodes)
        self.assertEqual(self.lines(), [])

    def test_stop_not_fought(self) -> None:
        """A deregistering stop's deletes are not written again."""
        self.published(3)
        self.successResultOf(self.publisher.stopService())
        self.clock.advance(10 * REWRITE_AFTER)
        self.assertNotIn(path("redis-00"), self.zk.nodes)
        self.assertEqual(self.lines(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_replaced_by_another_session_left_alone(self) -> None:
        """
        A node deleted and created again by another session (a takeover in
        one transaction, a squatter) is never overwritten nor deleted.
        """
        self.published(1)
        node = path("redis-00")
        self.zk.remove(node)
        self.zk.put(node, b'{"squatter": true}', owner=4242)
        self.clock.advance(10 * REWRITE_AFTER)
        self.assertEqual(self.zk.owner(node), 4242)
        self.assertEqual(self.zk.document(node), {"squatter": True})

    def test_session_expiry_is_no_deletion(self) -> None:
        """
        Nodes gone with our session are written again by the resync, not
        reported as deleted behind our back.
        """
        self.published(2)
        self.zk.expire()
        self.zk.connect()
        self.clock.advance(10 * REWRITE_AFTER)
        self.assertEqual(self.zk.owner(path("redis-00")), self.zk.session_id)
        self.assertEqual(self.lines(), [])
        self.assertEqual(self.publisher.deleted_behind, 0)

    def test_watched_again_after_reconnection(self) -> None:
        """
        A lost connection drops the watches; after the reconnection the
        nodes are watched again, and a deletion is noticed.
        """
        self.published(1)
        self.zk.suspend()
        self.zk.connect()
        self.zk.remove(path("redis-00"))
        self.clock.advance(REWRITE_AFTER)
        self.assertEqual(self.zk.owner(path("redis-00")), self.zk.session_id)
        self.assertEqual(self.publisher.deleted_behind, 1)

    def test_squatter_loop_paced(self) -> None:
        """
        A client deleting the node every 10 ms for 10 s gets at most one
        create of it per `REWRITE_AFTER`, and as many lines.
        """
        self.published(1)
        node = path("redis-00")
        creates = self.zk.calls_by_path["create", node]
        for _ in range(1000):
            if node in self.zk.nodes:
                self.zk.remove(node)
            self.clock.advance(0.01)
        made = self.zk.calls_by_path["create", node] - creates
        self.assertLessEqual(made, 10 / REWRITE_AFTER + 1)
        self.assertGreater(made, 10 / REWRITE_AFTER / 2)
        self.assertLessEqual(len(self.lines()), 10 / REWRITE_AFTER + 1)

    def delete_in_a_loop(self, node: str, seconds: float) -> None:
        """Another client deletes `node` every 10 ms for `seconds`."""
        for _ in range(round(seconds / 0.01)):
            if node in self.zk.nodes:
                self.zk.remove(node)
            self.clock.advance(0.01)

    def test_deletion_loop_fails_healthz(self) -> None:
        """
        Our node deleted again and again (LOOP_BURSTS bursts within
        LOOP_WINDOW) turns /healthz to 503, naming the count and the
        node, until a LOOP_WINDOW passes without a deletion.
        """
        self.published(1)
        node = path("redis-00")
        self.delete_in_a_loop(node, 5.0)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("node(s) of this agent deleted behind its back", reason)
        self.assertIn(f"(the last {node})", reason)
        self.delete_in_a_loop(node, 0.0)
        self.clock.advance(LOOP_WINDOW - 1.0)
        self.assertIsNotNone(self.publisher.unhealthy_reason())
        self.clock.advance(1.0)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_one_deletion_keeps_healthz(self) -> None:
        """
        A deletion now and then (a wipe, an operator's mistake) is written
        again and logged, and /healthz stays 200.
        """
        names = self.published(3)
        for name in names[: LOOP_BURSTS - 1]:
            self.zk.remove(path(name))
            self.clock.advance(LOOP_WINDOW / LOOP_BURSTS)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(len(self.lines()), LOOP_BURSTS - 1)

    def test_loop_lines_bounded(self) -> None:
        """
        A loop of deletions for 5 minutes logs a line per LOOP_LOG_EVERY,
        each saying how many went unlogged since, not one per burst.
        """
        self.published(1)
        self.delete_in_a_loop(path("redis-00"), 300.0)
        lines = self.lines()
        self.assertLessEqual(len(lines), LOOP_BURSTS + 300 / LOOP_LOG_EVERY)
        self.assertIn("more since the last such line)", lines[-1])


class WrittenOverTests(PublisherHarness):
    """Our nodes' data written by another client, on an in-memory ZooKeeper."""

    def setUp(self) -> None:
        super().setUp()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.start()
        self.check(self.instance("redis-00"), UP)
        self.check(self.instance("redis-00"), DOWN)
        self.node = path("redis-00")
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.zk.nodes[self.node].version, 1)

    def forge(self, agent: str | None = None) -> None:
        """
        Another client writes ``up`` over the node (our session keeps it),
        naming `agent` as its writer if given.
        """
        document = {"name": "redis-00", "status": "up"}
        if agent is not None:
            document["agent"] = agent
        self.zk.put(self.node, json.dumps(document).encode(), self.zk.session_id)

    def lines(self) -> list[str]:
        return [
            formatEvent(e)
            for e in self.events
            if "was written by another ZooKeeper client" in formatEvent(e)
        ]

    def lose_set(self, observation: Observation) -> None:
        """
        A check's set of the node, done by ZooKeeper, its answer held
        until the bridge's timeout ends the call.
        """
        self.zk.hold_answers("set")
        self.check(self.instance("redis-00"), observation)
        self.clock.advance(self.zk.call_timeout)
        self.zk.unhang()

    def assert_ours_not_named(self, status: str) -> None:
        """The node ours, saying `status`, and no write over it named."""
        self.assertEqual(self.zk.document(self.node)["status"], status)
        self.assertEqual(self.zk.owner(self.node), self.zk.session_id)
        self.assertEqual(self.publisher._guard.writes_over, 0)
        self.assertNotIn(
            "written by another client", self.publisher.unhealthy_reason() or ""
        )
        self.assertEqual(self.lines(), [])

    def held(self) -> bool:
        """Whether a call about the node is held (hung, or its answer)."""
        return any(call.path == self.node for call in self.zk.held)

    def test_written_over_found_and_named(self) -> None:
        """
        A write over our instance node is found at our next write of it
        (its refresh), which writes ours again at once; one line says so,
        and /healthz names it for OVERWRITES_WINDOW, then passes.
        """
        self.forge()
        self.assertEqual(self.zk.document(self.node)["status"], "up")
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.clock.advance(REFRESH)
        self.check(self.instance("redis-00"), DOWN)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.zk.owner(self.node), self.zk.session_id)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("1 node(s) of this agent written by another client", reason)
        self.assertIn(f"(the last {self.node})", reason)
        self.assertEqual(len(self.lines()), 1)
        self.clock.advance(OVERWRITES_WINDOW)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_written_over_at_version_0_named(self) -> None:
        """
        A node written over before our second write of it (at version 0,
        made by our create) is written again and named like any other:
        only a takeover's grace passes over a write over it. Before, a
        failed set at version 0 was never named: an agent whose nodes were
        all at version 0 (healthy instances before their first refresh,
        nodes taken over) answered /healthz 200 all through
        ``benchmarks/meddle.py --kind forge``.
        """
        node = path("redis-01")
        self.check(self.instance("redis-01"), DOWN)
        self.assertEqual(self.zk.nodes[node].version, 0)
        self.zk.put(node, b'{"status": "up"}', self.zk.session_id)
        self.clock.advance(REFRESH)
        self.check(self.instance("redis-01"), DOWN)
        self.assertEqual(self.zk.document(node)["status"], "down")
        self.assertEqual(self.zk.owner(node), self.zk.session_id)
        self.assertIn(f"(the last {node})", self.publisher.unhealthy_reason() or "")
        self.assertEqual(len(self.lines()), 1)
        self.assertEqual(self.publisher.written_over, 1)

    def taken_over(self, name: str, from_agent: str = "b") -> None:
        """As if our node of `name` had just been taken over from `from_agent`."""
        node = self.publisher._nodes.instances[name]
        node.taken_at = self.clock.seconds()
        node.taken_from_agent = from_agent

    def test_written_over_at_version_0_after_a_takeover(self) -> None:
        """
        A node taken over (made again at version 0) and written over within
        TAKEN_OVER_GRACE with data of the agent it was taken from is that
        agent's late set: counted, not named; written over again once the
        grace is past, it is named.
        """
        name = "redis-01"
        node = path(name)
        self.check(self.instance(name), DOWN)
        self.taken_over(name)
        self.zk.put(node, b'{"status": "up", "agent": "b"}', self.zk.session_id)
        self.check(self.instance(name), UP)
        self.assertEqual(self.zk.document(node)["status"], "up")
        self.assertEqual(self.publisher.late_sets, 1)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.clock.advance(TAKEN_OVER_GRACE)
        self.zk.put(node, b'{"status": "down"}', self.zk.session_id)
        self.check(self.instance(name), UP)
        self.assertEqual(self.zk.document(node)["status"], "up")
        self.assertIn(f"(the last {node})", self.publisher.unhealthy_reason() or "")
        self.assertEqual(len(self.lines()), 1)

    def test_written_over_soon_after_a_takeover_not_named(self) -> None:
        """
        A node written over within TAKEN_OVER_GRACE of our takeover of it
        (the previous primary's set, sent before it heard of the new view,
        at the version ours had reached, its data naming it) is written
        again as ever, counted as a late set, and not named; past the
        grace, a write over it is.
        """
        self.taken_over("redis-00")
        self.forge(agent="b")
        self.clock.advance(TAKEN_OVER_GRACE - 1.0)
        self.check(self.instance("redis-00"), UP)
        self.assertEqual(self.zk.document(self.node)["status"], "up")
        self.assertEqual(self.zk.owner(self.node), self.zk.session_id)
        self.assertEqual(self.publisher._guard.late_sets, 1)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.lines(), [])
        self.clock.advance(1.0)
        self.forge()
        self.check(self.instance("redis-00"), DOWN)
        self.assertIn(
            "1 node(s) of this agent written by another client",
            self.publisher.unhealthy_reason() or "",
        )
        self.assertEqual(len(self.lines()), 1)

    def test_late_set_with_nothing_to_write_undone_within_a_second(self) -> None:
        """
        The previous primary's late set over a node just taken over, while
        nothing changes for us to write (no check moves the status, the
        refresh far off), is undone within CHECK_AFTER by our write watch:
        the node says this agent and its verdict again, counted as a late
        set, not named. Before, the watch's read saw the version move but
        the rewrite of our unchanged bytes was skipped
        (`sentinel.unchanged`), and the node said ``"agent": "b"`` and b's
        older verdict until our refresh, up to 30 s: a reader took b, not
        this agent, for its primary.
        """
        self.clock.advance(REFRESH / 2)
        self.taken_over("redis-00")
        stale = {"name": "redis-00", "status": "up", "agent": "b"}
        self.zk.put(self.node, json.dumps(stale).encode(), self.zk.session_id)
        self.clock.advance(CHECK_AFTER + 0.1)
        document = self.zk.document(self.node)
        self.assertEqual((document["agent"], document["status"]), (AGENT, "down"))
        self.assertEqual(self.zk.owner(self.node), self.zk.session_id)
        self.assertEqual(self.publisher.late_sets, 1)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.lines(), [])

    def test_late_set_found_after_the_grace_not_named(self) -> None:
        """
        The previous primary's late set that landed within TAKEN_OVER_GRACE
        of our takeover (ZooKeeper's stamps say so: the node made by the
        takeover, written 12 s later) but found only past the grace (the
        write watch's read answered late, a loaded machine) is a late set:
        written again, counted, not named. Before, only our clock at the
        finding counted, and it was named in /healthz for 60 s
        (``benchmarks/groupoverwrites.py`` at load 20--35).
        """
        self.taken_over("redis-00")
        self.zk.nodes[self.node].ctime = self.zk.server.millis()
        self.clock.advance(12.0)
        self.forge(agent="b")
        self.zk.hold_answers("exists")
        self.clock.advance(CHECK_AFTER + 3.5)
        self.zk.unanswered.clear()
        self.zk.release("exists")
        self.clock.advance(0.1)
        self.assertEqual(self.zk.document(self.node)["agent"], AGENT)
        self.assertEqual(self.zk.owner(self.node), self.zk.session_id)
        self.assertEqual(self.publisher.late_sets, 1)
        self.assertEqual(self.publisher.written_over, 0)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.lines(), [])

    def test_late_set_landed_past_the_grace_named(self) -> None:
        """
        A write naming the agent we took the node from that landed past
        TAKEN_OVER_GRACE of the takeover's create, as ZooKeeper stamps it,
        is named, however soon it is found; and a node made by a create of
        ours since the takeover (not taken over) has no grace at all.
        """
        self.taken_over("redis-00")
        self.zk.nodes[self.node].ctime = self.zk.server.millis()
        self.clock.advance(TAKEN_OVER_GRACE + 0.5)
        self.forge(agent="b")
        self.clock.advance(CHECK_AFTER + 0.1)
        self.assertEqual(self.publisher.written_over, 1)
        node = self.publisher._nodes.instances["redis-00"]
        node.made_here()
        self.assertFalse(
            self.publisher._guard.in_takeover_grace(
                node, self.zk.server.stat_of(self.node)
            )
        )

    def test_late_set_stamps_out_of_order_named(self) -> None:
        """
        A write over a node taken over, found past TAKEN_OVER_GRACE by our
        clock, whose stamps put it before the node's create (ZooKeeper's
        servers' clocks differ: a leader whose clock is 10 min ahead made
        the node, one on time wrote over it) is named, as any write past
        the grace: the stamps say nothing of when it landed. Before, its
        ``mtime - ctime`` was negative, "within" the grace, and a write
        naming the agent taken from was counted as a late set, unnamed,
        for as long as that node lived.
        """
        self.taken_over("redis-00")
        self.zk.nodes[self.node].ctime = self.zk.server.millis() + 600_000
        self.clock.advance(TAKEN_OVER_GRACE + 60.0)
        self.forge(agent="b")
        self.clock.advance(CHECK_AFTER + 0.1)
        self.assertEqual(self.publisher.late_sets, 0)
        self.assertEqual(self.publisher.written_over, 1)

    def test_forged_within_the_takeover_grace_named(self) -> None:
        """
        Within TAKEN_OVER_GRACE of our takeover, a write over the node
        whose data does not name the agent we took it from (none, this
        agent, another) is a meddler's, not a late set: written again at
        once, named in /healthz and logged, not counted as a late set.
        Before, every write within the grace passed as a late set.
        """
        self.taken_over("redis-00")
        for forger in (None, "a", "c"):
            self.forge(agent=forger)
            # A check that finds it (a rewrite of the same bytes, at the
            # same instant, is not made: `sentinel.unchanged`).
            self.clock.advance(0.1)
            self.check(self.instance("redis-00"), DOWN)
            self.assertEqual(self.zk.document(self.node)["status"], "down")
            self.assertEqual(self.zk.owner(self.node), self.zk.session_id)
        self.assertEqual(self.publisher.late_sets, 0)
        self.assertEqual(self.publisher.written_over, 3)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("3 node(s) of this agent written by another client", reason)
        self.assertIn(f"(the last {self.node})", reason)
        self.assertEqual(len(self.lines()), 1)

    def member(self, agent: str) -> None:
        """`agent` is a member of the group: another session holds its node."""
        self.zk.put(f"{ROOT}/agents/{agent}", b"{}", self.zk.session_id + 7)

    def test_earlier_holders_late_set_not_named(self) -> None:
        """
        Within TAKEN_OVER_GRACE of our takeover from ``b``, a write over
        the node naming ``c``, a member that ranks below ``b`` for the
        instance (it held the node before ``b`` took it: a group's start
        moves a node twice), is ``c``'s late set: written again, counted,
        not named. Before, only ``b``'s name was a late set, and a member
        of a real group named ``g0``'s late set in /healthz for 60 s.
        """
        self.assertTrue(ranks_below("c", "b", "redis-00"))
        self.member("c")
        self.taken_over("redis-00")
        self.forge(agent="c")
        self.clock.advance(0.1)
        self.check(self.instance("redis-00"), DOWN)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.zk.owner(self.node), self.zk.session_id)
        self.assertEqual(self.publisher.late_sets, 1)
        self.assertEqual(self.publisher.written_over, 0)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.lines(), [])

    def test_late_set_of_the_session_taken_from_not_named(self) -> None:
        """
        Within the grace, a write over the node naming the member whose
        agent node the session we took the node from holds is that
        member's late set, whatever agent the node said then (``b``'s
        late set had landed on ``ax``'s node): written again, counted, not
        named. Before, ``ax``'s set (which outranks ``b``) was named.
        """
        self.member("ax")
        self.taken_over("redis-00")
        node = self.publisher._nodes.instances["redis-00"]
        node.taken_from_session = self.zk.session_id + 7
        self.forge(agent="ax")
        self.clock.advance(0.1)
        self.check(self.instance("redis-00"), DOWN)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.publisher.late_sets, 1)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.lines(), [])

    def test_late_set_of_a_member_below_us_not_named(self) -> None:
        """
        Within the grace, a write over the node naming a live member that
        ranks below this agent for the instance, though above the agent we
        took the node from, is a late set: our takeover went by an earlier
        reading of the node (``g0``'s, at version 0) and deleted the node
        ``g1`` had taken over since, at the same version; ``g1``'s set
        then landed on ours. Before, it was named in /healthz for 60 s
        (``benchmarks/groupoverwrites.py``, ZooKeeper's log: ``g1`` took
        ``r50`` from ``g0`` at 09:36:47, ``g2`` "from g0" at 09:36:48,
        ``g1``'s set landed at 09:36:49).
        """
        self.assertTrue(ranks_below("g1", AGENT, "redis-00"))
        self.assertTrue(ranks_below("g0", AGENT, "redis-00"))
        self.assertFalse(ranks_below("g0", "g1", "redis-00"))
        self.member("g0")
        self.taken_over("redis-00", from_agent="g1")
        self.forge(agent="g0")
        self.clock.advance(0.1)
        self.check(self.instance("redis-00"), DOWN)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.publisher.late_sets, 1)
        self.assertEqual(self.publisher.written_over, 0)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.lines(), [])

    def test_taken_over_while_asked_not_named(self) -> None:
        """
        A write over the node within the grace, found by a refused set,
        while the node is taken over by a member between the question that
        finds it ours and the read of what it says: no write over a node
        of ours to name, and no set of ours on the taker's node; asked
        again. Before, the read found it not ours, no writer, and the
        write was named: 503 for 60 s at a group's start.
        """
        self.taken_over("redis-00")
        self.forge(agent="b")
        self.zk.hold_answers("exists")
        self.clock.advance(0.1)
        self.check(self.instance("redis-00"), DOWN)
        taker = self.zk.session_id + 9
        self.zk.put(self.node, b'{"status": "up", "agent": "c"}', taker)
        self.zk.release("exists")
        self.zk.unanswered.clear()
        self.clock.advance(0.1)
        self.assertEqual(self.zk.owner(self.node), taker)
        self.assertEqual(self.zk.document(self.node)["agent"], "c")
        self.assertEqual(self.publisher.written_over, 0)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.lines(), [])

    def test_forged_in_a_members_name_still_named(self) -> None:
        """
        Within the grace, a write naming a member that outranks the agent
        we took the node from (``ax`` above ``b``: never its holder
        before ``b``) and whose node the session we took it from does not
        hold, this agent, or an agent below ``b`` that no session holds the
        agent node of, is a meddler's: named as before.
        """
        self.assertFalse(ranks_below("ax", "b", "redis-00"))
        self.member("ax")
        self.taken_over("redis-00")
        for forger in ("ax", AGENT, "c"):
            self.forge(agent=forger)
            self.clock.advance(0.1)
            self.check(self.instance("redis-00"), DOWN)
            self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.publisher.late_sets, 0)
        self.assertEqual(self.publisher.written_over, 3)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("3 node(s) of this agent written by another client", reason)

    def test_own_set_applied_with_its_answer_lost_not_named(self) -> None:
        """
        Our set that ZooKeeper applied while its answer was lost (the
        bridge's timeout, a loaded machine) moved the node's version: the
        retry, at the version we knew, is refused, and the node found
        with our own data at the next version is ours, written again at
        once, not named a write of another client's.
        """
        self.lose_set(UP)
        self.assertEqual(self.zk.document(self.node)["status"], "up")
        self.assertEqual(self.zk.nodes[self.node].version, 2)
        self.check(self.instance("redis-00"), DOWN)
        self.assert_ours_not_named("down")
        self.assertEqual(self.publisher._guard.own_sets_applied, 1)

    def test_own_set_applied_then_connection_lost_not_named(self) -> None:
        """
        Our set applied, its answer lost with the connection: back on the
        same session the node is asked about again (`sentinel.resync`),
        and ours, at its version, is set with nothing named.
        """
        self.zk.hold_answers("set")
        self.check(self.instance("redis-00"), UP)
        self.zk.suspend()
        self.zk.unhang()
        self.zk.connect()
        self.check(self.instance("redis-00"), DOWN)
        self.assert_ours_not_named("down")

    def test_own_sets_lost_for_long_still_ours(self) -> None:
        """
        Sets retried for a minute with no answer (each one remembered, at
        most `lostanswers.KEPT` of them): the one ZooKeeper applied, the
        last, is still known for ours when it answers again.
        """
        self.zk.hang("set")
        self.check(self.instance("redis-00"), UP)
        for _ in range(60):
            self.clock.advance(RETRY_DELAY)
        while self.held():  # Between one's timeout and its retry.
            self.clock.advance(RETRY_DELAY / 2)
        self.zk.unhang()
        self.zk.hold_answers("set")
        while not self.held():
            self.clock.advance(RETRY_DELAY / 2)
        self.clock.advance(self.zk.call_timeout)
        self.assertEqual(self.zk.nodes[self.node].version, 2)
        self.zk.unhang()
        self.check(self.instance("redis-00"), DOWN)
        self.clock.advance(self.zk.call_timeout)  # The heartbeat's set too.
        self.assert_ours_not_named("down")
        self.assertEqual(self.publisher._nodes.instances["redis-00"].unanswered, ())

    def test_own_set_lost_then_forged_still_named(self) -> None:
        """
        A set of ours whose answer was lost does not hide another
        client's write over the node: what it wrote after ours (our data
        at the version ours gave, then its own) is found, named and
        written over as any other.
        """
        self.lose_set(UP)
        self.forge()
        self.check(self.instance("redis-00"), DOWN)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.publisher._guard.writes_over, 1)
        self.assertEqual(len(self.lines()), 1)

    def test_own_set_lost_and_refused_then_forged_still_named(self) -> None:
        """
        Another client's write at the very version a lost set of ours
        would have given (ours never applied) is still named: its data is
        not ours.
        """
        self.zk.hang("set")
        self.check(self.instance("redis-00"), UP)
        self.clock.advance(self.zk.call_timeout)
        self.zk.unhang()
        self.forge()
        self.assertEqual(self.zk.nodes[self.node].version, 2)
        self.check(self.instance("redis-00"), DOWN)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.publisher._guard.writes_over, 1)
        self.assertEqual(len(self.lines()), 1)

    def test_agent_node_written_over_named(self) -> None:
        """
        Without a state_dir no other process can share our session, so
        another client's write over our agent node, found at our next
        heartbeat's set, is named like an instance node's. Before, it was
        written over at the heartbeat, named nowhere.
        """
        said = {**self.zk.document(AGENT_PATH), "pid": 666, "instances": []}
        self.zk.put(AGENT_PATH, json.dumps(said).encode(), self.zk.session_id)
        self.clock.advance(HEARTBEAT)
        self.assertNotEqual(self.zk.document(AGENT_PATH)["pid"], 666)
        self.assertEqual(self.zk.owner(AGENT_PATH), self.zk.session_id)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(f"(the last {AGENT_PATH})", reason)
        self.assertEqual(len(self.lines()), 1)

    def test_forging_loop_lines_bounded(self) -> None:
        """
        A client writing over the node every 10 ms for 10 minutes: found
        at each refresh, logged once a minute with the count since.
        """
        for _ in range(600):
            for _ in range(100):
                self.forge()
                self.clock.advance(0.01)
            self.check(self.instance("redis-00"), DOWN)
        lines = self.lines()
        self.assertGreaterEqual(self.publisher._guard.writes_over, 600 / REFRESH - 1)
        self.assertLessEqual(len(lines), 600 / LOOP_LOG_EVERY + 1)
        self.assertIn("more since the last such line)", lines[-1])
        self.assertIsNotNone(self.publisher.unhealthy_reason())


class OwnMemberDeleteTests(DiscoveryHarness):
    """Discovery members the agent deletes itself, on an in-memory ZooKeeper."""

    # The members' watches alone: an instance node's write watch
    # (`sentinel.writewatch`) would take the calls made to fail here.
    watch_writes = False

    form = NERVE

    def setUp(self) -> None:
        super().setUp()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_delete_seen_before_its_reply_not_fought(self) -> None:
        """
        A member deleted because its instance went down is not reported as
        deleted behind our back when ZooKeeper's watch event comes before
        the delete's reply and the guard's rewrite (timed by another
        member's deletion) runs in between: no line, no count, no member.
        """
        self.start()
        a = self.instance("a", service="svc")
        b = self.instance("b", service="svc")
        self.check(a, UP)
        self.check(b, UP)
        self.assertEqual(len(self.members("svc")), 2)
        # b goes down: its member's deletion times the guard's rewrite.
        self.check(b, DOWN)
        self.clock.advance(REWRITE_AFTER - 0.01)
        # a goes down: the delete is done (its watch fires), its reply is
        # still on its way when the rewrite runs.
        self.zk.hold_answers("delete")
        self.check(a, DOWN)
        self.clock.advance(0.01)
        self.zk.release("delete")
        self.clock.advance(2)
        lines = [formatEvent(e) for e in self.events]
        self.assertEqual([n for n in lines if "behind the agent's back" in n], [])
        self.assertEqual(self.publisher.deleted_behind, 0)
        self.assertEqual(self.members("svc"), {})

    def test_member_deleted_by_another_client_still_written_again(self) -> None:
        """
        A member of an up instance deleted by another client is still seen
        and made again, its path named.
        """
        self.start()
        a = self.instance("a", service="svc")
        self.check(a, UP)
        (child,) = self.members("svc")
        self.zk.remove(f"{self.parent}/{child}")
        self.clock.advance(REWRITE_AFTER)
        self.assertEqual(len(self.members("svc")), 1)
        self.assertEqual(self.publisher.deleted_behind, 1)
        self.assertIn(
            f"1 nodes deleted behind the agent's back, written again:"
            f" {self.parent}/{child}",
            [formatEvent(e) for e in self.events],
        )

    def test_member_watch_armed_again_after_a_failed_call(self) -> None:
        """
        The ``exists`` that watches a new member fails (a timeout): made
        again on a timer, so that a deletion by another client is still
        seen and the member made again. (Before, a member, written only
        on change, stayed unwatched until the instance changed, and one
        deleted stayed missing as long: for good, for an instance that
        stays up.) The failure is counted in /debug/stats.
        """
        self.start()
        a = self.instance("a", service="svc")
        self.zk.fail_next("exists", TimeoutError())
        self.check(a, UP)
        (child,) = self.members("svc")
        member = f"{self.parent}/{child}"
        self.assertEqual(self.zk.calls_by_path["exists", member], 1)
        self.clock.advance(RETRY_FIRST)
        self.assertEqual(self.zk.calls_by_path["exists", member], 2)
        self.zk.remove(member)
        self.clock.advance(REWRITE_AFTER)
        self.assertEqual(len(self.members("svc")), 1)
        self.assertEqual(self.publisher.deleted_behind, 1)
        watches = self.publisher.stats()["guard_watches"]
        self.assertEqual(watches, {"failed_calls": 1, "armed_again": 1, "unarmed": 0})

    def test_member_left_unwatched_named_in_healthz(self) -> None:
        """
        While no ``exists`` can watch a member (each times out), /healthz
        names it once `UNARMED_LIMIT` has passed, and the calls back off.
        """
        self.start()
        a = self.instance("a", service="svc")
        self.zk.fail_next("exists", TimeoutError(), times=1000)
        self.check(a, UP)
        (child,) = self.members("svc")
        member = f"{self.parent}/{child}"
        self.clock.advance(UNARMED_LIMIT)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(f"{member} watch not armed for 10.0 s", reason)
        self.assertIn("(last: timed out)", reason)
        self.assertLess(self.zk.calls_by_path["exists", member], 6)

    @property
    def parent(self) -> str:
        return f"{DISCOVERY}/svc"


class CatalogOverwrittenTests(SynchronousTestCase):
    """A member's catalog written over by another client, in a group."""

    def test_catalog_written_again_under_a_new_name(self) -> None:
        """
        Garbage written over b's catalog is noticed at b's next heartbeat
        and written again under new names: a member that joined meanwhile
        (and could not read it) reads it then, and the group is whole
        again, each instance checked by one member.
        """
        names = [f"r{i:02d}" for i in range(20)]
        fleet = Fleet()
        fleet.add("a", names).start()
        b = fleet.add("b", [*names, "rb"]).start()
        fleet.run(2.0)
        catalogs = f"{ROOT}/catalogs"
        before = [n for n in fleet.server.children(catalogs) if n.startswith("b.")]
        for name in before:
            fleet.server.put(f"{catalogs}/{name}", b"\x00garbage", b.zk.session_id or 0)
        c = fleet.add("c", names).start()
        fleet.run(SETTLE + 1.0)
        self.assertNotIn("b", c.group.membership.view)
        fleet.run(HEARTBEAT + SETTLE + 1.0)
        after = [n for n in fleet.server.children(catalogs) if n.startswith("b.")]
        self.assertTrue(after)
        self.assertFalse(set(after) & set(before))
        for member in fleet.members.values():
            self.assertEqual(set(member.group.membership.view), {"a", "b", "c"})
            self.assertIsNone(member.group.unhealthy_reason())
        shares = [m.watched for m in fleet.members.values()]
        self.assertEqual(set().union(*shares), {*names, "rb"})
        self.assertEqual(sum(len(s) for s in shares), len(names) + 1)
        self.flushLoggedErrors()

    def test_catalog_checked_not_written(self) -> None:
        """
        An untouched catalog costs one ``exists`` a part at each heartbeat
        and is never written again.
        """
        fleet = Fleet()
        a = fleet.add("a", ["r00"]).start()
        fleet.run(2.0)
        (part,) = a.publisher._nodes.catalog
        writes = a.zk.writes(part.path)
        checks = a.zk.calls_by_path["exists", part.path]
        fleet.run(3 * HEARTBEAT)
        self.assertEqual(a.zk.writes(part.path), writes)
        self.assertEqual(a.zk.calls_by_path["exists", part.path] - checks, 3)
