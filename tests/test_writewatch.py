"""
`sentinel.writewatch`: another client's write over one of our instance
nodes is found and written over within `CHECK_AFTER`, not at our next
write of the node; named in /healthz; a client writing in a loop costs at
most a read and a rewrite of the node per `CHECK_AFTER`; our own writes
cost one read each and are never named.
"""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel.bugs import InternalErrors
from sentinel.nodes import Node
from sentinel.pacedreads import PacedReads
from sentinel.writewatch import CHECK_AFTER
from tests.test_publisher import (
    AGENT,
    AGENT_PATH,
    DOWN,
    HEARTBEAT,
    REFRESH,
    UP,
    PublisherHarness,
    path,
)


class WriteWatchTests(PublisherHarness):
    """Instance nodes written by another client, on an in-memory ZooKeeper."""

    def setUp(self) -> None:
        super().setUp()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.start()
        self.state = self.instance("redis-00")
        self.check(self.state, UP)
        self.check(self.state, DOWN)
        self.node = path("redis-00")
        self.assertEqual(self.zk.document(self.node)["status"], "down")

    def forge(self) -> None:
        """Another client writes ``up`` over the node (our session keeps it)."""
        forged = {"name": "redis-00", "status": "up", "agent": "x"}
        self.zk.put(self.node, json.dumps(forged).encode(), self.zk.session_id)

    def lines(self) -> list[str]:
        return [
            formatEvent(e)
            for e in self.events
            if "was written by another ZooKeeper client" in formatEvent(e)
        ]

    def test_forged_node_written_again_within_a_second(self) -> None:
        """
        A write over our instance node with no write of ours to come (no
        change, its refresh 30 s away) is found and written over within
        CHECK_AFTER, logged and named in /healthz. Before, it stood until
        the node's refresh.
        """
        self.clock.advance(REFRESH / 2)
        self.forge()
        self.assertEqual(self.zk.document(self.node)["status"], "up")
        self.clock.advance(CHECK_AFTER)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.zk.owner(self.node), self.zk.session_id)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("1 node(s) of this agent written by another client", reason)
        self.assertIn(f"(the last {self.node})", reason)
        self.assertEqual(len(self.lines()), 1)

    def test_forged_node_set_at_the_version_found(self) -> None:
        """
        The read that finds a write over our node gives the version our
        set goes at: one read and one set a forged node. Before, the set
        went at the version we wrote, was refused, and a question came
        before the set that succeeded (three calls after the read).
        """
        self.clock.advance(REFRESH / 2)
        sets = self.zk.calls_by_path["set", self.node]
        reads = self.zk.calls_by_path["exists", self.node]
        self.forge()
        self.clock.advance(CHECK_AFTER)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.zk.calls_by_path["set", self.node] - sets, 1)
        self.assertEqual(self.zk.calls_by_path["exists", self.node] - reads, 1)
        self.assertEqual(self.publisher.written_over, 1)

    def test_every_node_forged_at_once(self) -> None:
        """
        A client writing over all 300 of our instance nodes at once: every
        one right again within CHECK_AFTER, each named, at one read and one
        set a node (before: a refused set and a question more each).
        """
        states = [self.instance(f"redis-{i:03}") for i in range(1, 300)]
        for state in states:
            self.check(state, DOWN)
        self.clock.advance(REFRESH / 2)
        paths = [self.node] + [path(f"redis-{i:03}") for i in range(1, 300)]
        sets = sum(self.zk.calls_by_path["set", p] for p in paths)
        reads = sum(self.zk.calls_by_path["exists", p] for p in paths)
        forged = {"status": "up", "agent": "x"}
        for p in paths:
            self.zk.put(p, json.dumps(forged).encode(), self.zk.session_id)
        self.clock.advance(CHECK_AFTER)
        self.assertEqual(
            [p for p in paths if self.zk.document(p)["status"] != "down"], []
        )
        self.assertEqual(self.publisher.written_over, len(paths))
        self.assertEqual(
            sum(self.zk.calls_by_path["set", p] for p in paths) - sets, len(paths)
        )
        self.assertEqual(
            sum(self.zk.calls_by_path["exists", p] for p in paths) - reads, len(paths)
        )

    def test_forged_agent_node_written_again_within_a_second(self) -> None:
        """
        Another client's write over our agent node (another pid, no
        instances) is written over within CHECK_AFTER and named in
        /healthz, and a client writing it in a loop costs at most a read
        and two sets of it a CHECK_AFTER. Before, it stood until the next
        heartbeat.
        """
        self.clock.advance(HEARTBEAT / 2)
        forged = {"agent": AGENT, "pid": 1, "instances": []}
        self.zk.put(AGENT_PATH, json.dumps(forged).encode(), self.zk.session_id)
        self.clock.advance(CHECK_AFTER)
        said = self.zk.document(AGENT_PATH)
        self.assertNotEqual(said["pid"], 1)
        self.assertEqual(said["instances"], ["redis-00"])
        self.assertEqual(self.zk.owner(AGENT_PATH), self.zk.session_id)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(f"(the last {AGENT_PATH})", reason)
        sets = self.zk.calls_by_path["set", AGENT_PATH]
        reads = self.zk.calls_by_path["exists", AGENT_PATH]
        for _ in range(300):
            self.zk.put(AGENT_PATH, json.dumps(forged).encode(), self.zk.session_id)
            self.clock.advance(0.01)
        rounds = 3.0 / CHECK_AFTER
        self.assertLessEqual(
            self.zk.calls_by_path["set", AGENT_PATH] - sets, rounds * 2 + 1
        )
        self.assertLessEqual(
            self.zk.calls_by_path["exists", AGENT_PATH] - reads, rounds * 2 + 1
        )
        self.clock.advance(CHECK_AFTER)
        self.assertNotEqual(self.zk.document(AGENT_PATH)["pid"], 1)

    def test_forging_loop_paced(self) -> None:
        """
        A client writing over the node every 10 ms for 10 s: the node is
        read and written over at most once per CHECK_AFTER (no storm), each
        found write named, and once it stops the node says ours again
        within CHECK_AFTER.
        """
        self.clock.advance(1.0)
        sets = self.zk.calls_by_path["set", self.node]
        reads = self.zk.calls_by_path["exists", self.node]
        for _ in range(1000):
            self.forge()
            self.clock.advance(0.01)
        rounds = 10.0 / CHECK_AFTER
        self.assertLessEqual(self.zk.calls_by_path["set", self.node] - sets, rounds * 2)
        self.assertLessEqual(
            self.zk.calls_by_path["exists", self.node] - reads, rounds * 2
        )
        self.assertGreaterEqual(self.publisher.written_over, rounds - 2)
        self.clock.advance(CHECK_AFTER)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertIsNotNone(self.publisher.unhealthy_reason())

    def test_own_writes_one_read_each_never_named(self) -> None:
        """
        Our own writes (changes, refreshes) fire the watch too: each costs
        one read to set it again, and none is taken for another client's.
        """
        self.clock.advance(CHECK_AFTER)
        sets = self.zk.calls_by_path["set", self.node]
        reads = self.zk.calls_by_path["exists", self.node]
        for status in (UP, DOWN) * 3:
            self.clock.advance(REFRESH)
            self.check(self.state, status)
            self.clock.advance(CHECK_AFTER)
        written = self.zk.calls_by_path["set", self.node] - sets
        self.assertGreaterEqual(written, 6)
        self.assertEqual(self.zk.calls_by_path["exists", self.node] - reads, written)
        self.assertEqual(self.publisher.written_over, 0)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.lines(), [])

    def test_watched_again_after_a_reconnection(self) -> None:
        """
        kazoo forgets watches when its connection drops: the resync's
        write of the node watches it again, and a write over it after
        is found within CHECK_AFTER.
        """
        self.zk.suspend()
        self.zk.connect()
        self.clock.advance(CHECK_AFTER * 2)
        self.forge()
        self.clock.advance(CHECK_AFTER)
        self.assertEqual(self.zk.document(self.node)["status"], "down")
        self.assertEqual(self.publisher.written_over, 1)


