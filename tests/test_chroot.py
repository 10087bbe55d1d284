"""
A chroot in zookeeper.hosts that does not exist is made, every level,
with the nodes' ACL, and made again when it is deleted while the agent
runs; one that another identity's parent refuses is named on /healthz at
once, and made once the ACL lets it.
"""

from __future__ import annotations

from typing import Any

from kazoo.exceptions import ConnectionLoss
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl
from twisted.logger import formatEvent, globalLogPublisher

from sentinel.chroot import REFUSED_RETRY, REMADE_LOG_SPACING
from sentinel.unrooted import Unrooted
from sentinel.zk import node_acl
from tests.fakezk import ChrootedZooKeeper
from tests.test_publisher import ROOT, UP, PublisherHarness
from tests.test_refusals import OTHERS

CHROOT = "/a/b"
MADE = f"created the chroot {CHROOT} in zookeeper.hosts"


class ChrootHarness(PublisherHarness):
    zk: ChrootedZooKeeper

    def make_zk(self) -> ChrootedZooKeeper:
        return ChrootedZooKeeper(self.clock, CHROOT)

    def setUp(self) -> None:
        super().setUp()
        self.lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def made(self) -> int:
        return sum(MADE in line for line in self.lines)


class MissingChrootTests(ChrootHarness):
    def test_made_every_level(self) -> None:
        """
        On an empty ZooKeeper, the chroot's every level is created at the
        first connection, open without auth_file, logged once at info;
        the writes refused meanwhile go through at their retry, and
        /healthz stays 200.
        """
        self.start()
        self.check(self.instance("a"), UP)
        self.assertEqual(
            self.zk.above, {"/a": OPEN_ACL_UNSAFE, CHROOT: OPEN_ACL_UNSAFE}
        )
        self.assertEqual(self.made(), 1, self.lines)
        self.retries(2)
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.made(), 1, self.lines)

    def test_existing_level_passed(self) -> None:
        """A level that exists is passed over; only the missing is made."""
        self.zk.above["/a"] = OTHERS + OPEN_ACL_UNSAFE
        self.start()
        self.assertEqual(self.zk.above[CHROOT], OPEN_ACL_UNSAFE)
        self.assertEqual(self.zk.above["/a"], OTHERS + OPEN_ACL_UNSAFE)

    def test_once_a_session(self) -> None:
        """
        A reconnection to the same session does not look again; a new
        session (ZooKeeper came back empty) does, and makes it again.
        """
        self.start()
        self.check(self.instance("a"), UP)
        looks = self.zk.calls_by_path["exists", "/"]
        self.zk.suspend()
        self.zk.connect()
        self.assertEqual(self.zk.calls_by_path["exists", "/"], looks)
        self.zk.server.wipe()
        self.zk.above.clear()
        self.zk.expire()
        self.zk.connect()
        self.retries(2)
        self.assertIn(CHROOT, self.zk.above)
        self.assertEqual(self.made(), 2, self.lines)
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_cut_short_tried_again(self) -> None:
        """
        A creation cut short by a lost connection is tried again at the
        next refused write's look, or at the next connection, whichever
        comes first; meanwhile the missing chroot is not named as the
        operator's mistake.
        """
        self.zk.fail_next("create_past_chroot", ConnectionLoss())
        self.zk.hanging.add("create")
        self.start()
        self.assertNotIn(CHROOT, self.zk.above)
        self.zk.suspend()
        self.zk.hanging.clear()
        self.zk.connect()
        self.assertIn(CHROOT, self.zk.above)
        self.check(self.instance("a"), UP)
        self.retries(2)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")

    def test_look_timed_out(self) -> None:
        """
        A look that ZooKeeper does not answer ends with the call timeout,
        and the next refused write's look makes the chroot.
        """
        self.zk.hanging.add("exists")
        self.start()
        self.check(self.instance("a"), UP)
        self.clock.advance(self.zk.call_timeout)
        self.zk.hanging.clear()
        self.retries(6)
        self.assertIn(CHROOT, self.zk.above)
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")

    def deleteall(self) -> None:
        """``deleteall /a`` by another client: the chroot and all below."""
        self.zk.above.clear()
        for path in sorted(self.zk.nodes, reverse=True):
            self.zk.remove(path)

    def test_deleted_since_made_again(self) -> None:
        """
        A chroot deleted, every level, after this session made it is made
        again in this session, at the first refused write's look, with
        the nodes' ACL; the nodes are written again, /healthz is 200
        meanwhile and after, and it is logged once.
        """
        self.start()
        self.check(self.instance("a"), UP)
        self.retries(2)
        self.deleteall()
        self.check(self.instance("b"), UP)
        self.retries(3)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(
            self.zk.above, {"/a": OPEN_ACL_UNSAFE, CHROOT: OPEN_ACL_UNSAFE}
        )
        self.assertEqual(self.zk.document(f"{ROOT}/instances/b")["status"], "up")
        self.assertEqual(self.made(), 2, self.lines)
        again = [line for line in self.lines if f"{MADE} again" in line]
        self.assertEqual(len(again), 1, self.lines)
        self.assertIn("deleted while the agent ran", again[0])

    def test_deleted_in_a_loop(self) -> None:
        """
        A chroot deleted again and again is made again each time, in this
        session, with one line per REMADE_LOG_SPACING saying how often,
        and the nodes are written after the last deletion.
        """
        self.start()
        self.check(self.instance("a"), UP)
        self.retries(2)
        for n in range(20):
            self.deleteall()
            self.check(self.instance(f"b{n}"), UP)
            self.retries(3)
            self.assertIn(CHROOT, self.zk.above)
        self.clock.advance(REMADE_LOG_SPACING)
        self.deleteall()
        self.check(self.instance("c"), UP)
        self.retries(3)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.zk.document(f"{ROOT}/instances/c")["status"], "up")
        again = [line for line in self.lines if f"{MADE} again" in line]
        self.assertEqual(len(again), 2, self.lines)
        self.assertIn("(1 time(s) since the last such line)", again[0])
        self.assertIn("(20 time(s) since the last such line)", again[1])


