"""
Writes that ZooKeeper refuses for an operator's mistake (a chroot that does
not exist and may not be made, an ACL of another identity on the root) or
another client's doing (the root made an ephemeral node) are named on
/healthz at once, in words, and logged once; the reason goes with the
refusals.
"""

from __future__ import annotations

from kazoo.exceptions import NoAuthError, NoNodeError, QuotaExceededError
from kazoo.security import ACL, ANYONE_ID_UNSAFE, Id, Permissions, make_digest_acl
from twisted.logger import formatEvent, globalLogPublisher

from sentinel.refusals import LOOK_SPACING
from sentinel.zk import node_acl
from tests.test_publisher import ROOT, UP, PublisherHarness

# The root as another agent's identity leaves it: its own, and read for all.
OTHERS = [
    make_digest_acl("other", "secret", all=True),
    ACL(Permissions.READ, ANYONE_ID_UNSAFE),
]


class AclRefusalTests(PublisherHarness):
    def test_root_of_another_identity(self) -> None:
        """
        A root whose ACL lets only another identity create is named with
        its ACL and this agent's identity as soon as a create is refused,
        logged once however many writes are refused, and the reason goes
        once the ACL is fixed and the writes succeed.
        """
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.zk.server.put(ROOT, b"")
        self.zk.server.acls[ROOT] = OTHERS
        self.start()
        self.check(self.instance("a"), UP)
        self.check(self.instance("b"), UP)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(
            f"zookeeper: {ROOT} refuses this agent's creates (ACL digest:other:cdrwa,"
            " world:anyone:r; this agent is world:anyone, without"
            " zookeeper.auth_file): nothing under it is written",
            reason,
        )
        self.retries(20)
        lines = [formatEvent(e) for e in events]
        refused = [line for line in lines if "refuses this agent's writes" in line]
        self.assertEqual(len(refused), 1, lines)
        del self.zk.server.acls[ROOT]
        self.retries(5)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")

    def test_looks_spaced(self) -> None:
        """
        However many writes are refused, looks start at most every
        LOOK_SPACING seconds: 20 refused writes cost a handful of looks, not
        one per refusal.
        """
        self.zk.server.put(ROOT, b"")
        self.zk.server.acls[ROOT] = OTHERS
        self.start()
        for name in "abcdefgh":
            self.check(self.instance(name), UP)
        self.clock.advance(LOOK_SPACING * 4)
        self.assertGreaterEqual(self.publisher._queue.writes["error"], 20)
        self.assertIn(self.zk.calls["get_acls"], range(1, 6))

    def test_unjudged_scheme_not_blamed(self) -> None:
        """
        An ACL granting create to an identity this agent cannot judge (an
        ip) is not blamed: the failing writes alone say so, later. Once it
        is one this agent can judge, it is.
        """
        self.zk.server.put(ROOT, b"")
        self.zk.server.acls[ROOT] = [ACL(Permissions.ALL, Id("ip", "10.0.0.9"))]
        self.start()
        self.check(self.instance("a"), UP)
        self.assertNotIn("refuses", self.publisher.unhealthy_reason() or "")
        self.zk.server.acls[ROOT] = OTHERS
        self.clock.advance(LOOK_SPACING)
        self.assertIn(
            f"zookeeper: {ROOT} refuses this agent's creates",
            self.publisher.unhealthy_reason() or "",
        )


class QuotaRefusalTests(PublisherHarness):
    def test_quota_exceeded(self) -> None:
        """
        A create that ZooKeeper's enforced quota refuses
        (QuotaExceededError) is named on /healthz at once, with the
        directory and what to do, logged once however often it is
        retried; the instances under the quota stay published, and the
        refused one is written, and the reason goes, once the quota is
        lifted. Before, /healthz said nothing for 5 s, then named only
        the exception.
        """
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.start()
        self.check(self.instance("a"), UP)
        refused = f"{ROOT}/instances/b"
        self.zk.fail_next("create", QuotaExceededError(), path=refused, times=1000)
        self.check(self.instance("b"), UP)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(
            f"zookeeper: a ZooKeeper quota on {ROOT}/instances or a node above"
            " it is exceeded (QuotaExceededError, enforceQuota on)",
            reason,
        )
        self.assertIn("zkCli.sh listquota", reason)
        self.retries(20)
        self.assertIn("quota", self.publisher.unhealthy_reason() or "")
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")
        lines = [formatEvent(e) for e in events]
        logged = [line for line in lines if "refuses this agent's writes" in line]
        self.assertEqual(len(logged), 1, lines)
        self.zk.forget_failures()
        self.retries(5)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.zk.document(refused)["status"], "up")


