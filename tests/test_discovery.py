"""
Discovery members published by the publisher, against an in-memory
ZooKeeper on a Clock: present exactly while an instance is up and ready,
one per instance across reconnects, session expiries and failed creates.
"""

from __future__ import annotations

import json
from typing import Any

import attr
from kazoo.exceptions import ConnectionLoss, NoAuthError
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.discovery import (
    HANDED_OVER_CHECK,
    LOOK_READS,
    LOOK_REUSE,
    LOOKS_AHEAD,
    NAMED_AHEAD_FOR,
    SUCCESSOR_READS,
    Discovery,
    Looking,
    Member,
)
from sentinel.documents import (
    NERVE,
    SERVERSET,
    member_prefix,
    nerve_member,
    serverset_member,
)
from sentinel.guard import LOOP_LOG_EVERY, OVERWRITES_WINDOW, REWRITE_AFTER
from sentinel.health import InstanceHealth
from sentinel.instance import InstanceState
from sentinel.probe import Observation, Replication
from sentinel.publisher import ZooKeeperPublisher
from sentinel.writes import FAILING_AFTER, RETRY_DELAY, WRITES_IN_FLIGHT
from tests.fakes import FakeProbe
from tests.fakezk import FakeZooKeeper
from tests.test_publisher import DOWN, INTERVAL, ROOT, START, UP

# The session of the previous primary, whose members are taken over.
PREVIOUS = 0x4242
# Another client's session, not an agent's.
SQUATTER = 0x5151
# The agent before the previous primary, keeping a member handed over.
HANDED = 0x6161

DISCOVERY = "/discovery"
# Another client's member of another endpoint.
OTHER_ENDPOINT = json.dumps(
    serverset_member(RedisInstance("other", "10.0.0.9", 6379))
).encode()
MEMBER = f"{DISCOVERY}/cache-1/member_"

REPLICA = Observation(
    ok=True, ready=True, latency_ms=0.5, replication=Replication(role="slave")
)
LOADING = Observation(ok=True, ready=False, latency_ms=0.5)


class DiscoveryHarness(SynchronousTestCase):
    """A publisher of members in `form`, driven as the monitor drives it."""

    form = SERVERSET
    # Instance nodes watched for other clients' writes (zookeeper.watch_writes).
    watch_writes = True

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.zk = FakeZooKeeper(self.clock)
        self.watched: dict[str, InstanceState] = {}
        self.publisher = self.make_publisher(self.zk)

    def make_publisher(self, zk: FakeZooKeeper) -> ZooKeeperPublisher:
        return ZooKeeperPublisher(
            self.clock,
            zk,
            ROOT,
            "agent-1",
            30.0,
            10.0,
            lambda: {"agent": "agent-1"},
            watched=lambda: {n: s.instance for n, s in self.watched.items()},
            discovery=(self.form, DISCOVERY),
            watch_writes=self.watch_writes,
        )

    def start(self) -> None:
        self.publisher.startService()
        self.zk.connect()

    def instance(
        self, name: str, service: str | None = None, port: int = 6379, **more: object
    ) -> InstanceState:
        config = RedisInstance(name, "10.0.0.1", port, service=service, **more)  # type: ignore[arg-type]
        state = InstanceState(config, FakeProbe(config), InstanceHealth(1, 1))
        self.watched[name] = state
        return state

    def check(self, state: InstanceState, observation: Observation) -> None:
        transition = state.health.observe(observation, self.clock.seconds())
        self.publisher.publish(state, transition)

    def assert_named_missing_until_made(self) -> None:
        """
        /healthz names cache-1's member missing for 5 s; once its hung
        create is answered, the member is listed and /healthz is clear.
        """
        self.assertEqual(
            self.publisher.unhealthy_reason(),
            f"zookeeper: discovery member of cache-1 under {DISCOVERY}/cache-1"
            " missing for 5 s: readers do not find it",
        )
        self.zk.unhang()
        self.zk.release()
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(len(self.members("cache-1")), 1)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def members(self, service: str) -> dict[str, dict[str, object]]:
        parent = f"{DISCOVERY}/{service}"
        if parent not in self.zk.nodes:
            return {}
        return {
            child: self.zk.document(f"{parent}/{child}")
            for child in self.zk.children(parent)
        }