class RefusedChrootTests(ChrootHarness):
    def test_parent_of_another_identity(self) -> None:
        """
        A parent whose ACL lets only another identity create is named at
        once (within one retry), logged once; tried again after
        REFUSED_RETRY, the chroot is made once the ACL lets it, the
        nodes written and the reason gone, with no restart.
        """
        self.zk.above["/a"] = OTHERS
        self.start()
        self.check(self.instance("a"), UP)
        self.retries(1)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(
            f"zookeeper: the chroot {CHROOT} in zookeeper.hosts does not exist,"
            " and /a refuses this agent's creates (this agent is world:anyone,"
            " without zookeeper.auth_file): nothing is written; create it"
            f" (zkCli.sh create {CHROOT}), give the agents' identity create in"
            " /a, or correct zookeeper.hosts",
            reason,
        )
        self.retries(10)
        self.assertIn(reason, self.publisher.unhealthy_reason() or "")
        refused = [line for line in self.lines if "refuses this agent's writes" in line]
        self.assertEqual(len(refused), 1, self.lines)
        self.zk.above["/a"] = OPEN_ACL_UNSAFE
        self.retries(int(REFUSED_RETRY))
        self.assertIn(CHROOT, self.zk.above)
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.made(), 1)


class FailedChrootTests(ChrootHarness):
    def test_create_that_cannot_be_sent(self) -> None:
        """
        A create that fails for another cause than ZooKeeper's answer
        (kazoo's queue moved: `sentinel.unrooted`) is logged once, and
        /healthz names the chroot missing and the error at once; tried
        again after REFUSED_RETRY, not at every refused write.
        """
        self.zk.fail_next("create_past_chroot", AttributeError("_call"), times=2)
        self.start()
        self.check(self.instance("a"), UP)
        self.retries(10)
        self.assertIn(
            f"zookeeper: the chroot {CHROOT} in zookeeper.hosts does not exist,"
            " and creating it failed (AttributeError('_call')): nothing is"
            f" written; create it (zkCli.sh create {CHROOT}) or correct"
            " zookeeper.hosts",
            self.publisher.unhealthy_reason() or "",
        )
        self.assertEqual(self.zk.calls["create_past_chroot"], 1)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        self.retries(int(REFUSED_RETRY))
        self.assertEqual(self.zk.calls["create_past_chroot"], 2)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 0)


class AuthChrootTests(ChrootHarness):
    acl = node_acl("user:pw")

    def test_levels_get_the_nodes_acl(self) -> None:
        """
        With auth_file, each level made gets the ACL of the agent's other
        persistent nodes: world:read and the identity:all.
        """
        self.start()
        self.check(self.instance("a"), UP)
        self.retries(2)
        self.assertEqual(self.zk.above["/a"], self.acl)
        self.assertEqual(self.zk.above[CHROOT], self.acl)
        self.assertIn(make_digest_acl("user", "pw", all=True), self.zk.above[CHROOT])
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")


class _Client:
    """What `Unrooted` uses of a kazoo client: its handler and its queue."""

    def __init__(self) -> None:
        self.handler = self
        self.sent: list[tuple[Any, Any]] = []

    def async_result(self) -> object:
        return object()

    def _call(self, request: Any, result: Any) -> None:
        self.sent.append((request, result))


class UnrootedTests(ChrootHarness):
    def test_path_past_the_chroot(self) -> None:
        """
        The create goes to kazoo's queue with the path as given (no
        chroot before it), persistent, empty, with the ACL given (open
        for None), answered through the result it returns.
        """
        client = _Client()
        result = Unrooted(client).create_async("/a", None)
        [(request, queued)] = client.sent
        self.assertIs(queued, result)
        self.assertEqual(
            (request.path, request.data, request.acl, request.flags),
            ("/a", b"", OPEN_ACL_UNSAFE, 0),
        )
        acl = node_acl("user:pw")
        Unrooted(client).create_async("/a/b", acl)
        self.assertEqual(client.sent[1][0].acl, acl)
