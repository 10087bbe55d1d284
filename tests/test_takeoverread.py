"""
A takeover that goes by a reading of the node older than another
member's takeover of it (DESIGN.md section 8, `Takeovers.take_over`):
versions start again at 0 on each new node, so the transaction's delete
at the version read cannot tell the node read from the one made since.
"""

from __future__ import annotations

import json
from typing import Any

from kazoo.exceptions import ConnectionLoss, OperationTimeoutError
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from sentinel.documents import written_by
from sentinel.membership import SETTLE
from sentinel.nodes import Node
from sentinel.takeover import FRESH_READ
from tests.fakezk import CALL_KINDS, FakeZooKeeper
from tests.groupfakes import DISCOVERY, ROOT, Fleet, Member
from tests.test_publisher import REFRESH

NAMES = [f"r{i:02d}" for i in range(12)]


class StaleReadTests(SynchronousTestCase):
    """
    "g0" and "g2" share every instance (two replicas); g2, an observer of
    g0's nodes, keeps each as it last read it. "g1" takes one of them
    over from g0 since (a delete and a create: its node starts at version
    0 again), and g2 then takes it over by the reading it kept.
    """

    def setUp(self) -> None:
        fleet = self.fleet = Fleet()
        self.g0 = fleet.add("g0", NAMES, replicas=2).start()
        self.g2 = fleet.add("g2", NAMES, replicas=2).start()
        fleet.run(SETTLE + REFRESH + 2.0)
        self.name = next(n for n in NAMES if self.g2.group.observers(n)[:1] == ("g0",))
        self.path = f"{ROOT}/instances/{self.name}"
        opinions = self.g2.publisher._opinions
        kept = opinions.verdict_node_seen(self.name)
        assert kept is not None and written_by(kept[0]) == "g0"
        self.kept_version = kept[1].version
        # g1: another member's client, which takes the node over.
        self.g1 = FakeZooKeeper(fleet.clock, server=fleet.server)
        self.g1.connect()

    def taken_by_g1(self) -> None:
        """g1 takes the node from g0, and writes it up to the version g2 read."""
        current = self.fleet.server.nodes[self.path]
        document = {**json.loads(current.data), "agent": "g1"}
        data = json.dumps(document).encode()
        self.successResultOf(self.g1.replace(self.path, current.stat().version, data))
        for _ in range(self.kept_version):
            self.successResultOf(self.g1.set(self.path, data))
        self.assertEqual(
            self.fleet.server.nodes[self.path].stat().version, self.kept_version
        )

    def read_by_g2(self, held_by: str) -> tuple[Node, Any]:
        """
        g2's node of the instance, to take over from `held_by` (the
        member that holds it in g2's view), and g2's reading of it.
        """
        node = Node(self.path, lambda: None)
        node.takeover = True
        node.held_by = held_by
        takeovers = self.g2.publisher._takeovers
        read = self.successResultOf(Deferred.fromCoroutine(takeovers.read(node)))
        return node, read

    def take_over(self, member: Member, node: Node, read: Any) -> Any:
        takeovers = member.publisher._takeovers
        return self.successResultOf(
            Deferred.fromCoroutine(takeovers.take_over(node, read))
        )

    def test_kept_reading_older_than_anothers_takeover(self) -> None:
        """
        g2 reads the node as it kept it (g0's), g1 takes it over before
        g2's transaction: g1's node is not deleted as g0's; g2 reads it
        again (its next write), and takes it from g1, named as such.
        """
        takeovers = self.g2.publisher._takeovers
        node, read = self.read_by_g2("g0")
        self.assertIsNotNone(read)
        self.taken_by_g1()
        g1_session = self.g1.session_id
        done = self.take_over(self.g2, node, read)
        self.assertTrue(done)
        self.assertEqual(self.fleet.owner_of(self.name), g1_session)
        self.assertEqual((self.fleet.node(self.name) or {})["agent"], "g1")
        self.assertEqual(takeovers.takeovers, 0)
        self.assertTrue(node.dirty)
        self.assertTrue(node.held_before)
        # The next write reads it again, and goes by that reading.
        again = self.successResultOf(Deferred.fromCoroutine(takeovers.read(node)))
        self.assertEqual(again[1].ephemeralOwner, g1_session)
        self.assertTrue(self.take_over(self.g2, node, again))
        self.assertEqual(self.fleet.owner_of(self.name), self.g2.zk.session_id)
        self.assertEqual(node.taken_from_agent, "g1")
        self.assertEqual(node.taken_from_session, g1_session)

    def test_kept_reading_still_the_node(self) -> None:
        """Nobody took the node since g2's reading: taken over at once."""
        takeovers = self.g2.publisher._takeovers
        node, read = self.read_by_g2("g0")
        self.assertTrue(self.take_over(self.g2, node, read))
        self.assertEqual(self.fleet.owner_of(self.name), self.g2.zk.session_id)
        self.assertEqual(node.taken_from_agent, "g0")
        self.assertEqual(takeovers.takeovers, 1)

    def test_kept_reading_of_a_node_gone_since(self) -> None:
        """The node went since (its holder's session ended): none deleted, made anew."""
        takeovers = self.g2.publisher._takeovers
        node, read = self.read_by_g2("g0")
        self.fleet.server.remove(self.path)
        self.assertTrue(self.take_over(self.g2, node, read))
        self.assertTrue(node.dirty)
        self.assertFalse(node.held_before)
        self.assertEqual(takeovers.takeovers, 0)

    def test_reading_just_made_not_asked_again(self) -> None:
        """
        A reading made for the takeover (none kept of that member's
        node) costs no question more before the transaction.
        """
        node, read = self.read_by_g2("another")
        asked = self.g2.zk.calls_by_path["exists", self.path]
        self.assertTrue(self.take_over(self.g2, node, read))
        self.assertEqual(self.g2.zk.calls_by_path["exists", self.path], asked)
        self.assertEqual(self.fleet.owner_of(self.name), self.g2.zk.session_id)

    def test_reading_just_made_then_a_slow_look(self) -> None:
        """
        A reading made for the takeover, answered longer than FRESH_READ
        before the transaction (the look for the member to move along
        took that long, seconds at a loaded start), and g1 took the node
        over meanwhile: g1's node is not deleted; read again.
        """
        node, read = self.read_by_g2("another")
        self.fleet.clock.advance(FRESH_READ * 2)
        self.taken_by_g1()
        self.assertTrue(self.take_over(self.g2, node, read))
        self.assertEqual(self.fleet.owner_of(self.name), self.g1.session_id)
        self.assertTrue(node.dirty and node.held_before)
        self.assertEqual(self.g2.publisher._takeovers.read_again, 1)