class ServersetTests(DiscoveryHarness):
    """Finagle's form, and the lifecycle every form shares."""

    def test_unlisted_member_fails_healthz(self) -> None:
        """
        A member this agent should hold (its instance up and ready) and
        holds none of, with no write failing (its create not answered: a
        slow ZooKeeper), fails /healthz once so for `FAILING_AFTER`,
        named, and no longer once it is listed.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, LOADING)
        self.zk.hang("create")
        self.check(state, UP)
        self.assertEqual(self.members("cache-1"), {})
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.clock.advance(FAILING_AFTER - 0.1)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.clock.advance(0.1)
        self.assert_named_missing_until_made()

    def test_member_found_gone_timed_from_then(self) -> None:
        """
        A member another client deleted, and not made again (its create
        not answered), is timed in /healthz from when the agent found it
        gone, not from the first answer that asks: /healthz asked first
        `FAILING_AFTER` after that names it at once. Before, that first
        answer was 200, and the next ones too for `FAILING_AFTER` more.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        self.zk.hang("create")
        self.zk.remove(f"{MEMBER}0000000000")
        self.clock.advance(REWRITE_AFTER)
        self.assertEqual(self.members("cache-1"), {})
        self.clock.advance(FAILING_AFTER)
        self.assert_named_missing_until_made()

    def test_ephemeral_service_node_named(self) -> None:
        """
        A service's node that another client made an ephemeral node (which
        can have no children) refuses every member's create: /healthz names
        it and its session at once, not the instance node the member goes
        with, and so does the log, once, however long it lasts: a refused
        create made nothing, so nothing is looked for after it (a listing
        of the parent each retry, and its own log line). The member is
        listed once that session ends.
        """
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.zk.put(f"{DISCOVERY}/cache-1", b"", owner=SQUATTER)
        self.start()
        self.check(self.instance("cache-1"), UP)
        self.assertIn(
            f"zookeeper: {DISCOVERY}/cache-1 is an ephemeral node (session"
            " 0x5151), which ZooKeeper lets have no children",
            self.publisher.unhealthy_reason() or "",
        )
        self.clock.advance(60)
        self.assertIsNotNone(self.publisher.unhealthy_reason())
        lines = [formatEvent(e) for e in events]
        refused = [line for line in lines if "refuses this agent's writes" in line]
        failed = [line for line in lines if "write failed" in line]
        self.assertEqual((len(refused), len(failed)), (1, 1), lines)
        self.assertEqual(
            self.zk.calls_by_path["get_children", f"{DISCOVERY}/cache-1"], 0
        )
        self.zk.end_session(SQUATTER)
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(len(self.members("cache-1")), 1)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_present_exactly_while_up_and_ready(self) -> None:
        """
        A member appears when the instance is up and ready, goes when it is
        not ready or down, and comes back (under a new sequence number).
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, LOADING)
        self.assertEqual(self.members("cache-1"), {})
        self.check(state, UP)
        self.assertEqual(
            self.members("cache-1"),
            {"member_0000000000": serverset_member(state.instance)},
        )
        self.assertEqual(
            self.zk.owner(f"{DISCOVERY}/cache-1/member_0000000000"),
            self.zk.session_id,
        )
        self.check(state, LOADING)
        self.assertEqual(self.members("cache-1"), {})
        self.check(state, UP)
        self.check(state, DOWN)
        self.assertEqual(self.members("cache-1"), {})
        self.check(state, UP)
        self.assertEqual(list(self.members("cache-1")), ["member_0000000004"])
        self.assertEqual(
            self.publisher.discovery_members, [f"{DISCOVERY}/cache-1/member_0000000004"]
        )

    def test_unchanged_member_not_rewritten(self) -> None:
        """A role change or a refresh does not rewrite a serverset member."""
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        path = f"{DISCOVERY}/cache-1/member_0000000000"
        self.check(state, REPLICA)
        self.clock.advance(60)
        self.check(state, REPLICA)
        self.assertEqual(self.zk.writes(path), 0)
        self.assertEqual(
            self.zk.calls_by_path["create", f"{DISCOVERY}/cache-1/member_"], 1
        )

    def test_shared_service(self) -> None:
        """Instances of one service each have their member under it."""
        self.start()
        one = self.instance("one", service="cache", port=6379)
        two = self.instance("two", service="cache", port=6380)
        self.check(one, UP)
        self.check(two, UP)
        ports = sorted(
            m["serviceEndpoint"]["port"]  # type: ignore[index]
            for m in self.members("cache").values()
        )
        self.assertEqual(ports, [6379, 6380])
        self.check(one, DOWN)
        self.assertEqual(
            [m["serviceEndpoint"] for m in self.members("cache").values()],
            [{"host": "10.0.0.1", "port": 6380}],
        )

    def test_two_instances_on_one_endpoint(self) -> None:
        """
        Two names for one endpoint in one service have a member each: a
        look after a failed create never takes the other's, and one going
        down deletes only its own.
        """
        self.start()
        one = self.instance("one", service="cache")
        two = self.instance("two", service="cache")
        self.check(one, UP)
        self.zk.fail_next("create", ConnectionLoss(), path=f"{DISCOVERY}/cache/member_")
        self.check(two, UP)
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(len(self.members("cache")), 2)
        self.check(one, DOWN)
        self.assertEqual(len(self.members("cache")), 1)
        self.check(two, DOWN)
        self.assertEqual(self.members("cache"), {})

    def test_removed_instance_loses_its_member(self) -> None:
        """An instance no longer watched loses its member at once."""
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        del self.watched["cache-1"]
        self.publisher.remove("cache-1")
        self.assertEqual(self.members("cache-1"), {})
        self.assertEqual(self.publisher.writes_queued, 0)

    def test_changed_service_moves_the_member(self) -> None:
        """A reload that changes the service moves the member."""
        self.start()
        state = self.instance("cache-1", service="old")
        self.check(state, UP)
        moved = InstanceState(
            RedisInstance("cache-1", "10.0.0.1", 6379, service="new"),
            state.probe,
            InstanceHealth(1, 1),
        )
        self.check(moved, UP)
        self.assertEqual(self.members("old"), {})
        self.assertEqual(len(self.members("new")), 1)

    def test_relabel_in_place_moves_the_member(self) -> None:
        """
        A reload that changes only the service of an instance, taken in
        place (the same state), moves its member at once, before any check.
        """
        self.start()
        state = self.instance("cache-1", service="old")
        self.check(state, UP)
        state.instance = attr.evolve(state.instance, service="new")
        self.publisher.relabel(state)
        self.assertEqual(self.members("old"), {})
        self.assertEqual(len(self.members("new")), 1)

    def test_relabel_leaves_a_released_member_alone(self) -> None:
        """
        A member handed to the instance's next primary (released with its
        node) is that primary's: a reload that changes only the service
        neither takes it back nor moves it, and its state follows.
        """
        self.start()
        state = self.instance("cache-1", service="old")
        self.check(state, UP)
        node = self.publisher._nodes.members["cache-1"]
        node.released = True
        state.instance = attr.evolve(state.instance, service="new")
        self.publisher.relabel(state)
        self.assertEqual(len(self.members("old")), 1)
        self.assertEqual(self.members("new"), {})
        self.assertTrue(node.released)
        self.assertIs(node.state, state)

    def test_reconnect_keeps_one_member(self) -> None:
        """Back on the same session, the member is rewritten in place."""
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        self.zk.suspend()
        self.zk.connect()
        self.assertEqual(list(self.members("cache-1")), ["member_0000000000"])
        path = f"{DISCOVERY}/cache-1/member_0000000000"
        self.assertEqual(self.zk.calls_by_path["set", path], 1)

    def test_session_expiry_recreates_one_member(self) -> None:
        """After an expiry the member is created again, once."""
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        self.zk.expire()
        self.assertEqual(self.members("cache-1"), {})
        self.zk.connect()
        [child] = self.members("cache-1")
        self.assertEqual(
            self.zk.owner(f"{DISCOVERY}/cache-1/{child}"), self.zk.session_id
        )

    def test_write_begun_before_an_expiry_creates_nothing(self) -> None:
        """
        A member's refresh whose question was queued while cut off, and
        answered on the new session once the old one expired, does not
        take the member gone with the session for one deleted by another
        client: it creates nothing, and the resync's write makes the
        member once, with no repair counted.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        self.zk.hang("exists")
        self.clock.advance(30.0)
        self.check(state, UP)
        # The agent frozen: its question still in the client's queue, unsent,
        # when the session expires (kazoo sends it on the next session).
        [call] = [c for c in self.zk.held if c.path == f"{MEMBER}0000000000"]
        self.zk.held.remove(call)
        self.zk._unsent.append(call)
        self.zk.unhang()
        self.zk.release()
        self.zk.expire()
        self.zk.connect()
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(len(self.members("cache-1")), 1)
        self.assertEqual(self.zk.calls_by_path["create", MEMBER], 2)
        self.assertEqual(self.publisher.stats()["discovery"]["repaired"], 0)

    def test_failed_create_that_succeeded(self) -> None:
        """
        A create whose answer is lost (it may have succeeded) is followed by
        a look at the parent, which finds the member: never a second one.
        """
        self.start()
        state = self.instance("cache-1")
        self.zk.hang("create")
        self.check(state, UP)
        # The server created it; the answer is lost with the connection.
        [call] = [c for c in self.zk.held if c.path.endswith("/member_")]
        self.zk.held.remove(call)
        self.zk.release()
        call.run()
        call.deferred.errback(ConnectionLoss())
        self.assertEqual(len(self.members("cache-1")), 1)
        self.zk.unhang()
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(len(self.members("cache-1")), 1)
        self.assertEqual(
            self.zk.calls_by_path["get_children", f"{DISCOVERY}/cache-1"], 1
        )
        self.check(state, DOWN)
        self.assertEqual(self.members("cache-1"), {})

    def test_failed_creates_share_one_look(self) -> None:
        """
        Members whose creates failed alike (a leader's stall) are looked
        for by one listing of their service, with a get only of the
        children no member of ours holds, and none of them holds a write
        slot meanwhile: those that were made are kept, the others made,
        one member per instance.
        """
        parent = f"{DISCOVERY}/big"
        self.start()
        # Grown to its maximum, as on a fast link (`sentinel.window`).
        self.publisher._queue.window.size = WRITES_IN_FLIGHT
        for i in range(20):
            self.check(self.instance(f"held-{i}", service="big", port=7000 + i), UP)
        self.zk.hang("create")
        for i in range(10):
            self.check(self.instance(f"lost-{i}", service="big", port=8000 + i), UP)
        creates = [c for c in self.zk.held if c.path == f"{parent}/member_"]
        self.assertEqual(len(creates), 10)
        for call in creates[::2]:
            call.run()  # The server made half of them; every answer is lost.
        self.zk.held = [c for c in self.zk.held if c not in creates]
        for call in creates:
            call.deferred.errback(ConnectionLoss())
        self.zk.unhang()
        self.zk.release()
        self.zk.hang("get_children")
        listed = self.zk.calls_by_path["get_children", parent]
        got = sum(n for (kind, p), n in self.zk.calls_by_path.items() if kind == "get")
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.publisher.stats()["writes_in_flight"], 0)
        self.zk.unhang()
        self.zk.release()
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.zk.calls_by_path["get_children", parent] - listed, 1)
        got = (
            sum(n for (kind, p), n in self.zk.calls_by_path.items() if kind == "get")
            - got
        )
        self.assertLessEqual(got, 5)
        endpoints = sorted(
            member["serviceEndpoint"]["port"]  # type: ignore[index]
            for member in self.members("big").values()
        )
        self.assertEqual(endpoints, [*range(7000, 7020), *range(8000, 8010)])

    def test_failed_create_that_did_not_happen(self) -> None:
        """A create that failed for good is made again after the look."""
        self.start()
        state = self.instance("cache-1")
        self.zk.fail_next("create", ConnectionLoss(), path=MEMBER)
        self.check(state, UP)
        self.assertEqual(self.members("cache-1"), {})
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(len(self.members("cache-1")), 1)

    def test_another_sessions_members_left_alone(self) -> None:
        """Members of other agents under the same service are never touched."""
        self.zk.put(
            f"{DISCOVERY}/cache/member_0000000000",
            json.dumps(serverset_member(RedisInstance("x", "10.0.0.1", 6379))).encode(),
            owner=0xDEAD,
        )
        self.start()
        state = self.instance("cache-1", service="cache")
        self.zk.fail_next("create", ConnectionLoss(), path=f"{DISCOVERY}/cache/member_")
        self.check(state, UP)
        self.clock.advance(RETRY_DELAY)
        self.check(state, DOWN)
        self.assertEqual(list(self.members("cache")), ["member_0000000000"])
        self.assertEqual(self.zk.owner(f"{DISCOVERY}/cache/member_0000000000"), 0xDEAD)

    def test_clean_stop_deletes_members(self) -> None:
        """Without a state_dir, a stop deletes the members with the other nodes."""
        self.start()
        self.check(self.instance("cache-1"), UP)
        self.successResultOf(self.publisher.stopService())
        self.assertEqual(self.members("cache-1"), {})
        self.assertEqual(self.zk.history[-1], ("stop", ""))

    def test_stats(self) -> None:
        """/debug/stats says the form and how many members are held."""
        self.start()
        self.check(self.instance("cache-1"), UP)
        self.assertEqual(
            self.publisher.stats()["discovery"],
            {
                "form": SERVERSET,
                "members": 1,
                "repaired": 0,
                "own_sets_applied_unanswered": 0,
            },
        )

    def test_member_deleted_by_another_client_made_again(self) -> None:
        """
        A member another ZooKeeper client deletes is made again at the
        instance's next refresh (as its instance node is), and counted.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        self.zk.remove(f"{MEMBER}0000000000")
        self.clock.advance(30)
        self.check(state, UP)
        [child] = self.members("cache-1")
        self.assertEqual(
            self.members("cache-1")[child], serverset_member(state.instance)
        )
        self.assertEqual(
            self.zk.owner(f"{DISCOVERY}/cache-1/{child}"), self.zk.session_id
        )
        self.assertEqual(self.publisher.stats()["discovery"]["repaired"], 1)

    def test_member_overwritten_by_another_client_written_again(self) -> None:
        """
        A member another client overwrites says our endpoint again after
        the next refresh, in place; an untouched one is only read then,
        never rewritten.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        path = f"{MEMBER}0000000000"
        self.clock.advance(30)
        self.check(state, UP)
        self.assertEqual(self.zk.writes(path), 0)
        other = RedisInstance("x", "127.0.0.99", 1)
        # A set by another client: the node stays our session's.
        self.zk.put(
            path, json.dumps(serverset_member(other)).encode(), self.zk.session_id
        )
        self.clock.advance(30)
        self.check(state, UP)
        self.assertEqual(
            self.members("cache-1"),
            {"member_0000000000": serverset_member(state.instance)},
        )
        self.assertEqual(self.publisher.stats()["discovery"]["repaired"], 1)

    def test_member_overwritten_found_at_once_and_named(self) -> None:
        """
        A member another client overwrites (clients sent to another
        endpoint) says ours again `REWRITE_AFTER` after, not at the next
        refresh, and /healthz names it for `OVERWRITES_WINDOW`. Before,
        it stayed until the refresh (30 s), /healthz 200.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        path = f"{MEMBER}0000000000"
        other = RedisInstance("x", "127.0.0.99", 1)
        self.zk.put(
            path, json.dumps(serverset_member(other)).encode(), self.zk.session_id
        )
        self.clock.advance(REWRITE_AFTER)
        self.assertEqual(
            self.members("cache-1"),
            {"member_0000000000": serverset_member(state.instance)},
        )
        self.assertEqual(self.publisher.stats()["discovery"]["repaired"], 1)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(
            f"written by another client in the last 60 s (the last {path})", reason
        )
        self.clock.advance(OVERWRITES_WINDOW)
        self.check(state, UP)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_members_deleted_together_logged_once(self) -> None:
        """
        Every member deleted at once (an operator's ``deleteall`` of the
        discovery root) is made again, each counted, with one line for the
        repairs; more within `LOOP_LOG_EVERY` add none, and the next line
        after it says how many went unlogged. Before, each repair was a
        warning of its own: a line per member, and a client deleting
        members in a loop wrote a line per member twice a second.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start()
        states = [self.instance(f"cache-{i}") for i in range(20)]
        for state in states:
            self.check(state, UP)

        def delete_every_member() -> None:
            for state in states:
                for child in self.members(state.instance.name):
                    self.zk.remove(f"{DISCOVERY}/{state.instance.name}/{child}")
            self.clock.advance(REWRITE_AFTER)

        def repair_lines() -> list[str]:
            texts = [formatEvent(event) for event in events]
            return [t for t in texts if "by another ZooKeeper client" in t]

        for _ in range(3):
            delete_every_member()
        self.assertEqual(
            [len(self.members(state.instance.name)) for state in states], [1] * 20
        )
        self.assertEqual(self.publisher.stats()["discovery"]["repaired"], 60)
        self.assertEqual(len(repair_lines()), 1)
        self.clock.advance(LOOP_LOG_EVERY)
        delete_every_member()
        self.assertEqual(len(repair_lines()), 2)
        self.assertIn(
            "(59 more member(s) made again since the last such line)",
            repair_lines()[-1],
        )

    def test_replaced_client_takes_its_old_members_over(self) -> None:
        """
        A client replaced while its old session lives (ZooKeeper cut off
        for longer than the session timeout) replaces each old member with
        its own in one transaction: the endpoint is never listed twice, nor
        missing.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        old = self.zk.session_id
        self.zk.replace_client()
        self.zk.connect()
        self.assertNotEqual(self.zk.session_id, old)
        [child] = self.members("cache-1")
        self.assertEqual(
            self.zk.owner(f"{DISCOVERY}/cache-1/{child}"), self.zk.session_id
        )
        self.assertEqual(self.zk.calls["replace"], 1)

    def test_replaced_client_deletes_old_member_of_instance_down(self) -> None:
        """
        A member the old session holds for an instance that went down
        meanwhile is deleted by the new client, not left listed until the
        old session expires.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        self.zk.replace_client()
        self.check(state, DOWN)
        self.zk.connect()
        self.assertEqual(self.members("cache-1"), {})

    def wiped_under_a_member(self) -> tuple[InstanceState, str]:
        """
        An instance up with its member, then ZooKeeper wiped and our client
        replaced: the member's name is another client's now (ZooKeeper
        names members from 0 again); returns the instance and that path.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        [child] = self.members("cache-1")
        self.zk.server.wipe()
        theirs = f"{DISCOVERY}/cache-1/{child}"
        self.zk.put(DISCOVERY, b"", 0)
        self.zk.put(f"{DISCOVERY}/cache-1", b"", 0)
        self.zk.put(theirs, OTHER_ENDPOINT, PREVIOUS)
        self.zk.replace_client()
        return state, theirs

    def assert_left_alone(self, theirs: str) -> None:
        self.clock.advance(RETRY_DELAY)
        self.assertIn(theirs, self.zk.nodes)
        self.assertEqual(self.zk.owner(theirs), PREVIOUS)

    def test_wiped_ensemble_member_of_the_same_name_left_alone(self) -> None:
        """
        After a wipe, the name of the member our old session held is
        another client's (a group's new primary's). Ours is made beside
        it, not in its place: only a member that session holds is
        replaced, whatever its name. (It deleted the other's, which made
        it again: members deleted back and forth, and endpoints listed
        twice, three agents after a wipe.)
        """
        _, theirs = self.wiped_under_a_member()
        self.zk.connect()
        self.assert_left_alone(theirs)
        mine = [
            c
            for c in self.members("cache-1")
            if self.zk.owner(f"{DISCOVERY}/cache-1/{c}") == self.zk.session_id
        ]
        self.assertEqual(len(mine), 1)
        self.assertEqual(self.zk.calls["replace"], 0)

    def test_wiped_ensemble_old_member_not_deleted_by_name(self) -> None:
        """
        After a wipe, an instance gone down meanwhile deletes no member by
        the name its old session's had: that name is another client's now.
        """
        state, theirs = self.wiped_under_a_member()
        self.check(state, DOWN)
        self.zk.connect()
        self.assert_left_alone(theirs)


class StaleHistoryTests(DiscoveryHarness):
    """
    One agent back from a freeze longer than its session: its members,
    like its instance nodes, are not made again from the stale history.
    """

    def frozen(self) -> InstanceState:
        """An instance checked up, then a freeze of 6 s that ended the session."""
        self.start()
        state = self.instance("cache-1")
        state.health = InstanceHealth(rise=2, fall=3, interval=INTERVAL)
        self.check(state, UP)
        self.assertEqual(len(self.members("cache-1")), 1)
        self.zk.expire()
        self.clock.advance(6.0)
        self.zk.connect()
        self.clock.advance(0)
        return state

    def test_no_member_from_a_stale_history(self) -> None:
        """
        The member, gone with the session, waits for the first check after
        the freeze as the instance node does, and is made by it.
        """
        state = self.frozen()
        self.assertEqual(self.members("cache-1"), {})
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.members("cache-1"), {})
        self.assertNotIn(f"{ROOT}/instances/cache-1", self.zk.nodes)
        self.check(state, UP)
        self.assertEqual(len(self.members("cache-1")), 1)
        self.assertEqual(self.zk.document(f"{ROOT}/instances/cache-1")["status"], "up")

    def test_first_failure_after_the_freeze_makes_no_member(self) -> None:
        """
        The first check after the freeze fails: the instance, dead
        meanwhile, was never listed again.
        """
        state = self.frozen()
        self.check(state, DOWN)
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.members("cache-1"), {})
        self.assertEqual(self.zk.calls_by_path["create", MEMBER], 1)


class NerveTests(DiscoveryHarness):
    """nerve's form: named after the instance, with labels and the role."""

    form = NERVE

    def test_member(self) -> None:
        """The member is {name}_NNNNNNNNNN with host, port, name and labels."""
        self.start()
        state = self.instance("cache-1", labels=(("zone", "b"),))
        self.check(state, UP)
        self.assertEqual(
            self.members("cache-1"),
            {
                "cache-1_0000000000": nerve_member(
                    state.instance, {"zone": "b"}, "master"
                )
            },
        )

    def test_role_change_rewrites(self) -> None:
        """A role change rewrites the member's data in place."""
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        self.check(state, REPLICA)
        [(child, member)] = self.members("cache-1").items()
        self.assertEqual(child, "cache-1_0000000000")
        self.assertEqual(member["labels"], {"role": "slave"})
        self.assertEqual(
            self.zk.calls_by_path["set", f"{DISCOVERY}/cache-1/{child}"], 1
        )

    def lose_role_change(self) -> tuple[InstanceState, str]:
        """
        An instance up, its member made, then its role change's set done
        by ZooKeeper and its answer held until the bridge's timeout: the
        instance and its member's name.
        """
        self.start()
        state = self.instance("cache-1")
        self.check(state, UP)
        [child] = self.members("cache-1")
        self.zk.hold_answers("set")
        self.check(state, REPLICA)
        self.clock.advance(self.zk.call_timeout)
        self.zk.unhang()
        return state, child

    def test_role_change_applied_with_its_answer_lost_not_named(self) -> None:
        """
        A role change's set of the member that ZooKeeper applied while its
        answer was lost (the bridge's timeout) is ours: the next write
        finds the member at the version it made, with its data, and is
        neither logged nor named as another client's write; the role
        written last is what the member says.
        """
        state, child = self.lose_role_change()
        self.assertEqual(self.zk.nodes[f"{DISCOVERY}/cache-1/{child}"].version, 1)
        self.check(state, UP)
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.members("cache-1")[child]["labels"], {"role": "master"})
        discovery = self.publisher.stats()["discovery"]
        self.assertEqual(discovery["repaired"], 0)
        self.assertEqual(discovery["own_sets_applied_unanswered"], 1)
        self.assertNotIn(
            "written by another client", self.publisher.unhealthy_reason() or ""
        )

    def test_role_change_lost_then_forged_still_named(self) -> None:
        """
        A role change's set whose answer was lost hides no other client's
        write over the member after it: found, written over and named.
        """
        state, child = self.lose_role_change()
        other = RedisInstance("x", "127.0.0.99", 1)
        forged = json.dumps(nerve_member(other, {}, "master")).encode()
        self.zk.put(f"{DISCOVERY}/cache-1/{child}", forged, self.zk.session_id)
        self.check(state, UP)
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(
            self.members("cache-1")[child],
            nerve_member(state.instance, {}, "master"),
        )
        self.assertEqual(self.publisher.stats()["discovery"]["repaired"], 1)

    def test_changed_labels_rewrite(self) -> None:
        """A reload that changes only the labels rewrites the same member."""
        self.start()
        state = self.instance("cache-1", labels=(("zone", "a"),))
        self.check(state, UP)
        relabelled = InstanceState(
            RedisInstance("cache-1", "10.0.0.1", 6379, labels=(("zone", "b"),)),
            state.probe,
            InstanceHealth(1, 1),
        )
        self.check(relabelled, UP)
        [(child, member)] = self.members("cache-1").items()
        self.assertEqual(child, "cache-1_0000000000")
        self.assertEqual(member["labels"], {"zone": "b", "role": "master"})

    def test_relabel_in_place_rewrites(self) -> None:
        """
        Labels changed in place (the same state) rewrite the same member
        at once, before any check; an instance without a member (down)
        gets none.
        """
        self.start()
        state = self.instance("cache-1", labels=(("zone", "a"),))
        down = self.instance("cache-2")
        self.check(state, UP)
        self.check(down, DOWN)
        state.instance = attr.evolve(state.instance, labels=(("zone", "b"),))
        down.instance = attr.evolve(down.instance, labels=(("zone", "b"),))
        self.publisher.relabel(state)
        self.publisher.relabel(down)
        [(child, member)] = self.members("cache-1").items()
        self.assertEqual(child, "cache-1_0000000000")
        self.assertEqual(member["labels"], {"zone": "b", "role": "master"})
        self.assertEqual(self.members("cache-2"), {})


