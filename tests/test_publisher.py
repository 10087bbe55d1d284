"""The ZooKeeper publisher, against an in-memory ZooKeeper on a Clock."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from kazoo.exceptions import ConnectionLoss, NoAuthError
from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel import __version__, writes
from sentinel.clockskew import SKEW_LIMIT
from sentinel.config import RedisInstance
from sentinel.documents import agent_document, instance_document
from sentinel.health import InstanceHealth, Transition
from sentinel.instance import InstanceState
from sentinel.lateness import UNWRITTEN_AFTER
from sentinel.nodes import encode
from sentinel.observation import Observation, Replication
from sentinel.ownership import CONFLICT_MARGIN
from sentinel.publisher import ZooKeeperPublisher
from sentinel.sample import NAMED
from sentinel.stopping import (
    STOP_BUDGET,
    STOP_CLOSE_TIMEOUT,
    STOP_DELETE_TIMEOUT,
    STOP_DELETES,
)
from sentinel.writes import FAILING_AFTER, RETRY_DELAY, WRITES_IN_FLIGHT
from tests.contract import INSTANCE_FIELDS
from tests.fakes import FakeProbe
from tests.fakezk import CALL_KINDS, FakeZooKeeper

ROOT = "/sentinel"
AGENT = "agent-1"
AGENT_PATH = f"{ROOT}/agents/{AGENT}"
REFRESH = 30.0
HEARTBEAT = 10.0
INTERVAL = 1.0
START = 1_700_000_000.0
OTHER_SESSION = 0xDEAD
# Ten instance nodes named in a reason, as a pattern: `sentinel.sample`.
TEN_INSTANCES = (
    rf"(?:{ROOT}/instances/redis-\d\d, ){{{NAMED - 1}}}{ROOT}/instances/redis-\d\d"
)

UP = Observation(
    ok=True, ready=True, latency_ms=0.5, replication=Replication(role="master")
)
DOWN = Observation(ok=False, error="connection refused")


def path(name: str) -> str:
    return f"{ROOT}/instances/{name}"


def published(state: InstanceState) -> dict[str, object]:
    return instance_document(state.instance, state.health, AGENT)


class PublisherHarness(SynchronousTestCase):
    """A publisher on a Clock against an in-memory ZooKeeper, driven as the
    monitor drives it."""

    # The nodes' ACL (zookeeper.auth_file's), None without auth.
    acl: list[Any] | None = None
    # Instance nodes watched for other clients' writes (zookeeper.watch_writes).
    watch_writes = True

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.zk = self.make_zk()
        self.zk.acl = self.acl
        # What the monitor watches: the agent node's instance list.
        self.watched: dict[str, InstanceState] = {}

        def document() -> dict[str, object]:
            now = self.clock.seconds()
            return agent_document(AGENT, START, now, INTERVAL, sorted(self.watched))

        self.twins: list[str] = []
        self.publisher = ZooKeeperPublisher(
            self.clock,
            self.zk,
            ROOT,
            AGENT,
            REFRESH,
            HEARTBEAT,
            document,
            on_twin=self.twins.append,
            watch_writes=self.watch_writes,
        )

    def make_zk(self) -> FakeZooKeeper:
        """The in-memory ZooKeeper the publisher writes to."""
        return FakeZooKeeper(self.clock)

    def start(self, connect: bool = True) -> None:
        self.publisher.startService()
        if connect:
            self.zk.connect()

    def instance(self, name: str, interval: float | None = None) -> InstanceState:
        state = InstanceState(
            RedisInstance(name, "10.0.0.1", 6379),
            FakeProbe(RedisInstance(name, "10.0.0.1", 6379)),
            InstanceHealth(rise=1, fall=1, interval=interval),
        )
        self.watched[name] = state
        return state

    def check(
        self, state: InstanceState, observation: Observation
    ) -> Transition | None:
        """One check's outcome, handed to the publisher as the monitor does."""
        transition = state.health.observe(observation, self.clock.seconds())
        self.publisher.publish(state, transition)
        return transition

    def retries(self, count: int) -> None:
        """Let `count` retry delays pass, one at a time (each retry is
        scheduled by the one before)."""
        for _ in range(count):
            self.clock.advance(RETRY_DELAY)

    def unwatch(self, name: str) -> None:
        del self.watched[name]
        self.publisher.remove(name)

    def total_calls(self) -> int:
        return sum(self.zk.calls.values())