class RewritingSquatterTests(SynchronousTestCase):
    """
    A client that holds an instance node in an agent's name and rewrites
    it each time the primary reads it: every takeover finds the node
    changed since its reading (DESIGN.md 2.5).
    """

    def test_takeovers_bounded(self) -> None:
        """
        The primary reads the node again at once after the first such
        change, then leaves it to `Holders` (one question a
        `RECHECK_MIN` at most while the holder writes): a few
        transactions a second, not one a round trip. Before, 166 in 0.5 s
        with a round trip of 1 ms (3 calls each, the whole time).
        """
        fleet = Fleet()
        primary = fleet.add("a", NAMES[:4], replicas=1).start()
        fleet.run(SETTLE + REFRESH + 2.0)
        path = f"{ROOT}/instances/{NAMES[0]}"
        squatter = FakeZooKeeper(fleet.clock, server=fleet.server)
        squatter.connect()
        current = fleet.server.nodes[path]
        data = json.dumps({**json.loads(current.data), "agent": "zzz"}).encode()
        self.successResultOf(squatter.replace(path, current.stat().version, data))
        zk = primary.zk
        call = zk._call

        def rewritten_at_each_read(kind: str, at: str, run: Any) -> Any:
            d = call(kind, at, run)
            held = fleet.server.nodes.get(path)
            if kind == "get" and at == path and held is not None:
                if held.owner == squatter.session_id:
                    squatter.set(path, data)
            return d

        zk._call = rewritten_at_each_read  # type: ignore[method-assign]
        zk.hold_answers(*CALL_KINDS)
        before = zk.calls_by_path["replace", path]
        for _ in range(2000):  # 2 s, a round trip of 1 ms.
            fleet.clock.advance(0.001)
            zk.release()
        self.assertLessEqual(zk.calls_by_path["replace", path] - before, 6)
        self.assertEqual(fleet.owner_of(NAMES[0]), squatter.session_id)


class UnansweredLookTests(SynchronousTestCase):
    """The look before the transaction (`Takeovers._still_as_read`) fails."""

    def test_node_taken_over_after_all(self) -> None:
        """
        A clean leave, the new primary's ``exists`` before each
        transaction failing (a lost connection, a timeout): each member
        along is released, every node is taken over all the same (its
        write tried again), and each service lists one member.
        """
        for error in (ConnectionLoss(), OperationTimeoutError()):
            fleet = Fleet()
            for agent in ("a", "b"):
                fleet.add(
                    agent, NAMES, replicas=2, discovery=("serverset", DISCOVERY)
                ).start()
            fleet.run(SETTLE + REFRESH + 2.0)
            leaving, staying = fleet.members["a"], fleet.members["b"]
            held = [n for n in NAMES if fleet.owner_of(n) == leaving.zk.session_id]
            self.assertTrue(held)
            for name in NAMES:
                staying.zk.fail_next("exists", error, f"{ROOT}/instances/{name}")
            stopped = leaving.stop()
            fleet.run(3.0)
            self.successResultOf(stopped)
            self.assertEqual(staying.zk._failures, [])  # Each look failed.
            for name in NAMES:
                self.assertEqual(fleet.owner_of(name), staying.zk.session_id)
                self.assertEqual(len(fleet.members_of(name)), 1, name)
            self.flushLoggedErrors()