class TakeSuccessorTests(SynchronousTestCase):
    """
    A verdict names a member that is gone (`Discovery.take_named`): the one
    that replaced it, its holder's, is found among those of its prefix made
    since, without a look at the whole service.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.zk = FakeZooKeeper(self.clock)
        self.zk.connect()
        self.zk.put(DISCOVERY, b"")
        self.zk.put(f"{DISCOVERY}/svc", b"")

    async def counted(self, op: str, d: Deferred[Any]) -> Any:
        return await d

    def discovery(self, form: str) -> Discovery:
        return Discovery(
            self.zk, form, DISCOVERY, self.counted, lambda _: succeed(None), self.clock
        )

    def put(self, form: str, instance: RedisInstance, number: int, owner: int) -> str:
        """A member of `instance`, `number` the counter ZooKeeper gave it."""
        if form == SERVERSET:
            member = serverset_member(instance)
        else:
            member = nerve_member(instance, {}, "master")
        path = f"{DISCOVERY}/svc/{member_prefix(form, instance)}{number:010d}"
        self.zk.put(path, json.dumps(member).encode(), owner=owner)
        return path

    def gets(self) -> list[str]:
        return [p for kind, p in self.zk.history if kind == "get"]

    def test_named_gone_its_holders_successor_replaced(self) -> None:
        """
        Nerve form, two instances: the named member of one is gone, its
        holder's made since (another session's beside it, and the other
        instance's, not read): ours replaces the holder's, one listing and
        a read of that prefix's members made since only.
        """
        [one, other] = [
            RedisInstance(f"r{i}", "10.0.0.1", 6379 + i, service="svc")
            for i in range(2)
        ]
        named = f"{DISCOVERY}/svc/r0_0000000003"
        self.put(NERVE, one, 1, owner=PREVIOUS + 1)
        successor = self.put(NERVE, one, 7, owner=PREVIOUS)
        self.put(NERVE, other, 8, owner=PREVIOUS)
        self.assert_named_replaced_by(one, named, successor)
        self.assertEqual(self.zk.calls["get_children"], 1)

    def test_successor_after_the_counter_wrapped_replaced(self) -> None:
        """
        Past 2**31-1 children made under a service, ZooKeeper names
        members with a negative counter (``r0_-2147483648``): the holder's
        member made after the named one once the counter wrapped is found
        as made since, and an older one is not.
        """
        one = RedisInstance("r0", "10.0.0.1", 6379, service="svc")
        named = f"{DISCOVERY}/svc/r0_2147483647"
        self.put(NERVE, one, 2147483646, owner=PREVIOUS)
        successor = self.put(NERVE, one, -(2**31), owner=PREVIOUS)
        self.assertTrue(successor.endswith("/r0_-2147483648"), successor)
        self.assert_named_replaced_by(one, named, successor)

    def assert_named_replaced_by(
        self, instance: RedisInstance, named: str, successor: str
    ) -> None:
        """
        Nerve form: `instance`'s member, taking over from `PREVIOUS` whose
        verdict named `named` (gone), replaces `successor`, read after it.
        """
        discovery = self.discovery(NERVE)
        member = discovery.member_for(instance)
        took = discovery.take_named(member, named, PREVIOUS)
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(took)))
        self.assertEqual(member.replaces, successor)
        self.assertEqual(self.gets(), [named, successor])

    def test_unnamed_the_holders_member_of_its_prefix_replaced(self) -> None:
        """
        Nerve form: a verdict that lists the instance names no member
        (`Discovery.take_unnamed`): its holder's member of the instance's
        prefix, whatever its counter, is the one ours replaces, at the
        version read (another session's beside it not taken, the other
        instance's not read); one listing, no look at the service.
        """
        [one, other] = [
            RedisInstance(f"r{i}", "10.0.0.1", 6379 + i, service="svc")
            for i in range(2)
        ]
        self.put(NERVE, one, 1, owner=PREVIOUS + 1)
        holders = self.put(NERVE, one, 0, owner=PREVIOUS)
        self.put(NERVE, other, 8, owner=PREVIOUS)
        discovery = self.discovery(NERVE)
        member = discovery.member_for(one)
        took = discovery.take_unnamed(member, PREVIOUS)
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(took)))
        self.assertEqual(member.replaces, holders)
        self.assertIsNotNone(discovery.move(member, b"{}"))
        self.assertNotIn(f"{DISCOVERY}/svc/r1_0000000008", self.gets())
        self.assertEqual(self.zk.calls["get_children"], 1)

    def test_named_member_read_ahead_serves_the_takeover(self) -> None:
        """
        The member a verdict names, read as the takeover begins
        (`read_named_ahead`), serves `take_named` with no read of its own,
        so that the node's transaction waits for none; a reading older
        than `NAMED_AHEAD_FOR` is read again (the member may have been
        written since).
        """
        instance = RedisInstance("r0", "10.0.0.1", 6379, service="svc")
        named = self.put(SERVERSET, instance, 3, owner=PREVIOUS)
        discovery = self.discovery(SERVERSET)
        discovery.read_named_ahead(named)
        discovery.read_named_ahead(named)
        self.assertEqual(self.gets(), [named])
        member = discovery.member_for(instance)
        took = discovery.take_named(member, named, PREVIOUS)
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(took)))
        self.assertEqual(self.gets(), [named])
        self.assertEqual((member.replaces, member.replaces_version), (named, 0))
        discovery.not_moved(member)
        discovery.read_named_ahead(named)
        self.clock.advance(NAMED_AHEAD_FOR + 0.1)
        took = discovery.take_named(member, named, PREVIOUS)
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(took)))
        self.assertEqual(self.gets(), [named, named, named])

    def test_listing_shared(self) -> None:
        """
        Members whose named members are gone, asking while a listing is
        under way, share its answer: one listing for all.
        """
        instances = [
            RedisInstance(f"r{i}", "10.0.0.1", 6379 + i, service="svc")
            for i in range(3)
        ]
        successors = [
            self.put(NERVE, i, 10 + n, PREVIOUS) for n, i in enumerate(instances)
        ]
        discovery = self.discovery(NERVE)
        self.zk.hold_answers("get_children")
        members = [discovery.member_for(i) for i in instances]
        took = [
            Deferred.fromCoroutine(
                discovery.take_named(m, f"{DISCOVERY}/svc/r{n}_0000000001", PREVIOUS)
            )
            for n, m in enumerate(members)
        ]
        self.assertEqual(self.zk.release("get_children"), 1)
        self.assertEqual([self.successResultOf(d) for d in took], [True] * 3)
        self.assertEqual([m.replaces for m in members], successors)

    def test_many_made_since_left_to_the_look(self) -> None:
        """
        Serverset form, more members made since the named one than
        `SUCCESSOR_READS`: none is read, and the whole service is looked at
        (`take_from`), as when no member is named.
        """
        instances = service_of(SUCCESSOR_READS + 1)
        for n, instance in enumerate(instances):
            self.put(SERVERSET, instance, 10 + n, PREVIOUS)
        discovery = self.discovery(SERVERSET)
        member = discovery.member_for(instances[0])
        named = f"{DISCOVERY}/svc/member_0000000001"
        took = discovery.take_named(member, named, PREVIOUS)
        self.assertFalse(self.successResultOf(Deferred.fromCoroutine(took)))
        self.assertIsNone(member.replaces)
        self.assertEqual(self.gets(), [named])

    def test_many_unnamed_found_by_the_look_ahead(self) -> None:
        """
        Serverset form, a verdict that lists the instance but names no
        member, more members under the one prefix than
        `SUCCESSOR_READS`: the look begun ahead of the takeover
        (`look_ahead`), done, found the holder's member of the instance,
        and that one alone is read and replaced in the node's own
        transaction. (Before, none was chosen and the member followed the
        node after a look: listed twice or missing meanwhile.)
        """
        instances = service_of(SUCCESSOR_READS + 4)
        for n, instance in enumerate(instances[1:]):
            self.put(SERVERSET, instance, 10 + n, PREVIOUS + 1)
        holders = self.put(SERVERSET, instances[0], 5, PREVIOUS)
        discovery = self.discovery(SERVERSET)
        discovery.look_ahead(f"{DISCOVERY}/svc")
        self.clock.advance(0)
        looked = len(self.gets())
        member = discovery.member_for(instances[0])
        took = discovery.take_unnamed(member, PREVIOUS)
        self.assertTrue(self.successResultOf(Deferred.fromCoroutine(took)))
        self.assertEqual(member.replaces, holders)
        self.assertIsNotNone(discovery.move(member, b"{}"))
        self.assertEqual(self.gets()[looked:], [holders])


def service_of(count: int) -> list[RedisInstance]:
    """`count` instances of the service "svc", one port each."""
    return [
        RedisInstance(f"r{i}", "10.0.0.1", 6379 + i, service="svc")
        for i in range(count)
    ]


class TakeFromTests(SynchronousTestCase):
    """The look for a previous primary's members (`Discovery.take_from`)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.zk = FakeZooKeeper(self.clock)
        self.zk.connect()
        self.discovery = Discovery(
            self.zk, SERVERSET, DISCOVERY, self.counted, self.record, self.clock
        )
        self.zk.put(DISCOVERY, b"")
        self.zk.put(f"{DISCOVERY}/svc", b"")
        self.instances = [
            RedisInstance(f"r{i}", "10.0.0.1", 6379 + i, service="svc")
            for i in range(4)
        ]
        for i, instance in enumerate(self.instances):
            document = json.dumps(serverset_member(instance)).encode()
            self.zk.put(f"{DISCOVERY}/svc/member_{i:010d}", document, owner=PREVIOUS)

    async def counted(self, op: str, d: Deferred[Any]) -> Any:
        return await d

    def record(self, parent: str) -> Deferred[None]:
        return succeed(None)

    def take(self, instance: RedisInstance) -> str | None:
        member = self.discovery.member_for(instance)
        self.discovery.take_from(member, PREVIOUS)
        return member.replaces

    def gets(self) -> int:
        return sum(n for (kind, _), n in self.zk.calls_by_path.items() if kind == "get")

    def test_one_look_serves_later_waves(self) -> None:
        """
        Members handed over after a look (the next wave of writes) are
        matched against what it found, without a look of their own, each
        with its own member; after `LOOK_REUSE`, a new look is made, which
        reads only the children no member of ours has claimed.
        """
        first = self.take(self.instances[0])
        looked = self.gets()
        self.assertEqual(looked, 4)
        self.clock.advance(LOOK_REUSE - 1)
        second = self.take(self.instances[1])
        self.assertEqual(self.gets(), looked)
        self.assertEqual(first, f"{DISCOVERY}/svc/member_0000000000")
        self.assertEqual(second, f"{DISCOVERY}/svc/member_0000000001")
        self.clock.advance(1)
        self.take(self.instances[2])
        self.assertEqual(self.gets(), looked + 2)

    def test_look_ahead_serves_the_takeover(self) -> None:
        """
        A look begun before the node is taken over (`look_ahead`, at the
        view change) serves its take-over: each member is taken from the
        session the node was taken from only, never another's that says
        the same (listed first here); a member it did not list, for a
        node taken over after it began, is looked for again.
        """
        parent = f"{DISCOVERY}/svc"
        document = json.dumps(serverset_member(self.instances[0])).encode()
        self.zk.put(f"{parent}/member_0000000000", document, owner=SQUATTER)
        for i, instance in enumerate(self.instances[1:3], start=1):
            document = json.dumps(serverset_member(instance)).encode()
            self.zk.put(f"{parent}/member_{i:010d}", document, owner=PREVIOUS)
        self.zk.remove(f"{parent}/member_0000000003")
        self.zk.put(
            f"{parent}/member_0000000004",
            json.dumps(serverset_member(self.instances[0])).encode(),
            owner=PREVIOUS,
        )
        self.discovery.look_ahead(parent)
        looked = self.gets()
        self.clock.advance(0.5)
        first = self.discovery.member_for(self.instances[0])
        self.discovery.take_from(first, PREVIOUS, since=self.clock.seconds())
        self.assertEqual(first.replaces, f"{parent}/member_0000000004")
        self.assertEqual(self.gets(), looked)
        late = self.discovery.member_for(self.instances[3])
        self.discovery.take_from(late, PREVIOUS, since=self.clock.seconds())
        self.assertGreater(self.gets(), looked)

    def test_looks_ahead_bounded(self) -> None:
        """
        A view moving many instances, each in a service of its own, looks
        ahead at `LOOKS_AHEAD` services at once, not all of them ahead of
        the takeovers' own calls; a member of another is looked for once
        it needs it, as before.
        """
        self.zk.hang("get_children")
        for i in range(LOOKS_AHEAD + 5):
            self.discovery.look_ahead(f"{DISCOVERY}/svc{i}")
        listings = [c for c in self.zk.held if c.kind == "get_children"]
        self.assertEqual(len(listings), LOOKS_AHEAD)
        instance = RedisInstance("r9", "10.0.0.1", 6400, service=f"svc{LOOKS_AHEAD}")
        with self.assertRaises(Looking):
            self.discovery.take_from(self.discovery.member_for(instance), PREVIOUS)
        listings = [c for c in self.zk.held if c.kind == "get_children"]
        self.assertEqual(len(listings), LOOKS_AHEAD + 1)

    def test_look_forgotten_once_it_cannot_serve(self) -> None:
        """
        A look's listing is kept only while it may serve (`LOOK_REUSE`):
        the next write of any member, or a new session, drops it, not the
        next hand-over, which may never come.
        """
        self.take(self.instances[0])
        self.assertEqual(len(self.discovery._looked), 1)
        self.clock.advance(LOOK_REUSE)
        member = self.discovery.member_for(self.instances[3])
        self.successResultOf(Deferred.fromCoroutine(self.discovery.write(member, None)))
        self.assertEqual(self.discovery._looked, {})
        self.take(self.instances[1])
        self.clock.advance(LOOK_REUSE)
        self.discovery.new_session()
        self.assertEqual(self.discovery._looked, {})

    def test_members_wait_for_the_look_outside_the_write_slots(self) -> None:
        """
        Members handed over while the look is under way end their write
        at once (`Looking`, tried again), not holding a write slot for the
        look's whole length; one look serves them all, each with its own
        member; a look that fails is made again by the next to ask.
        """
        self.zk.hang("get")
        members = [self.discovery.member_for(i) for i in self.instances[:2]]
        for member in members:
            with self.assertRaises(Looking):
                self.discovery.take_from(member, PREVIOUS)
        self.assertEqual(self.zk.calls_by_path["get_children", f"{DISCOVERY}/svc"], 1)
        self.zk.unhang()
        self.zk.release()
        for member in members:
            self.discovery.take_from(member, PREVIOUS)
        self.assertEqual(
            [m.replaces for m in members],
            [
                f"{DISCOVERY}/svc/member_0000000000",
                f"{DISCOVERY}/svc/member_0000000001",
            ],
        )
        self.assertEqual(self.zk.calls_by_path["get_children", f"{DISCOVERY}/svc"], 1)

    def test_look_reads_go_together(self) -> None:
        """
        A look sends its reads together, `LOOK_READS` at a time, not one
        round trip each (300 in a row at a service of 300 members, while
        the previous primary waits to stop), and still finds each member
        in order.
        """
        parent = f"{DISCOVERY}/svc"
        for i in range(4, LOOK_READS + 10):
            self.zk.put(f"{parent}/member_{i:010d}", b"{}", owner=SQUATTER)
        self.zk.hang("get")
        member = self.discovery.member_for(self.instances[3])
        with self.assertRaises(Looking):
            self.discovery.take_from(member, PREVIOUS)
        self.assertEqual(len([c for c in self.zk.held if c.kind == "get"]), LOOK_READS)
        self.zk.unhang()
        self.zk.release()
        self.assertEqual(self.gets(), LOOK_READS + 10)
        self.discovery.take_from(member, PREVIOUS)
        self.assertEqual(member.replaces, f"{parent}/member_0000000003")

    def test_members_told_once_the_look_is_done(self) -> None:
        """
        The members that wait for a look are told once it is done, to be
        written again then rather than at the next retry; a look that
        fails tells nobody (the retry asks again, not at once in a loop).
        """
        told: list[str] = []
        self.zk.hang("get_children")
        first = self.discovery.member_for(self.instances[0])
        with self.assertRaises(Looking):
            self.discovery.take_from(
                first, PREVIOUS, looked_at=lambda: told.append("first")
            )
        self.zk.unhang()
        self.zk.release(error=ConnectionLoss())
        self.assertEqual(told, [])
        self.zk.hang("get")
        second = self.discovery.member_for(self.instances[1])
        with self.assertRaises(Looking):
            self.discovery.take_from(
                second, PREVIOUS, looked_at=lambda: told.append("second")
            )
        self.assertEqual(told, [])
        self.zk.unhang()
        self.zk.release()
        self.assertEqual(told, ["second"])
        self.discovery.take_from(second, PREVIOUS)
        self.assertEqual(second.replaces, f"{DISCOVERY}/svc/member_0000000001")

    def test_member_made_after_the_look_looked_for_again(self) -> None:
        """
        A member the previous primary made after a look began (its
        instance came up since), for a node taken over after that, is
        looked for again, and replaced, not listed beside ours; a member
        not listed, for a node taken over before the look began, is
        none, and costs no look.
        """
        parent = f"{DISCOVERY}/svc"
        self.take(self.instances[0])
        looked = self.gets()
        self.clock.advance(1)
        late = RedisInstance("r9", "10.0.0.1", 6400, service="svc")
        document = json.dumps(serverset_member(late)).encode()
        self.zk.put(f"{parent}/member_0000000009", document, owner=PREVIOUS)
        before = self.discovery.member_for(late)
        self.discovery.take_from(before, PREVIOUS, since=self.clock.seconds() - 2)
        self.assertIsNone(before.replaces)
        self.assertEqual(self.gets(), looked)
        self.clock.advance(1)
        after = self.discovery.member_for(late)
        self.discovery.take_from(after, PREVIOUS, since=self.clock.seconds())
        self.assertEqual(after.replaces, f"{parent}/member_0000000009")
        self.assertGreater(self.gets(), looked)

    def test_member_handed_to_the_previous_primary_replaced(self) -> None:
        """
        A node taken over from an agent that holds no member of the
        instance (it took the node over, and stopped before it replaced
        the member handed to it) brings the member another agent keeps
        for it, handed over: ours replaces that one, never our own
        session's; a look begun before the takeover is made again first,
        for the member that agent may have made since.
        """
        parent = f"{DISCOVERY}/svc"
        handed = RedisInstance("h", "10.0.0.1", 7000, service="svc")
        data = json.dumps(serverset_member(handed)).encode()
        self.zk.put(f"{parent}/member_0000000010", data, owner=HANDED)
        self.take(self.instances[0])
        looked = self.gets()
        self.clock.advance(1)
        member = self.discovery.member_for(handed)
        self.discovery.take_from(member, PREVIOUS, since=self.clock.seconds())
        self.assertGreater(self.gets(), looked)
        self.assertEqual(member.replaces, f"{parent}/member_0000000010")
        again = self.discovery.member_for(handed)
        self.discovery.take_from(again, PREVIOUS)
        self.assertIsNone(again.replaces)
        ours = RedisInstance("o", "10.0.0.1", 7001, service="svc")
        document = json.dumps(serverset_member(ours)).encode()
        assert self.zk.session_id is not None
        self.zk.put(f"{parent}/member_0000000011", document, owner=self.zk.session_id)
        self.clock.advance(LOOK_REUSE)
        mine = self.discovery.member_for(ours)
        self.discovery.take_from(mine, PREVIOUS)
        self.assertIsNone(mine.replaces)

    def test_replaced_gone_with_its_service_made_at_once(self) -> None:
        """
        A member that replaces the previous primary's, whose service was
        deleted whole (an operator's ``deleteall /discovery``) after the
        replaced member was looked at and before the transaction, is made
        at once with its service (a plain create makes the parents), not
        a second later at the write queue's retry while readers find the
        endpoint missing.
        """
        instance = self.instances[0]
        parent = f"{DISCOVERY}/svc"
        member = self.discovery.member_for(instance)
        self.discovery.take_from(member, PREVIOUS)
        self.assertEqual(member.replaces, f"{parent}/member_0000000000")
        self.zk.hang("replace")
        data = json.dumps(serverset_member(instance)).encode()
        d = Deferred.fromCoroutine(self.discovery.write(member, data))
        for child in self.zk.children(parent):
            self.zk.remove(f"{parent}/{child}")
        self.zk.remove(parent)
        self.zk.unhang()
        self.assertEqual(self.zk.release("replace"), 1)
        self.assertIsNone(self.successResultOf(d))
        assert member.path is not None
        self.assertEqual(self.zk.children(parent), [member.path.rpartition("/")[2]])
        self.assertEqual(self.zk.owner(member.path), self.zk.session_id)
        self.assertIsNone(member.replaces)

    def test_member_held_on_an_ended_session_not_made_again(self) -> None:
        """
        A write of a member held on a session that has ended, begun before
        the resync forgot it, ends as a connection loss: the member went
        with its session, and is not made again as one another client
        deleted.
        """
        member = self.discovery.member_for(self.instances[0])
        data = json.dumps(serverset_member(self.instances[0])).encode()
        self.successResultOf(Deferred.fromCoroutine(self.discovery.write(member, data)))
        held = member.path
        self.zk.expire()
        self.zk.connect()
        d = Deferred.fromCoroutine(self.discovery.write(member, data))
        self.failureResultOf(d, ConnectionLoss)
        self.assertEqual(member.path, held)
        self.assertEqual(self.zk.calls_by_path["create", f"{DISCOVERY}/svc/member_"], 1)

    def test_nodes_not_named_as_members_cost_no_read(self) -> None:
        """
        A look reads only the children named as members are (a prefix,
        then ZooKeeper's 10-digit counter): anyone may add others to a
        service's directory, in any number, and they cost no read.
        """
        parent = f"{DISCOVERY}/svc"
        for i in range(100):
            self.zk.put(f"{parent}/junk-{i}", b"x" * 1000, owner=SQUATTER)
            self.zk.put(f"{parent}/member_s{i:07d}x", b"x" * 1000, owner=SQUATTER)
        self.zk.put(f"{parent}/0000000001", b"", owner=SQUATTER)
        member = self.discovery.member_for(self.instances[2])
        self.discovery.take_from(member, PREVIOUS)
        self.assertEqual(member.replaces, f"{parent}/member_0000000002")
        self.assertEqual(self.gets(), 4)

    def test_unreadable_child_skipped(self) -> None:
        """
        A child named as a member that the agent may not read (a
        squatter's, with an ACL that denies us) is not ours: the look goes
        on without it, and serves, rather than fail for as long as it is
        there.
        """
        parent = f"{DISCOVERY}/svc"
        path = f"{parent}/member_0000000099"
        self.zk.put(path, b"{}", owner=SQUATTER)
        self.zk.fail_next("get", NoAuthError(), path=path, times=10)
        member = self.discovery.member_for(self.instances[2])
        self.discovery.take_from(member, PREVIOUS)
        self.assertEqual(member.replaces, f"{parent}/member_0000000002")

    def test_handed_over_members_share_one_look(self) -> None:
        """
        Members handed over under one parent, waiting to be replaced
        (`Discovery.outlived`), share each look at it: one listing, an
        ``exists`` of each one's node, a ``get`` per child once. One whose
        node's holder holds a member of the same identity too (older or
        newer) stops waiting (True); the others wait on, and stop (False)
        at their limit, after which nothing is looked at.
        """
        node = f"{ROOT}/instances/node"
        self.zk.put(node, b"{}", owner=PREVIOUS)
        mine = []
        others = [
            RedisInstance(name, "10.0.0.1", port, service="svc")
            for name, port in (("x", 7000), ("y", 7001))
        ]
        for instance in [self.instances[1], *others]:
            member = self.discovery.member_for(instance)
            data = json.dumps(serverset_member(instance)).encode()
            self.successResultOf(
                Deferred.fromCoroutine(self.discovery.write(member, data))
            )
            mine.append(member)
        waits = [
            self.discovery.outlived(m, node, 2.5 * HANDED_OVER_CHECK) for m in mine
        ]
        self.clock.advance(HANDED_OVER_CHECK)
        # PREVIOUS holds member_0000000001, made before ours, like ours.
        self.assertEqual(self.successResultOf(waits[0]), True)
        for wait in waits[1:]:
            self.assertNoResult(wait)
        self.assertEqual(self.zk.calls_by_path["get_children", f"{DISCOVERY}/svc"], 1)
        self.assertEqual(self.zk.calls_by_path["exists", node], 3)
        self.assertEqual(self.gets(), 4)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertEqual(self.gets(), 4)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertEqual([self.successResultOf(w) for w in waits[1:]], [False] * 2)
        self.assertEqual(self.zk.calls_by_path["get_children", f"{DISCOVERY}/svc"], 2)
        self.assertEqual(self.discovery._handed, {})
        self.assertEqual(self.discovery._seen, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_handed_over_member_beside_another_not_the_holder(self) -> None:
        """
        A member like ours held by a session that does not hold the node
        (another agent that also let its member go, say) is no reason to
        stop waiting: of two agents each taking the other for the
        primary, one member stays.
        """
        node = f"{ROOT}/instances/node"
        self.zk.put(node, b"{}", owner=0x77)
        member = self.discovery.member_for(self.instances[0])
        data = json.dumps(serverset_member(self.instances[0])).encode()
        self.successResultOf(Deferred.fromCoroutine(self.discovery.write(member, data)))
        wait = self.discovery.outlived(member, node, 30)
        self.clock.advance(2 * HANDED_OVER_CHECK)
        self.assertNoResult(wait)
        self.zk.put(f"{DISCOVERY}/svc/member_0000000099", data, owner=0x77)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertEqual(self.successResultOf(wait), True)

    def test_handed_over_member_beside_squatters(self) -> None:
        """
        A squatter's children under the parent of a member handed over cost
        no read unless named as members, and one named so that the agent
        may not read is read once, and is no agent's member: the look goes
        on to the holder's.
        """
        node = f"{ROOT}/instances/node"
        self.zk.put(node, b"{}", owner=0x77)
        member = self.discovery.member_for(self.instances[0])
        data = json.dumps(serverset_member(self.instances[0])).encode()
        self.successResultOf(Deferred.fromCoroutine(self.discovery.write(member, data)))
        parent = f"{DISCOVERY}/svc"
        for i in range(50):
            self.zk.put(f"{parent}/member_junk{i}", data, owner=SQUATTER)
        unreadable = f"{parent}/member_0000000098"
        self.zk.put(unreadable, data, owner=SQUATTER)
        self.zk.fail_next("get", NoAuthError(), path=unreadable, times=10)
        wait = self.discovery.outlived(member, node, self.clock.seconds() + 30)
        base = self.gets()
        self.clock.advance(HANDED_OVER_CHECK)
        first = self.gets() - base
        self.assertLess(first, 10)  # The 50 not named as members: no read.
        self.assertEqual(self.zk.calls_by_path["get", unreadable], 1)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertNoResult(wait)
        self.assertEqual(self.gets() - base, first)  # Nothing read again.
        self.zk.put(f"{parent}/member_0000000099", data, owner=0x77)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertEqual(self.successResultOf(wait), True)
        self.assertEqual(self.gets() - base, first + 1)

    def member_beside_previous_node(self) -> tuple[str, Member, bytes]:
        """
        An instance node the previous session holds, and our member of
        that instance written: the node's path, the member, its data.
        """
        node = f"{ROOT}/instances/node"
        self.zk.put(node, b"{}", owner=PREVIOUS)
        alone = RedisInstance("x", "10.0.0.1", 7000, service="svc")
        member = self.discovery.member_for(alone)
        data = json.dumps(serverset_member(alone)).encode()
        self.successResultOf(Deferred.fromCoroutine(self.discovery.write(member, data)))
        return node, member, data

    def test_handed_over_member_of_a_removed_node(self) -> None:
        """A member handed over stops waiting once its instance's node is gone."""
        node, member, data = self.member_beside_previous_node()
        wait = self.discovery.outlived(member, node, 30)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertNoResult(wait)
        self.zk.end_session(PREVIOUS)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertEqual(self.successResultOf(wait), True)

    def test_waiting_primary_member_outlives_a_removed_node(self) -> None:
        """
        A member whose agent makes the instance's node again if it is gone
        (its primary, whose node another session took) waits on past the
        node's end (`gone_counts=False`): only the holder's member like it
        ends the wait, and the end of its limit fires False.
        """
        node, member, data = self.member_beside_previous_node()
        wait = self.discovery.outlived(member, node, 30, gone_counts=False)
        self.zk.end_session(PREVIOUS)
        self.clock.advance(2 * HANDED_OVER_CHECK)
        self.assertNoResult(wait)
        self.zk.put(node, b"{}", owner=0x77)
        self.zk.put(f"{DISCOVERY}/svc/member_0000000099", data, owner=0x77)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertEqual(self.successResultOf(wait), True)
        again = self.discovery.outlived(member, node, 30, gone_counts=False)
        self.zk.remove(node)
        self.clock.advance(30)
        self.assertEqual(self.successResultOf(again), False)

    def test_failed_look_made_again(self) -> None:
        """A look that fails is made again by the next member to ask."""
        self.zk.fail_next("get_children", ConnectionLoss())
        member = self.discovery.member_for(self.instances[3])
        with self.assertRaises(Looking):
            self.discovery.take_from(member, PREVIOUS)
        self.discovery.take_from(member, PREVIOUS)
        self.assertEqual(member.replaces, f"{DISCOVERY}/svc/member_0000000003")
