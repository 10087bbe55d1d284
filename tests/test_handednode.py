"""
Tests for `sentinel.handednode`: a member handed over with its instance's
node stops waiting as soon as the node says the instance out of discovery
(`Discovery.outlived` with ``down_counts``).
"""

from __future__ import annotations

import json
from typing import Any

from kazoo.exceptions import ConnectionLoss
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.discovery import HANDED_OVER_CHECK, Discovery, Member
from sentinel.documents import SERVERSET, serverset_member
from sentinel.handednode import REREAD, says_undiscoverable
from tests.fakezk import FakeZooKeeper

HOLDER = 0x4242
NODE = "/sentinel/instances/r0"


def said(status: str = "up", ready: bool = True, **more: Any) -> bytes:
    """An instance node's document as its primary writes it."""
    document = {"name": "r0", "status": status, "ready": ready, "agent": "b"}
    return json.dumps({**document, **more}).encode()


class SaysUndiscoverableTests(SynchronousTestCase):
    """What a node's data says of its instance's member."""

    def test_down_or_not_ready(self) -> None:
        """Down, or up and not ready, is out of discovery; up and ready is in."""
        self.assertTrue(says_undiscoverable(said("down", False)))
        self.assertTrue(says_undiscoverable(said("up", False)))
        self.assertFalse(says_undiscoverable(said("up", True)))

    def test_anything_else_says_nothing(self) -> None:
        """Garbage, or a document of no agent, ends no wait."""
        for data in (b"", b"\xff", b"[]", b'{"status": "down"}', said("sideways")):
            self.assertFalse(says_undiscoverable(data), data)


class HandedNodeTests(SynchronousTestCase):
    """A member handed over, and the node it was handed over with."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.zk = FakeZooKeeper(self.clock)
        self.zk.connect()
        self.discovery = Discovery(
            self.zk, SERVERSET, "/discovery", self.counted, self.record, self.clock
        )
        self.zk.put("/discovery", b"")
        instance = RedisInstance("r0", "10.0.0.1", 6379)
        self.member = self.discovery.member_for(instance)
        data = json.dumps(serverset_member(instance)).encode()
        self.successResultOf(
            Deferred.fromCoroutine(self.discovery.write(self.member, data))
        )

    async def counted(self, op: str, d: Deferred[Any]) -> Any:
        return await d

    def record(self, parent: str) -> Deferred[None]:
        return succeed(None)

    def reads(self) -> int:
        return (
            self.zk.calls_by_path["get", NODE] + self.zk.calls_by_path["exists", NODE]
        )

    def handed(self, member: Member | None = None, **kw: Any) -> Deferred[bool]:
        return self.discovery.outlived(member or self.member, NODE, 30, **kw)

    def test_node_saying_down_ends_the_wait_at_once(self) -> None:
        """
        The node its new primary rewrites saying the instance down (or up
        and not ready) ends the wait as it is written (True), not at the
        limit: a ``get`` with a watch at the handover, one more at each
        change, none once the wait is over.
        """
        for status, ready in (("down", False), ("up", False)):
            self.zk.put(NODE, said(), owner=HOLDER)
            before = self.reads()
            wait = self.handed(down_counts=True)
            self.assertEqual(self.reads() - before, 1)
            self.zk.put(NODE, said(latency_ms=0.7), owner=HOLDER)
            self.assertNoResult(wait)
            self.zk.put(NODE, said(status, ready), owner=HOLDER)
            self.assertEqual(self.successResultOf(wait), True)
            self.assertEqual(self.reads() - before, 3)
            self.zk.put(NODE, said(), owner=HOLDER)
            self.zk.put(NODE, said("down", False), owner=HOLDER)
            self.assertEqual(self.reads() - before, 3)

    def test_node_down_at_the_handover(self) -> None:
        """A node that says down already when the member is handed over ends it."""
        self.zk.put(NODE, said("down", False), owner=HOLDER)
        self.assertEqual(self.successResultOf(self.handed(down_counts=True)), True)

    def test_missing_node_ends_nothing_until_made_saying_down(self) -> None:
        """
        The node missing is no reason to let the member go here (the
        takeover's rules keep it while its agent observes the instance):
        it is watched for its creation, and a node made saying down (a
        cover's) ends the wait.
        """
        wait = self.handed(down_counts=True, gone_counts=False)
        self.clock.advance(2 * HANDED_OVER_CHECK)
        self.assertNoResult(wait)
        self.zk.put(NODE, said("down", False), owner=HOLDER)
        self.assertEqual(self.successResultOf(wait), True)

    def test_up_node_or_garbage_waits_to_the_limit(self) -> None:
        """A node saying up and ready, or garbage, leaves the wait to its limit."""
        for data in (said(), b"\x00garbage"):
            self.zk.put(NODE, data, owner=HOLDER)
            wait = self.handed(down_counts=True)
            self.clock.advance(29)
            self.assertNoResult(wait)
            self.clock.advance(HANDED_OVER_CHECK)
            self.assertEqual(self.successResultOf(wait), False)

    def test_without_down_counts_nothing_is_read(self) -> None:
        """
        Without ``down_counts`` (a primary's own member beside its holder's
        node, `Members.held_elsewhere`), the node is not watched: only the
        periodic look reads it, and its saying down ends nothing.
        """
        self.zk.put(NODE, said(), owner=HOLDER)
        wait = self.handed(gone_counts=False)
        self.zk.put(NODE, said("down", False), owner=HOLDER)
        self.assertEqual(self.zk.calls_by_path["get", NODE], 0)
        self.assertNoResult(wait)

    def test_failed_read_made_again(self) -> None:
        """A read that fails (a lost connection) is made again after `REREAD`."""
        self.zk.put(NODE, said(), owner=HOLDER)
        self.zk.fail_next("get", ConnectionLoss(), path=NODE)
        wait = self.handed(down_counts=True)
        self.zk.put(NODE, said("down", False), owner=HOLDER)
        self.assertNoResult(wait)
        self.clock.advance(REREAD)
        self.assertEqual(self.successResultOf(wait), True)

    def test_handed_again_stops_the_first_watch(self) -> None:
        """
        A member handed over again (a new wait) ends the first wait
        (False); the first wait's watch reads nothing more and ends
        nothing, the second's ends the second.
        """
        self.zk.put(NODE, said(), owner=HOLDER)
        first = self.handed(down_counts=True)
        second = self.handed(down_counts=True)
        self.assertEqual(self.successResultOf(first), False)
        self.zk.put(NODE, said("down", False), owner=HOLDER)
        self.assertEqual(self.successResultOf(second), True)
        self.assertEqual(self.zk.calls_by_path["get", NODE], 3)

    def test_a_missing_node_is_watched_once(self) -> None:
        """
        Members handed over again and again while their node is missing arm
        one watch of it, not one each: ZooKeeper cannot take a watch back,
        and each stayed in the client and the server until the node was
        made again (never, for an instance removed: 100 handovers left
        101). Once the node is made, nothing is kept for it.
        """
        self.zk.put(NODE, said(), owner=HOLDER)
        first = self.handed(down_counts=True)
        self.zk.remove(NODE)
        self.clock.advance(HANDED_OVER_CHECK)
        self.assertEqual(self.successResultOf(first), True)
        for _ in range(100):
            self.handed(down_counts=True, gone_counts=False)
        self.clock.advance(31)
        self.assertEqual(len(self.zk.watches.get(NODE, ())), 1)
        self.zk.put(NODE, said(), owner=HOLDER)
        self.assertEqual(len(self.zk.watches.get(NODE, ())), 0)
        self.assertEqual(self.discovery.handed_nodes._watchers, {})