class PublisherTests(PublisherHarness):
    """Publication: layout, coalescing, refresh, failures, removal, stop."""

    # First publication

    def test_first_publish_creates_ephemeral_nodes(self) -> None:
        """
        The first observation creates the instance's ephemeral node with
        exactly the documented fields, and the agent's ephemeral node listing
        it.
        """
        self.start()
        self.clock.advance(2.5)
        now = self.clock.seconds()
        self.check(self.instance("redis-a"), UP)

        node = path("redis-a")
        self.assertEqual(self.zk.owner(node), self.zk.session_id)
        document = self.zk.document(node)
        self.assertEqual(set(document), INSTANCE_FIELDS)
        self.assertEqual(
            document,
            {
                "name": "redis-a",
                "host": "10.0.0.1",
                "port": 6379,
                "status": "up",
                "ready": True,
                "role": "master",
                "master_host": None,
                "master_port": None,
                "master_link_status": None,
                "latency_ms": 0.5,
                "since": now,
                "checked_at": now,
                "error": None,
                "agent": AGENT,
                "schema": 1,
            },
        )
        self.assertEqual(self.zk.owner(AGENT_PATH), self.zk.session_id)
        self.assertEqual(
            self.zk.document(AGENT_PATH),
            {
                "agent": AGENT,
                "pid": os.getpid(),
                "version": __version__,
                "started_at": START,
                "heartbeat_at": now,
                "interval": INTERVAL,
                "instances": ["redis-a"],
            },
        )

    def test_never_written_before_a_status(self) -> None:
        """
        A state that was never observed (no status yet: the check was
        spoiled, say, by the agent's own start-up) writes nothing: the node
        is created by the first real observation.
        """
        self.start()
        state = self.instance("redis-a")
        self.publisher.publish(state, None)
        self.assertEqual(self.zk.writes(path("redis-a")), 0)
        self.assertNotIn(path("redis-a"), self.zk.nodes)
        self.check(state, DOWN)
        self.assertEqual(self.zk.document(path("redis-a"))["status"], "down")

    def test_down_instance_document(self) -> None:
        """A down instance is published with its error and no role."""
        self.start()
        self.check(self.instance("redis-a"), DOWN)
        document = self.zk.document(path("redis-a"))
        self.assertEqual(
            (document["status"], document["ready"], document["role"]),
            ("down", False, None),
        )
        self.assertEqual(document["error"], "connection refused")

    # Coalescing

    def test_one_node_coalesces_to_one_queued_write(self) -> None:
        """
        While its write hangs, 10,000 changes of one instance leave one write
        in flight and one queued; once released, the last write carries the
        newest state.
        """
        self.start()
        self.zk.hang()
        state = self.instance("redis-a")
        node = path("redis-a")
        for i in range(10_000):
            self.assertIsNotNone(self.check(state, UP if i % 2 else DOWN))
        self.assertEqual(self.zk.writes(node), 1)
        self.assertEqual([c.path for c in self.zk.held].count(node), 1)

        self.zk.release()
        self.assertEqual(self.zk.writes(node), 2)
        self.zk.unhang()
        self.zk.release()
        self.assertEqual(self.zk.writes(node), 2)
        self.assertEqual(self.zk.document(node), published(state))
        self.assertEqual(self.zk.document(node)["status"], "up")
        self.assertEqual(self.publisher.stats()["writes_queued"], 0)

    def test_many_nodes_bounded_writes(self) -> None:
        """
        With more instances than the publisher's limit and 20 changes of
        each while ZooKeeper is slow, the ZooKeeper calls in flight never
        exceed the limit (the writes; beside them, one watch per node
        written, `sentinel.guard`), each node is written at most twice, and
        every node ends with its newest state.
        """
        self.start()
        # Grown to its maximum, as on a fast link (`sentinel.window`).
        self.publisher._queue.window.size = WRITES_IN_FLIGHT
        self.zk.hang()
        count = WRITES_IN_FLIGHT + 88
        states = [self.instance(f"redis-{i:04}") for i in range(count)]
        for i in range(20):
            for state in states:
                self.assertIsNotNone(self.check(state, UP if i % 2 else DOWN))
            self.clock.advance(0.01)
        self.assertEqual(self.zk.max_held, WRITES_IN_FLIGHT)
        while self.zk.release():
            held = Counter(call.kind for call in self.zk.held)
            self.assertLessEqual(held["create"] + held["set"], WRITES_IN_FLIGHT)
            self.assertLessEqual(held["get_children"], count + 1)
        for state in states:
            node = path(state.name)
            self.assertLessEqual(self.zk.writes(node), 2, node)
            self.assertEqual(self.zk.document(node), published(state))
        self.assertEqual(len(self.zk.document(AGENT_PATH)["instances"]), count)

    def test_missing_nodes_take_free_slots_first(self) -> None:
        """
        A node readers miss (not written by us yet, or lost) takes one of
        the next free write slots ahead of nodes of ours queued before it
        to be rewritten: after a member's crash, its nodes come back before
        most of the survivors' updates of theirs (which keep one slot in
        five, `sentinel.writes`).
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 2)
        self.start()
        owned = [self.instance(f"redis-{c}") for c in "abcd"]
        for state in owned:
            self.check(state, UP)
        self.zk.hang()
        for state in owned:
            self.check(state, DOWN)  # a and b written, c and d waiting
        self.check(self.instance("redis-new"), UP)  # waiting, missing
        self.zk.release()
        self.assertEqual(
            sorted((c.kind, c.path) for c in self.zk.held),
            [("create", path("redis-new")), ("set", path("redis-c"))],
        )
        self.zk.unhang()
        while self.zk.release():
            pass
        self.assertEqual(self.zk.document(path("redis-d"))["status"], "down")

    def test_changing_nodes_do_not_starve_waiting_ones(self) -> None:
        """
        A node waiting for a write slot is written even while the nodes in
        flight keep changing: a node that changed while being written queues
        behind those already waiting.
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 2)
        self.start()
        self.zk.hang()
        busy = [self.instance("redis-a"), self.instance("redis-b")]
        for state in busy:
            self.check(state, UP)
        quiet = self.instance("redis-c")
        self.check(quiet, UP)
        for i in range(10):
            for state in busy:
                self.check(state, DOWN if i % 2 == 0 else UP)
            self.zk.release()
        self.zk.unhang()
        self.assertIn(path("redis-c"), self.zk.nodes)
        self.assertEqual(self.zk.writes(path("redis-c")), 1)
        self.zk.release()
        self.assertEqual(
            self.zk.document(AGENT_PATH)["instances"],
            ["redis-a", "redis-b", "redis-c"],
        )

    # Write on change, refresh, heartbeat

    def test_unchanged_state_written_only_on_refresh(self) -> None:
        """
        Checks that change nothing write nothing until `refresh` seconds
        after the last write; then one refresh write carries the new
        `checked_at`.
        """
        self.start()
        state = self.instance("redis-a")
        node = path("redis-a")
        self.check(state, UP)
        self.assertEqual(self.zk.writes(node), 1)
        for _ in range(29):
            self.clock.advance(1)
            self.assertIsNone(self.check(state, UP))
        self.assertEqual(self.zk.writes(node), 1)
        self.clock.advance(1)
        self.assertIsNone(self.check(state, UP))
        self.assertEqual(self.zk.writes(node), 2)
        self.assertEqual(self.zk.document(node)["checked_at"], self.clock.seconds())
        self.clock.advance(1)
        self.assertIsNone(self.check(state, UP))
        self.assertEqual(self.zk.writes(node), 2)

    def rewrites(self, interval: float, checks: int) -> list[int]:
        """
        Which of `checks` unchanged checks, `interval` apart, wrote the
        node again, each write acknowledged 5 ms after its check.
        """
        self.start()
        state = self.instance("redis-a", interval)
        node = path("redis-a")
        self.zk.hold_answers("create", "set")
        written = []
        for index in range(checks + 1):
            before = self.zk.writes(node)
            self.check(state, UP)
            if self.zk.writes(node) > before:
                written.append(index)
            self.clock.advance(0.005)
            self.zk.release()
            self.clock.advance(interval - 0.005)
        return written

    def test_refresh_written_by_the_check_refresh_after(self) -> None:
        """
        With checks every interval, an unchanged node is written again by
        the check `refresh` seconds after the one written, although that
        write was acknowledged a little after its check: rewrites come
        `refresh` apart, not `refresh` plus an interval.
        """
        self.assertEqual(self.rewrites(INTERVAL, 90), [0, 30, 60, 90])

    def test_refresh_not_a_whole_number_of_intervals(self) -> None:
        """
        When `refresh` is not a whole number of intervals, the node is
        written again by the last check within `refresh` of the one
        written: rewrites never come further apart than `refresh`.
        """
        # 42 intervals of 0.7 s are 29.4 s; 43 would be 30.1 s.
        self.assertEqual(self.rewrites(0.7, 84), [0, 42, 84])

    def test_refresh_counted_from_checked_at_of_a_late_answer(self) -> None:
        """
        A write answered seconds after its check (ZooKeeper slow to
        answer: the node's first write at a start, say) is written again
        by the check `refresh` after the one it says (its ``checked_at``,
        which readers judge it by), not `refresh` after the answer: that
        left the node 5 s older than readers are promised.
        """
        self.start()
        state = self.instance("redis-a", INTERVAL)
        node = path("redis-a")
        self.zk.call_timeout = 60.0
        self.zk.hold_answers("create", "set")
        written = []
        for index in range(61):
            before = self.zk.writes(node)
            self.check(state, UP)
            if self.zk.writes(node) > before:
                written.append(index)
            self.clock.advance(0.005)
            # The first write answered 4 s after its check (past the
            # history's bound, 2 s), the others 5 ms after theirs.
            if index >= 4:
                self.zk.release()
            self.clock.advance(INTERVAL - 0.005)
        self.assertEqual(written, [0, 30, 60])

    def test_refresh_not_pushed_out_by_a_skipped_rewrite(self) -> None:
        """
        An instance node marked again with exactly what it holds (the same
        instance handed over in a new state, its history the same) is not
        set again, and its refresh still comes `REFRESH` after the write
        that was made, not `REFRESH` after the one skipped. Before, the
        node was set again with the same bytes, and its refresh counted
        from that set. A node another client wrote (its write watch finds
        it at another version) is set again with our bytes, though they
        are those of our last write.
        """
        self.start()
        state = self.instance("redis-a")
        node = path("redis-a")
        self.check(state, UP)
        self.assertEqual(self.zk.writes(node), 1)
        self.clock.advance(10)
        same = InstanceState(state.instance, FakeProbe(state.instance), state.health)
        self.publisher.publish(same, None)
        self.assertEqual(self.zk.writes(node), 1)
        self.assertEqual(self.publisher.stats()["writes_skipped_unchanged"], 1)
        for _ in range(int(REFRESH) - 10):
            self.clock.advance(1)
            self.check(same, UP)
        self.assertEqual(self.zk.writes(node), 2)
        self.assertEqual(self.zk.document(node)["checked_at"], self.clock.seconds())
        ours = self.zk.document(node)
        self.zk.server.put(node, b'{"status": "down"}', self.zk.session_id or 0)
        self.clock.advance(1)
        self.assertEqual(self.zk.document(node), ours)

    def test_transition_written_at_once(self) -> None:
        """A change is written at the check that saw it, without waiting."""
        self.start()
        state = self.instance("redis-a")
        self.check(state, UP)
        self.clock.advance(1)
        self.assertIsNotNone(self.check(state, DOWN))
        self.assertEqual(self.zk.writes(path("redis-a")), 2)
        self.assertEqual(self.zk.document(path("redis-a"))["status"], "down")

    def test_agent_heartbeat(self) -> None:
        """The agent node is rewritten every `heartbeat` seconds."""
        self.start()
        self.assertEqual(self.zk.writes(AGENT_PATH), 1)
        self.clock.advance(HEARTBEAT - 0.1)
        self.assertEqual(self.zk.writes(AGENT_PATH), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.zk.writes(AGENT_PATH), 2)
        self.assertEqual(
            self.zk.document(AGENT_PATH)["heartbeat_at"], self.clock.seconds()
        )
        for _ in range(3):
            self.clock.advance(HEARTBEAT)
        self.assertEqual(self.zk.writes(AGENT_PATH), 5)

    # Failures

    def test_failed_write_retried_after_delay(self) -> None:
        """
        A write that fails is retried after the retry delay, once per delay
        while it keeps failing, then written; the counters and `last_error`
        say so.
        """
        self.start()
        node = path("redis-a")
        self.zk.fail_next("create", ConnectionLoss(), path=node, times=3)
        state = self.instance("redis-a")
        self.check(state, UP)
        self.assertEqual(self.zk.writes(node), 1)
        self.assertNotIn(node, self.zk.nodes)
        stats = self.publisher.stats()
        self.assertEqual(stats["writes_failed"], 1)
        self.assertIn(node, stats["last_error"])
        self.assertIn("ConnectionLoss", stats["last_error"])
        self.assertEqual(stats["writes_queued"], 1)

        self.clock.advance(RETRY_DELAY * 0.99)
        self.assertEqual(self.zk.writes(node), 1)
        self.clock.advance(RETRY_DELAY * 0.01)
        self.assertEqual(self.zk.writes(node), 2)
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.zk.writes(node), 3)
        self.assertEqual(self.publisher.stats()["writes_failed"], 3)
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.zk.writes(node), 4)
        self.assertEqual(self.zk.document(node), published(state))
        stats = self.publisher.stats()
        self.assertEqual((stats["writes_failed"], stats["writes_queued"]), (3, 0))
        self.clock.advance(RETRY_DELAY * 5)
        self.assertEqual(self.zk.writes(node), 4)

    def test_timed_out_write_retried(self) -> None:
        """A write that never answers ends with the call's timeout and is retried."""
        self.start()
        self.zk.hang("create")
        state = self.instance("redis-a")
        self.check(state, UP)
        self.zk.unhang()
        self.clock.advance(self.zk.call_timeout)
        self.assertIn("TimeoutError", self.publisher.last_error or "")
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.zk.document(path("redis-a")), published(state))

    def test_nothing_written_while_suspended(self) -> None:
        """
        While the connection is down nothing is sent; on reconnection every
        node is written from the current state, changes and new instances
        made while away included.
        """
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        session = self.zk.session_id
        self.zk.suspend()
        calls = self.total_calls()
        self.check(a, DOWN)
        b = self.instance("redis-b")
        self.check(b, UP)
        for _ in range(60):
            self.clock.advance(1)
            self.check(a, DOWN)
            self.check(b, UP)
        self.assertEqual(self.total_calls(), calls)

        self.zk.connect()
        self.assertEqual(self.zk.session_id, session)
        for state in (a, b):
            self.assertEqual(self.zk.document(path(state.name)), published(state))
            self.assertEqual(self.zk.owner(path(state.name)), session)
        agent = self.zk.document(AGENT_PATH)
        self.assertEqual(agent["instances"], ["redis-a", "redis-b"])
        self.assertEqual(agent["heartbeat_at"], self.clock.seconds())
        self.assertEqual(self.publisher.stats()["writes_queued"], 0)

    def test_reconnect_rewrites_unchanged_nodes(self) -> None:
        """Back on the same session, unchanged nodes are written again too."""
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        versions = {p: self.zk.nodes[p].version for p in (path("redis-a"), AGENT_PATH)}
        self.zk.suspend()
        self.zk.connect()
        for node, version in versions.items():
            self.assertEqual(self.zk.nodes[node].version, version + 1)

    def test_session_expiry_recreates_every_node(self) -> None:
        """
        After the session expired (its ephemeral nodes gone), the new
        session re-creates every node from the current state.
        """
        self.start()
        a, b = self.instance("redis-a"), self.instance("redis-b")
        self.check(a, UP)
        self.check(b, UP)
        old_session = self.zk.session_id
        self.zk.expire()
        self.assertEqual(self.zk.nodes.keys() & {path("redis-a"), AGENT_PATH}, set())
        self.clock.advance(5)
        self.check(a, DOWN)
        self.zk.connect()
        new_session = self.zk.session_id
        self.assertNotEqual(new_session, old_session)
        for state in (a, b):
            node = path(state.name)
            self.assertEqual(self.zk.owner(node), new_session)
            self.assertEqual(self.zk.document(node), published(state))
            self.assertEqual(self.zk.calls_by_path["create", node], 2)
        self.assertEqual(self.zk.document(path("redis-a"))["status"], "down")
        self.assertEqual(self.zk.owner(AGENT_PATH), new_session)
        self.assertEqual(self.publisher.stats()["writes_queued"], 0)

    def test_after_expiry_ownership_asked_again(self) -> None:
        """
        A node that another session created while ours was expired is not
        overwritten on reconnection: the publisher asks who owns it rather
        than trusting that it once did.
        """
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        self.zk.expire()
        self.zk.put(path("redis-a"), b"other agent", owner=OTHER_SESSION)
        self.zk.connect()
        self.assertEqual(self.zk.nodes[path("redis-a")].data, b"other agent")
        self.assertEqual(self.publisher.stats()["waiting_takeover"], [path("redis-a")])

    # Takeover

    def test_node_of_another_session_taken_over_once_gone(self) -> None:
        """
        A node held by another session (an old agent process) is neither
        overwritten nor deleted, nor asked about at every retry; it is
        listed as waiting for takeover, and created as soon as a watch says
        it is gone.
        """
        node = path("redis-a")
        self.zk.put(node, b"old agent", owner=OTHER_SESSION)
        self.start()
        state = self.instance("redis-a")
        self.check(state, UP)
        for _ in range(5):
            self.assertEqual(self.zk.nodes[node].data, b"old agent")
            self.assertEqual(self.zk.owner(node), OTHER_SESSION)
            self.assertEqual(self.publisher.stats()["waiting_takeover"], [node])
            self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.zk.calls_by_path["set", node], 0)
        self.assertEqual(self.zk.calls_by_path["delete", node], 0)
        # One create, then an exists at first sight and after 1 and 3 s.
        self.assertEqual(self.zk.calls_by_path["create", node], 1)
        self.assertEqual(self.zk.calls_by_path["exists", node], 3)
        self.assertEqual(self.publisher.stats()["writes_failed"], 0)

        self.zk.end_session(OTHER_SESSION)
        self.clock.advance(0)
        self.assertEqual(self.zk.owner(node), self.zk.session_id)
        self.assertEqual(self.zk.document(node), published(state))
        self.assertEqual(self.publisher.stats()["waiting_takeover"], [])

    def test_live_holder_judged_by_the_granted_timeout(self) -> None:
        """
        A node another session holds and writes is a live conflict once it
        has held it for the session timeout ZooKeeper granted (plus the
        margin), not the one asked: a predecessor granted 20 s like us
        still has 25 s to go.
        """
        node = path("redis-a")
        self.zk.put(node, b"old agent", owner=OTHER_SESSION)
        self.zk.session_timeout = 20.0  # Granted at the connection; 10 asked.
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.clock.advance(1.0)
        self.zk.put(node, b"old agent, written again", owner=OTHER_SESSION)
        self.clock.advance(10.0 + CONFLICT_MARGIN)
        self.assertEqual(self.publisher.stats()["conflicts"], {})
        self.clock.advance(20.0 - 10.0 - 1.0)
        self.assertEqual(list(self.publisher.stats()["conflicts"]), [node])

    def test_agent_node_of_another_session_waits_too(self) -> None:
        """An agent node held by another session is listed as waiting too."""
        self.zk.put(AGENT_PATH, b"old agent", owner=OTHER_SESSION)
        self.start()
        self.assertEqual(self.publisher.stats()["waiting_takeover"], [AGENT_PATH])
        self.assertEqual(self.zk.nodes[AGENT_PATH].data, b"old agent")
        self.zk.end_session(OTHER_SESSION)
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.zk.owner(AGENT_PATH), self.zk.session_id)

    def test_own_node_from_same_session_adopted(self) -> None:
        """A node already owned by our session is updated in place."""
        self.start()
        node = path("redis-a")
        self.zk.put(node, b"ours", owner=self.zk.session_id or 0)
        state = self.instance("redis-a")
        self.check(state, UP)
        self.assertEqual(self.zk.document(node), published(state))
        self.assertEqual(self.publisher.stats()["writes_failed"], 0)

    def test_replaced_instance_writes_its_new_state(self) -> None:
        """
        A reload that changes an instance gives its name a new state: the
        node is rewritten from the new state at once, not from the old one.
        """
        self.start()
        old = self.instance("redis-a")
        self.check(old, UP)
        new = InstanceState(
            RedisInstance("redis-a", "10.0.0.2", 6380),
            FakeProbe(RedisInstance("redis-a", "10.0.0.2", 6380)),
            InstanceHealth(rise=1, fall=1),
        )
        self.check(new, DOWN)
        document = self.zk.document(path("redis-a"))
        self.assertEqual((document["host"], document["port"]), ("10.0.0.2", 6380))
        self.assertEqual(document["status"], "down")
        self.clock.advance(REFRESH)
        self.check(new, DOWN)
        self.assertEqual(self.zk.document(path("redis-a"))["host"], "10.0.0.2")

    # Removal

    def test_remove_deletes_node_and_updates_agent(self) -> None:
        """
        Removing an instance deletes its node and rewrites the agent node
        without it.
        """
        self.start()
        a, b = self.instance("redis-a"), self.instance("redis-b")
        self.check(a, UP)
        self.check(b, UP)
        self.unwatch("redis-a")
        self.assertNotIn(path("redis-a"), self.zk.nodes)
        self.assertEqual(self.zk.calls_by_path["delete", path("redis-a")], 1)
        self.assertEqual(self.zk.document(AGENT_PATH)["instances"], ["redis-b"])
        self.clock.advance(REFRESH * 2)
        self.assertNotIn(path("redis-a"), self.zk.nodes)

    def test_remove_leaves_another_sessions_node(self) -> None:
        """A removed instance's node held by another session is not deleted."""
        node = path("redis-a")
        self.zk.put(node, b"old agent", owner=OTHER_SESSION)
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.unwatch("redis-a")
        self.clock.advance(RETRY_DELAY * 3)
        self.assertEqual(self.zk.nodes[node].data, b"old agent")
        self.assertEqual(self.zk.calls_by_path["delete", node], 0)
        self.assertEqual(self.publisher.stats()["waiting_takeover"], [])

    def test_removed_during_write_later_state_not_written(self) -> None:
        """
        An instance removed while its create is in flight ends deleted, and
        its state after the removal is never written.
        """
        self.start()
        self.zk.hang()
        state = self.instance("redis-a")
        node = path("redis-a")
        self.check(state, UP)
        self.unwatch("redis-a")
        state.health.observe(DOWN, self.clock.seconds())
        self.zk.unhang()
        self.zk.release()
        self.assertNotIn(node, self.zk.nodes)
        self.assertEqual(self.zk.writes(node), 1)
        self.clock.advance(REFRESH * 2)
        self.assertEqual(self.zk.writes(node), 1)
        self.assertNotIn(node, self.zk.nodes)

    def test_removed_while_disconnected_never_written(self) -> None:
        """An instance seen and removed while disconnected is never written."""
        self.start(connect=False)
        self.check(self.instance("redis-a"), UP)
        self.unwatch("redis-a")
        self.zk.connect()
        self.assertEqual(self.zk.writes(path("redis-a")), 0)
        self.assertNotIn(path("redis-a"), self.zk.nodes)
        self.assertEqual(self.zk.document(AGENT_PATH)["instances"], [])

    def test_failed_delete_retried(self) -> None:
        """
        A removal whose delete fails is retried until the node is gone,
        also when the removal came while the node's create was in flight.
        """
        self.start()
        self.zk.hang("create")
        node = path("redis-a")
        self.check(self.instance("redis-a"), UP)
        self.unwatch("redis-a")
        self.zk.unhang()
        self.zk.fail_next("exists", ConnectionLoss(), path=node)
        self.zk.release()
        self.assertIn(node, self.zk.nodes)
        self.clock.advance(RETRY_DELAY)
        self.assertNotIn(node, self.zk.nodes)

    def test_readded_instance_published(self) -> None:
        """An instance removed and added again is published again."""
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.unwatch("redis-a")
        again = self.instance("redis-a")
        self.check(again, DOWN)
        self.assertEqual(self.zk.document(path("redis-a")), published(again))
        self.clock.advance(REFRESH)
        self.assertEqual(self.zk.document(path("redis-a")), published(again))

    def test_readded_while_its_delete_waits_costs_one_write(self) -> None:
        """
        An instance removed and added again, over and over, while its
        delete waits for a write slot (a storm of reloads, ZooKeeper
        behind) is written once, its newest state: each delete still
        waiting when it came back is dropped, not made later, one call
        per removal, over the node written since.
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 1)
        self.start()
        self.check(self.instance("redis-a"), UP)
        node = path("redis-a")
        self.zk.hang()
        self.check(self.instance("redis-b"), UP)  # Holds the only slot.
        calls = Counter(self.zk.calls_by_path)
        for _ in range(10):
            self.unwatch("redis-a")
            again = self.instance("redis-a")
            self.check(again, DOWN)
        self.zk.unhang()
        while self.zk.release():
            pass
        self.clock.advance(RETRY_DELAY)
        done = {
            kind: self.zk.calls_by_path[kind, node] - calls[kind, node]
            for kind in ("exists", "delete", "create", "set")
        }
        # The one read: the write watch's, set again after that set.
        self.assertEqual(done, {"exists": 1, "delete": 0, "create": 0, "set": 1})
        self.assertEqual(self.zk.document(node), published(again))

    # Stopping

    def test_stop_deletes_nodes_then_closes(self) -> None:
        """
        A clean stop deletes our nodes, then closes the session, and
        writes nothing more.
        """
        self.start()
        for name in ("redis-a", "redis-b"):
            self.check(self.instance(name), UP)
        self.successResultOf(self.publisher.stopService())
        owned = [path("redis-a"), path("redis-b"), AGENT_PATH]
        for node in owned:
            self.assertNotIn(node, self.zk.nodes)
        deletes = [i for i, (kind, _) in enumerate(self.zk.history) if kind == "delete"]
        self.assertEqual(len(deletes), 3)
        self.assertEqual(self.zk.history[-1], ("stop", ""))
        self.assertEqual(self.zk.stopped_with, [STOP_CLOSE_TIMEOUT])
        calls = self.total_calls()
        self.clock.advance(REFRESH * 2)
        self.assertEqual(self.total_calls(), calls)

    def test_stop_leaves_many_nodes_to_the_close(self) -> None:
        """
        With more than STOP_DELETES nodes, a clean stop deletes none of
        them one by one: closing the session removes them all at once.
        """
        self.start()
        names = [f"redis-{i}" for i in range(STOP_DELETES + 1)]
        for name in names:
            self.check(self.instance(name), UP)
        self.assertTrue(all(path(name) in self.zk.nodes for name in names))
        self.successResultOf(self.publisher.stopService())
        self.assertNotIn("delete", [kind for kind, _ in self.zk.history])
        self.assertEqual(self.zk.history[-1], ("stop", ""))
        for name in names:
            self.assertNotIn(path(name), self.zk.nodes)
        self.assertNotIn(AGENT_PATH, self.zk.nodes)

    def test_stop_bounded_when_zookeeper_hangs(self) -> None:
        """
        With every ZooKeeper call hanging, the stop still completes after the
        delete timeout plus the close timeout, well within 5 s, and leaves
        no call outstanding.
        """
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.zk.hang(*CALL_KINDS, "stop")
        d = self.publisher.stopService()
        self.clock.advance(STOP_DELETE_TIMEOUT - 0.01)
        self.assertNoResult(d)
        self.assertEqual(self.zk.stopped_with, [])
        self.clock.advance(0.01)
        self.assertEqual(self.zk.stopped_with, [STOP_CLOSE_TIMEOUT])
        self.clock.advance(STOP_CLOSE_TIMEOUT - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.successResultOf(d)
        self.assertLessEqual(STOP_DELETE_TIMEOUT + STOP_CLOSE_TIMEOUT, STOP_BUDGET)
        self.assertEqual(self.zk.held, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_new_writes_once_stopping(self) -> None:
        """
        A write that completes while the stop deletes our nodes starts no
        new write, even when its node changed meanwhile.
        """
        self.start()
        self.zk.hang("create", "delete")
        state = self.instance("redis-a")
        self.check(state, UP)
        self.check(state, DOWN)
        d = self.publisher.stopService()
        self.zk.release("create")
        self.assertEqual(self.zk.writes(path("redis-a")), 1)
        self.zk.release("delete")
        self.successResultOf(d)

    def test_stop_before_connected(self) -> None:
        """A stop with ZooKeeper never reached ends at once."""
        self.start(connect=False)
        self.check(self.instance("redis-a"), UP)
        self.successResultOf(self.publisher.stopService())
        self.assertEqual(self.total_calls(), 0)

    # Health

    def test_unhealthy_reason(self) -> None:
        """
        `unhealthy_reason()` is None while connected and a one-line reason
        naming the state and its duration otherwise.
        """
        self.start(connect=False)
        reason = self.publisher.unhealthy_reason()
        assert reason is not None
        self.assertIn("connecting", reason)
        self.zk.connect()
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.zk.suspend()
        self.clock.advance(3)
        reason = self.publisher.unhealthy_reason()
        assert reason is not None
        self.assertIn("suspended for 3.0 s", reason)
        self.assertNotIn("\n", reason)
        self.zk.connect()
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_session_timeouts_shown(self) -> None:
        """
        /debug/stats shows the session timeout asked and the one ZooKeeper
        granted (null until it has).
        """
        self.start(connect=False)
        stats = self.publisher.stats()
        self.assertEqual(stats["session_timeout_requested"], 10.0)
        self.assertIsNone(stats["session_timeout_granted"])
        self.zk.granted_timeout = 4.0
        self.assertEqual(self.publisher.stats()["session_timeout_granted"], 4.0)

    def test_connection_failure_named(self) -> None:
        """
        While not connected, /healthz's reason names why the last
        connection attempt failed, and /debug/stats shows it.
        """
        self.start(connect=False)
        self.zk.connect_error = "Connection dropped: socket connection broken"
        self.clock.advance(12)
        self.assertIn(
            "zookeeper connecting for 12.0 s "
            "(Connection dropped: socket connection broken): published status",
            self.publisher.unhealthy_reason() or "",
        )
        self.assertEqual(
            self.publisher.stats()["connect_error"],
            "Connection dropped: socket connection broken",
        )

    def test_queued_writes_of_the_agent_alone_named_so(self) -> None:
        """
        While ZooKeeper is not reached, /healthz says whose the queued
        writes are when they are all the agent's own nodes (a start, no
        instance published yet): they read as instances' writes. With an
        instance's write queued too, it gives the count and names the nodes
        queued.
        """
        self.start(connect=False)
        self.assertTrue(
            (self.publisher.unhealthy_reason() or "").endswith(
                "published status may be stale (1 writes queued, all of the "
                "agent's own nodes: none of an instance)"
            ),
            self.publisher.unhealthy_reason(),
        )
        self.check(self.instance("redis-a"), UP)
        self.assertTrue(
            (self.publisher.unhealthy_reason() or "").endswith(
                "published status may be stale (2 writes queued:"
                f" {AGENT_PATH}, {path('redis-a')})"
            ),
            self.publisher.unhealthy_reason(),
        )

    def test_another_ensemble_named(self) -> None:
        """
        A session on another ensemble than the one published to fails
        /healthz, connected or not, with the bridge's reason naming the
        server; back on the ensemble, it passes.
        """
        self.start()
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.zk.foreign = "ZooKeeper at 127.0.0.1:2182 is another ensemble"
        self.assertEqual(
            self.publisher.unhealthy_reason(),
            "zookeeper: ZooKeeper at 127.0.0.1:2182 is another ensemble",
        )
        self.zk.foreign = None
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_server_not_answering_named(self) -> None:
        """
        A connected server that has stopped answering fails /healthz with
        the bridge's reason naming it, and /debug/stats counts the
        connections dropped so; once it answers again, /healthz passes.
        """
        self.start()
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.zk.silence = "ZooKeeper at 127.0.0.1:2181 has answered nothing for 4.0 s"
        self.zk.drops = 2
        self.assertEqual(
            self.publisher.unhealthy_reason(),
            "zookeeper: ZooKeeper at 127.0.0.1:2181 has answered nothing for "
            "4.0 s: published status may be stale (0 writes queued)",
        )
        self.assertEqual(self.publisher.stats()["connections_dropped"], 2)
        self.zk.silence = None
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_outage_counted_from_first_loss(self) -> None:
        """
        /healthz counts an outage from the connection's loss: suspended
        for 9.5 s, then lost (the client replaced, or the session ended),
        it says 10.0 s, not the time since the last state change; once
        connected again, a new outage counts from zero.
        """
        self.start()
        self.clock.advance(3)
        self.zk.suspend()
        self.clock.advance(9.5)
        self.zk.expire()
        self.clock.advance(0.5)
        self.assertIn(
            "zookeeper lost for 10.0 s: published status",
            self.publisher.unhealthy_reason() or "",
        )
        self.zk.connect()
        self.clock.advance(4)
        self.zk.suspend()
        self.clock.advance(1)
        self.assertIn(
            "zookeeper suspended for 1.0 s: published status",
            self.publisher.unhealthy_reason() or "",
        )

    def test_outage_without_quorum_named(self) -> None:
        """
        While the servers reached close every handshake or never answer
        it (an ensemble without a quorum), /healthz names each and what
        it means, and says the session is not lost, though the client was
        replaced (its state "lost"): it is asked for again, and only the
        ensemble expires it. It said "zookeeper lost", with one cause.
        """
        self.start()
        self.zk.suspend()
        self.zk.expire()
        self.zk.resuming_session = 0x1234
        self.zk.handshakes_failed = {
            "127.0.0.1:2181": "accepted the connection and closed it at the "
            "handshake: it runs but serves no client",
            "127.0.0.1:2182": "accepted the connection and never answered",
        }
        self.zk.connect_error = (
            "127.0.0.1:2182 accepted the connection and never answered"
        )
        self.clock.advance(12)
        self.assertIn(
            "zookeeper unreachable (session 0x1234 not lost: asked for again, and "
            "only the ensemble expires it) for 12.0 s (127.0.0.1:2181 accepted the "
            "connection and closed it at the handshake: it runs but serves no "
            "client; 127.0.0.1:2182 accepted the connection and never answered): "
            "published status may be stale",
            self.publisher.unhealthy_reason() or "",
        )

    def test_node_that_keeps_failing_makes_unhealthy(self) -> None:
        """
        A node whose writes keep failing while ZooKeeper is connected (its
        ACL changed behind our back) fails /healthz after FAILING_AFTER,
        naming it and the error, since its published status is stale; a
        failure that clears sooner does not; once written, health is back.
        """
        self.start()
        node = path("redis-a")
        state = self.instance("redis-a")
        self.check(state, UP)
        self.zk.fail_next("set", ConnectionLoss(), path=node, times=2)
        self.check(state, DOWN)
        self.retries(2)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.zk.document(node)["status"], "down")

        retries = int(FAILING_AFTER / RETRY_DELAY) + 3
        self.zk.fail_next("set", NoAuthError(), path=node, times=retries + 1)
        self.check(state, UP)
        self.retries(int(FAILING_AFTER / RETRY_DELAY) - 1)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.publisher.stats()["writes_failing"], 1)
        self.retries(2)
        self.assertEqual(
            self.publisher.unhealthy_reason(),
            f"zookeeper: {node} not written for {FAILING_AFTER + RETRY_DELAY:.0f} s"
            " (NoAuthError): its published status is stale",
        )
        self.assertEqual(self.zk.document(node)["status"], "down")
        self.retries(retries)
        self.assertEqual(self.zk.document(node)["status"], "up")
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.publisher.stats()["writes_failing"], 0)

    def test_late_writes_make_unhealthy(self) -> None:
        """
        Writes that succeed, but so slowly that the nodes waiting for a
        slot publish data older than refresh and the instance's staleness
        bound (a narrow link to ZooKeeper), fail /healthz, naming the
        oldest, how old it is and how many more; the writes in flight are
        not counted, and once the writes go through, health is back. The
        next ten late are named after the oldest (`sentinel.sample`).
        """
        self.start()
        states = [self.instance(f"redis-{i:02d}", interval=INTERVAL) for i in range(20)]
        for state in states:
            self.check(state, UP)
        self.zk.call_timeout = 1000.0  # Slow, never failing.
        self.zk.hang("set")
        limit = REFRESH + states[0].health.stale_after
        for _ in range(int(limit)):
            self.clock.advance(INTERVAL)
            for state in states:
                self.check(state, UP)
        self.assertIsNone(self.publisher.unhealthy_reason())
        in_flight = self.publisher.stats()["writes_in_flight"]
        self.assertGreater(in_flight, 0)
        self.clock.advance(INTERVAL)
        for state in states:
            self.check(state, UP)
        reason = self.publisher.unhealthy_reason()
        assert reason is not None
        # The agent node's write may take one of the slots.
        late = self.publisher.stats()["writes_late"]
        self.assertIn(late, (len(states) - in_flight, len(states) + 1 - in_flight))
        self.assertRegex(
            reason,
            rf"^zookeeper: writes are late: {ROOT}/instances/redis-\d\d "
            rf"{limit + 1:.0f} s old and waiting to be written \(and "
            rf"{late - 1} more: {TEN_INSTANCES} and {late - 1 - NAMED} more\), "
            rf"over refresh \(30 s\): readers see stale "
            rf"data \(\d+ writes queued, {in_flight} in flight\)$",
        )
        self.zk.unhang()
        self.zk.release()
        self.clock.advance(INTERVAL)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.publisher.stats()["writes_late"], 0)

    def test_nodes_never_written_make_unhealthy(self) -> None:
        """
        Instance nodes this agent has not written yet (missing for
        readers), waiting for a write slot `UNWRITTEN_AFTER` after they
        were first due, fail /healthz, naming the oldest and how many
        more, the next ten by path: before, only after refresh and the
        staleness bound (34 s at the defaults). Once written, health is back.
        """
        self.start()
        self.zk.call_timeout = 1000.0  # Slow, never failing.
        self.zk.hang("create")
        states = [self.instance(f"redis-{i:02d}", interval=INTERVAL) for i in range(20)]
        for state in states:
            self.check(state, UP)
        self.clock.advance(UNWRITTEN_AFTER - 1)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.clock.advance(1)
        in_flight = self.publisher.stats()["writes_in_flight"]
        waiting = self.publisher.stats()["instance_nodes_unwritten"]
        self.assertEqual(waiting, len(states) - in_flight)
        self.assertRegex(
            self.publisher.unhealthy_reason() or "",
            rf"^zookeeper: {ROOT}/instances/redis-\d\d not written by this agent"
            rf" yet, due {UNWRITTEN_AFTER:.0f} s ago and waiting to be written"
            rf" \(and {waiting - 1} more: {TEN_INSTANCES} and"
            rf" {waiting - 1 - NAMED} more\): readers find it missing, or another"
            rf" session's \(\d+ writes queued, {in_flight} in flight\)$",
        )
        self.zk.unhang()
        self.zk.release()
        self.clock.advance(INTERVAL)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.publisher.stats()["instance_nodes_unwritten"], 0)

    def test_change_waiting_counts_from_last_write(self) -> None:
        """
        A status change waiting for a slot is late by the age of what the
        node says, not by its own wait: a node written 20 s before its
        instance went down is late once that write is older than the
        bound, though the change waited less.
        """
        self.start()
        states = [self.instance(f"redis-{i:02d}", interval=INTERVAL) for i in range(20)]
        for state in states:
            self.check(state, UP)
        limit = REFRESH + states[0].health.stale_after
        self.clock.advance(20)
        self.zk.call_timeout = 1000.0
        self.zk.hang("set")
        for state in states:
            self.check(state, DOWN)
        self.clock.advance(limit - 20 - 1)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.clock.advance(2)
        self.assertIn(
            f"{limit + 1:.0f} s old and waiting",
            self.publisher.unhealthy_reason() or "",
        )

    def test_failing_reason_says_the_write_in_flight(self) -> None:
        """
        A node whose last write was lost with the connection, and whose
        write since has not ended, is named with that error and with what
        happens now: the error alone would say "not connected" while
        connected.
        """
        self.start()
        node = path("redis-a")
        state = self.instance("redis-a")
        self.check(state, UP)
        self.zk.fail_next(
            "set", ConnectionLoss("not connected to ZooKeeper"), path=node
        )
        self.check(state, DOWN)
        self.zk.call_timeout = 60.0  # A slow write, not one timed out.
        self.zk.hang("set")
        self.retries(int(FAILING_AFTER / RETRY_DELAY) + 1)
        self.assertEqual(
            self.publisher.unhealthy_reason(),
            f"zookeeper: {node} not written for {FAILING_AFTER + RETRY_DELAY:.0f} s"
            " (ConnectionLoss: not connected to ZooKeeper; being written again):"
            " its published status is stale",
        )

    def test_many_failing_nodes_logged_once(self) -> None:
        """
        Thousands of nodes denied alike are one reason naming the oldest and
        counting the rest, and one log line when failures start and one
        when they end, not a line per node per retry.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start()
        names = [f"redis-{i:03d}" for i in range(200)]
        for name in names:
            self.zk.fail_next("create", NoAuthError(), path=path(name), times=10)
        for name in names:
            self.check(self.instance(name), UP)
        self.retries(int(FAILING_AFTER / RETRY_DELAY))
        reason = self.publisher.unhealthy_reason()
        assert reason is not None
        self.assertIn(f"{path(names[0])} not written for", reason)
        self.assertIn(
            f"(and 199 more: {', '.join(path(n) for n in names[1:11])} and 189"
            " more): its published status is stale",
            reason,
        )
        self.retries(10)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(
            [self.zk.document(path(name))["status"] for name in names],
            ["up"] * len(names),
        )
        lines = [text for text in map(formatEvent, events) if "ZooKeeper write" in text]
        self.assertEqual(
            lines,
            [
                f"ZooKeeper write failed, will retry: {path(names[0])}: NoAuthError",
                f"ZooKeeper writes succeed again ({path(names[-1])} written)",
            ],
        )

    def test_stats(self) -> None:
        """`stats()` reports the session and the write counters."""
        self.start()
        self.check(self.instance("redis-a"), UP)
        stats = self.publisher.stats()
        self.assertEqual(stats["state"], "connected")
        self.assertEqual(stats["session_id"], f"{self.zk.session_id:#x}")
        self.assertEqual(stats["writes_ok"], 3)
        self.assertEqual(
            (stats["writes_failed"], stats["writes_queued"], stats["writes_in_flight"]),
            (0, 0, 0),
        )