class WatchWritesOffTests(PublisherHarness):
    """``zookeeper.watch_writes = false``: no read after our writes."""

    watch_writes = False

    def test_forged_node_found_at_its_next_write(self) -> None:
        """
        With the option off, our writes cost no read, and a write over an
        instance node is found at our next write of it (its refresh), as
        it was before the write watch.
        """
        self.start()
        state = self.instance("redis-00")
        self.check(state, DOWN)
        node = path("redis-00")
        self.clock.advance(CHECK_AFTER)
        forged = {"name": "redis-00", "status": "up", "agent": "x"}
        self.zk.put(node, json.dumps(forged).encode(), self.zk.session_id)
        self.clock.advance(REFRESH / 2)
        self.assertEqual(self.zk.document(node)["status"], "up")
        self.assertEqual(self.zk.calls_by_path["exists", node], 0)
        self.clock.advance(REFRESH)
        self.check(state, DOWN)
        self.assertEqual(self.zk.document(node)["status"], "down")
        self.assertEqual(self.publisher.written_over, 1)


class StoppedWatchTests(SynchronousTestCase):
    """A watch that fires once the publisher stops sets no timer."""

    def test_watch_fired_while_not_acting_sets_no_timer(self) -> None:
        """
        A watch that fires after the stop's cancel (its event was on its
        way from kazoo's thread) leaves no paced read behind: a timer set
        then outlived the stop, and trial found the reactor unclean in a
        real-ZooKeeper test (``PacedReads._due``). Acting again, a fired
        watch is read at the next pace.
        """
        clock = Clock()
        acting = [False]
        reads: list[Node] = []

        def read(node: Node) -> None:
            reads.append(node)
            return None

        paced = PacedReads(
            clock, CHECK_AFTER, 8, read, lambda: acting[0], InternalErrors(clock)
        )
        node = Node("/sentinel/instances/redis-00", lambda: b"")
        paced.fired(node)
        self.assertEqual(clock.getDelayedCalls(), [])
        acting[0] = True
        paced.fired(node)
        clock.advance(CHECK_AFTER)
        self.assertEqual(reads, [node])

    def test_read_that_raises_leaves_the_others_read(self) -> None:
        """
        A read that raises for one node (a bug) is counted and logged
        once, and the nodes behind it in the same pace are still read:
        their watches set again, none left waiting for another fire.
        """
        clock = Clock()
        reads: list[Node] = []
        bugs = InternalErrors(clock)

        def read(node: Node) -> None:
            if node.path.endswith("00"):
                raise KeyError(node.path)
            reads.append(node)
            return None

        paced = PacedReads(clock, CHECK_AFTER, 8, read, lambda: True, bugs)
        nodes = [Node(f"/sentinel/instances/redis-0{i}", lambda: b"") for i in range(3)]
        for node in nodes:
            paced.fired(node)
        clock.advance(CHECK_AFTER)
        self.assertEqual(reads, nodes[1:])
        self.assertEqual(bugs.count, 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