class OwnIdentityTests(PublisherHarness):
    acl = node_acl("sentinel:s3cret")

    def test_own_identity_admitted(self) -> None:
        """
        A root that grants create to this agent's own digest identity, and
        only to it, is no refusal: a create refused for another reason (a
        deeper ACL) is not blamed on the root; another identity's root is,
        naming this agent's user, never its password.
        """
        self.zk.server.put(ROOT, b"")
        self.zk.server.acls[ROOT] = [*OTHERS[:1], *(self.acl or [])]
        self.zk.fail_next("create", NoAuthError(), times=3)
        self.start()
        self.check(self.instance("a"), UP)
        self.assertNotIn("refuses", self.publisher.unhealthy_reason() or "")
        self.zk.server.acls[ROOT] = OTHERS
        self.clock.advance(LOOK_SPACING)
        self.check(self.instance("b"), UP)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("this agent is digest:sentinel (zookeeper.auth_file)", reason)
        self.assertNotIn("s3cret", reason)


class EphemeralParentTests(PublisherHarness):
    def test_ephemeral_root(self) -> None:
        """
        A root that another client made an ephemeral node (which ZooKeeper
        lets have no children) is named with its session as soon as a
        create is refused, logged once; the reason goes with that session,
        once the agent's writes under the root it then creates succeed.
        """
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        squatter = 0x5EED
        self.zk.put(ROOT, b"", owner=squatter)
        self.start()
        self.check(self.instance("a"), UP)
        self.check(self.instance("b"), UP)
        self.assertIn(
            f"zookeeper: {ROOT} is an ephemeral node (session 0x5eed), which"
            " ZooKeeper lets have no children: nothing under it is written;"
            " another client made it so; it goes when that session ends, or"
            f" delete it (zkCli.sh delete {ROOT})",
            self.publisher.unhealthy_reason() or "",
        )
        self.retries(20)
        lines = [formatEvent(e) for e in events]
        refused = [line for line in lines if "refuses this agent's writes" in line]
        self.assertEqual(len(refused), 1, lines)
        self.zk.end_session(squatter)
        self.retries(5)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertEqual(self.zk.document(f"{ROOT}/instances/a")["status"], "up")
        self.assertEqual(self.zk.owner(ROOT), 0)

    def test_ephemeral_directory(self) -> None:
        """
        So is a directory under the root made ephemeral (``instances``),
        the one named; the writes elsewhere go on.
        """
        self.zk.put(f"{ROOT}/instances", b"", owner=0x5EED)
        self.start()
        self.check(self.instance("a"), UP)
        self.assertIn(
            f"zookeeper: {ROOT}/instances is an ephemeral node (session 0x5eed)",
            self.publisher.unhealthy_reason() or "",
        )


class ChrootRefusalTests(PublisherHarness):
    def test_no_chroot(self) -> None:
        """
        Without a chroot, creates that fail with NoNodeError name nothing
        this agent cannot know (a missing chroot is made, and named only
        if refused: tests.test_chroot).
        """
        self.zk.fail_next("create", NoNodeError(), times=100)
        self.start()
        self.check(self.instance("a"), UP)
        self.clock.advance(LOOK_SPACING)
        self.assertNotIn("chroot", self.publisher.unhealthy_reason() or "")
        self.zk.forget_failures()
        self.retries(5)
        self.assertIsNone(self.publisher.unhealthy_reason())