class ClockSkewTests(PublisherHarness):
    """This agent's clock against ZooKeeper's, at each heartbeat."""

    def test_clock_off_zookeepers_fails_healthz(self) -> None:
        """
        A clock 30 s behind ZooKeeper's (its ``mtime`` of the agent node's
        writes) fails /healthz with the figure, at the next heartbeat; so
        does one ahead; within `SKEW_LIMIT` of it, nothing is said.
        """
        server = self.zk.server
        offset = [0.0]
        self.patch(
            server, "millis", lambda: int((self.clock.seconds() + offset[0]) * 1000)
        )
        self.start()
        self.clock.advance(HEARTBEAT)
        self.assertIsNone(self.publisher.unhealthy_reason())
        offset[0] = 30.0
        self.clock.advance(HEARTBEAT)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("this agent's clock is 30.0 s behind ZooKeeper's", reason)
        offset[0] = -60.0
        self.clock.advance(HEARTBEAT)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("this agent's clock is 60.0 s ahead of ZooKeeper's", reason)
        offset[0] = SKEW_LIMIT - 0.5
        self.clock.advance(HEARTBEAT)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def skewed_zookeeper(self, offset: float) -> None:
        """ZooKeeper's stamps `offset` seconds ahead of the agents' clocks."""
        server = self.zk.server
        self.patch(
            server, "millis", lambda: int((self.clock.seconds() + offset) * 1000)
        )

    def other_agent(self, name: str, clock_off: float) -> None:
        """Another agent's node, written now by a clock `clock_off` s ahead."""
        now = self.clock.seconds() + clock_off
        document = agent_document(name, START, now, INTERVAL, [])
        self.zk.server.put(f"{ROOT}/agents/{name}", encode(document), owner=77)

    def test_zookeepers_clock_off_is_not_the_agents(self) -> None:
        """
        ZooKeeper's clock (its leader's) 30 s ahead, and the other agents'
        clocks agree with this one's: ZooKeeper's is the odd clock, so
        /healthz passes; the log says so once, and /debug/stats has the
        figures. Once ZooKeeper's clock is right again, the log says that.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.skewed_zookeeper(30.0)
        self.start()
        for name in ("agent-2", "agent-3", "agent-4"):
            self.other_agent(name, 0.0)
        self.clock.advance(HEARTBEAT)
        self.assertIsNone(self.publisher.unhealthy_reason())
        clock = self.publisher.stats()["clock"]
        self.assertEqual((clock["others_compared"], clock["others_agreeing"]), (3, 3))
        self.assertTrue(clock["zookeeper_clock_off"])
        self.clock.advance(HEARTBEAT)
        said = [formatEvent(e) for e in events if "ZooKeeper's clock" in formatEvent(e)]
        self.assertEqual(len(said), 1, said)
        self.assertIn(
            "ZooKeeper's clock (its leader's) is 30.0 s ahead of this agent's,"
            " and 3 of 3 other agent(s) agree with this agent's",
            said[0],
        )
        # Judged once under this leader: the others are not read again.
        listings = ("get_children", f"{ROOT}/agents")
        self.assertEqual(self.zk.calls_by_path[listings], 1)
        self.skewed_zookeeper(0.0)
        self.clock.advance(HEARTBEAT)
        said = [formatEvent(e) for e in events if "ZooKeeper's clock" in formatEvent(e)]
        self.assertEqual(said[1:], ["ZooKeeper's clock agrees with this agent's again"])

    def test_agents_clock_off_when_others_agree_with_zookeeper(self) -> None:
        """
        This agent's clock 30 s behind, and most other agents' clocks agree
        with ZooKeeper's (one is off as this one is): /healthz fails,
        blaming this agent's clock, and saying how many agree.
        """
        self.skewed_zookeeper(30.0)
        self.start()
        self.other_agent("agent-2", 30.0)
        self.other_agent("agent-3", 30.0)
        self.other_agent("agent-4", 0.0)
        self.clock.advance(HEARTBEAT)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("this agent's clock is 30.0 s behind ZooKeeper's", reason)
        self.assertIn("2 of 3 other agent(s) agree", reason)

    def test_only_group_members_compared(self) -> None:
        """
        In a group, only the members in its view are compared: 100 nodes
        a squatter wrote under {root}/agents with this agent's wrong clock
        (every pick theirs, most likely) made ZooKeeper's clock the odd
        one, and /healthz pass with this agent's clock 30 s behind; the
        one member, agreeing with ZooKeeper, blames this agent's clock,
        and {root}/agents is not listed.
        """
        self.skewed_zookeeper(30.0)
        self.publisher.compare_clocks_with(lambda: {"agent-2", "squat-member"})
        self.start()
        self.other_agent("agent-2", 30.0)
        for i in range(100):
            self.other_agent(f"squat-{i}", 0.0)
        self.clock.advance(HEARTBEAT)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("this agent's clock is 30.0 s behind ZooKeeper's", reason)
        self.assertIn("1 of 1 other agent(s) agree", reason)
        listings = ("get_children", f"{ROOT}/agents")
        self.assertEqual(self.zk.calls_by_path[listings], 0)

    def test_other_agents_under_another_leader_not_compared(self) -> None:
        """
        The other agents' nodes were stamped before a leader election
        (another epoch in their mzxid: another leader's clock): they tell
        nothing of the new leader's clock, and this agent's offset fails
        /healthz until they are written under the same leader.
        """
        self.start()
        for name in ("agent-2", "agent-3"):
            self.other_agent(name, 0.0)
        # A new leader, 30 s ahead: a new epoch in the high bits of zxids.
        self.zk.server._zxid = 1 << 32
        self.skewed_zookeeper(30.0)
        self.clock.advance(HEARTBEAT)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("no other agent's node stamped by the same leader", reason)
        for name in ("agent-2", "agent-3"):
            self.other_agent(name, 0.0)
        self.clock.advance(HEARTBEAT)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_unreadable_agent_nodes_not_compared(self) -> None:
        """
        Nodes under ``{root}/agents`` that no agent wrote (garbage, JSON
        nested too deep to parse, a time that is no number) are left out
        of the comparison, without an error logged: this agent is blamed as
        when it is alone, and one readable node beside them still counts.
        """
        self.skewed_zookeeper(30.0)
        self.start()
        for name, data in (
            ("squat-1", b"\xff"),
            ("squat-2", b"[" * 100_000),
            ("squat-3", b'{"heartbeat_at": true}'),
        ):
            self.zk.server.put(f"{ROOT}/agents/{name}", data, owner=77)
        self.clock.advance(HEARTBEAT)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("no other agent's node stamped by the same leader", reason)
        self.other_agent("agent-2", 0.0)
        self.clock.advance(HEARTBEAT)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_agent_nodes_of_no_time_not_compared(self) -> None:
        """
        Agent nodes whose ``heartbeat_at`` is a number but no time (an
        integer too large for a float, Infinity, NaN) are left out, and the
        other agents' still count: ZooKeeper's clock is found off, without
        an error logged.
        """
        self.skewed_zookeeper(30.0)
        self.start()
        for name, data in (
            ("squat-1", b'{"heartbeat_at": 1' + b"0" * 400 + b"}"),
            ("squat-2", b'{"heartbeat_at": Infinity}'),
            ("squat-3", b'{"heartbeat_at": NaN}'),
        ):
            self.zk.server.put(f"{ROOT}/agents/{name}", data, owner=77)
        self.other_agent("agent-2", 0.0)
        self.clock.advance(HEARTBEAT)
        self.assertIsNone(self.publisher.unhealthy_reason())
        clock = self.publisher.stats()["clock"]
        self.assertEqual((clock["others_compared"], clock["others_agreeing"]), (1, 1))
        self.assertEqual(self.flushLoggedErrors(), [])


class CrashedPredecessorTests(PublisherHarness):
    """
    A node left by a crashed process of this agent (no state_dir), held
    by its session until that expires: the node this process makes then.
    """

    def left(self, **fields: object) -> bytes:
        """What the crashed process's node of ``redis-a`` said."""
        document = {
            "name": "redis-a",
            "status": "up",
            "since": START - 100.0,
            "checked_at": START - 1.0,
            "agent": AGENT,
            "schema": 1,
        }
        document.update(fields)
        return encode(document)

    def made_after_the_crash(self, data: bytes, seen: Observation = UP) -> Any:
        """The node made once the crashed session ends, and the state."""
        node = path("redis-a")
        self.zk.put(node, data, owner=OTHER_SESSION)
        self.start()
        state = self.instance("redis-a")
        self.clock.advance(3.0)
        self.check(state, seen)
        self.clock.advance(2.0)
        self.zk.end_session(OTHER_SESSION)
        self.retries(2)
        self.assertEqual(self.zk.owner(node), self.zk.session_id)
        return self.zk.document(node), state

    def test_since_kept_when_the_status_is_the_same(self) -> None:
        """
        The instance is found up, as the crashed process published it:
        the node keeps its ``since`` (a crash is not a change of status),
        and says this process's check.
        """
        document, state = self.made_after_the_crash(self.left())
        self.assertEqual(document["since"], START - 100.0)
        self.assertEqual(document["checked_at"], START + 3.0)
        self.assertEqual(document, published(state))

    def test_since_kept_after_a_failed_read(self) -> None:
        """
        The first read of the crashed process's node fails (the
        connection lost): it is read again at the node's next re-check,
        and the node still keeps its ``since``.
        """
        self.zk.fail_next("get", ConnectionLoss(), path=path("redis-a"))
        document, _ = self.made_after_the_crash(self.left())
        self.assertEqual(self.zk.calls_by_path["get", path("redis-a")], 2)
        self.assertEqual(document["since"], START - 100.0)

    def test_another_status_dates_from_the_check(self) -> None:
        """Found down where the node said up: the change is this check's."""
        document, _ = self.made_after_the_crash(self.left(), DOWN)
        self.assertEqual(document["status"], "down")
        self.assertEqual(document["since"], START + 3.0)

    def test_only_this_agents_own_node_or_a_sane_since(self) -> None:
        """
        A node another agent id wrote, or whose ``since`` is no time
        (missing, a string, NaN, after its check, not positive), or that
        is no document at all, gives no ``since``: the node dates from
        this process's check, and nothing is logged.
        """
        for data in (
            self.left(agent="someone-else"),
            self.left(since="yesterday"),
            self.left(since=None),
            self.left(since=START + 60.0),
            self.left(since=-5.0),
            self.left(status="maybe"),
            b'{"status": "up", "since": NaN, "agent": "%s"}' % AGENT.encode(),
            b"\xff not json",
        ):
            self.setUp()
            document, _ = self.made_after_the_crash(data)
            self.assertEqual(document["since"], START + 3.0, data)
        self.assertEqual(self.flushLoggedErrors(), [])


class StaleStateTests(PublisherHarness):
    """
    One agent (no group) back from a freeze longer than its session: what
    it publishes before and after its first check.
    """

    def frozen(self) -> InstanceState:
        """An instance checked up, then a freeze of 6 s that ended the session."""
        self.start()
        state = self.instance("redis-a")
        state.health = InstanceHealth(rise=2, fall=3, interval=INTERVAL)
        self.check(state, UP)
        self.zk.expire()
        self.clock.advance(6.0)
        self.zk.connect()
        self.clock.advance(0)
        return state

    def test_stale_state_not_written_before_the_first_check(self) -> None:
        """
        The instance node, gone with the session, is not made again from
        a state older than `stale_after` (the instance may have died
        meanwhile), until a check says what it is now.
        """
        state = self.frozen()
        self.assertNotIn(path("redis-a"), self.zk.nodes)
        self.clock.advance(RETRY_DELAY)
        self.assertNotIn(path("redis-a"), self.zk.nodes)
        self.check(state, UP)
        self.assertEqual(self.zk.document(path("redis-a"))["status"], "up")

    def test_first_failure_after_the_freeze_is_published_down(self) -> None:
        """
        The first check after the freeze fails: the node says down at once
        (fall is 3), not up with the failure's error.
        """
        state = self.frozen()
        self.check(state, DOWN)
        document = self.zk.document(path("redis-a"))
        self.assertEqual(document["status"], "down")
        self.assertEqual(document["since"], self.clock.seconds())
