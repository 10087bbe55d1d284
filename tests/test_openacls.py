"""
With auth_file, the root's and its used children's ACLs are read at each
connection: one that lets anyone create or change nodes there fails
/healthz, since the protection auth_file promises does not hold.
"""

from __future__ import annotations

from kazoo.security import ACL, ANYONE_ID_UNSAFE, Id, Permissions
from twisted.trial.unittest import SynchronousTestCase

from sentinel.openacls import open_to_anyone
from sentinel.publisher import ZooKeeperPublisher
from sentinel.zk import node_acl
from tests.fakezk import FakeZooKeeper
from tests.test_discovery import DISCOVERY, DiscoveryHarness
from tests.test_publisher import ROOT, UP, PublisherHarness

OPEN = [ACL(Permissions.ALL, ANYONE_ID_UNSAFE)]
OURS = node_acl("sentinel:s3cret")


class OpenToAnyoneTests(SynchronousTestCase):
    def test_letters(self) -> None:
        """What anyone may do beyond reading, in ZooKeeper's letters."""
        self.assertEqual(open_to_anyone(OPEN), "cdwa")
        self.assertIsNone(open_to_anyone(OURS or []))
        create = [ACL(Permissions.CREATE | Permissions.READ, ANYONE_ID_UNSAFE)]
        self.assertEqual(open_to_anyone(create), "c")
        someone = [ACL(Permissions.ALL, Id("digest", "sentinel:xyz"))]
        self.assertIsNone(open_to_anyone(someone))


class OpenAclTests(PublisherHarness):
    acl = OURS

    def test_open_root_fails_healthz(self) -> None:
        """
        A root created earlier with an open ACL is named on /healthz, and
        the report ends once a connection finds the ACL fixed.
        """
        self.zk.server.put(ROOT, b"")
        self.zk.server.put(f"{ROOT}/opinions", b"")
        self.zk.server.acls[ROOT] = OPEN
        self.zk.server.acls[f"{ROOT}/opinions"] = OPEN
        self.start()
        self.check(self.instance("a"), UP)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(
            f"zookeeper: {ROOT} lets anyone create or change nodes (ACL "
            f"world:anyone cdwa) (and 1 more: {ROOT}/opinions): auth_file does not"
            " protect",
            reason,
        )
        self.zk.server.acls.clear()
        self.zk.suspend()
        self.zk.connect()
        self.assertIsNone(self.publisher.unhealthy_reason())


class NoAuthTests(PublisherHarness):
    def test_not_read_without_auth(self) -> None:
        """Without auth_file nothing is promised: no ACL is read."""
        self.zk.server.put(ROOT, b"")
        self.zk.server.acls[ROOT] = OPEN
        self.start()
        self.assertEqual(self.zk.calls["get_acls"], 0)
        self.assertIsNone(self.publisher.unhealthy_reason())


class OpenDiscoveryAclTests(DiscoveryHarness):
    """With discovery and auth_file, the folders members go in are read too."""

    def make_publisher(self, zk: FakeZooKeeper) -> ZooKeeperPublisher:
        zk.acl = OURS
        return super().make_publisher(zk)

    def test_open_service_folder_fails_healthz(self) -> None:
        """
        A service folder made before the agent's first member there with
        an open ACL (any client may add an endpoint beside the agent's,
        which readers then send clients to) is named on /healthz once a
        member is made there, read once a connection; the discovery root
        is read at each connection. A folder the agent made itself (its
        ACL) is not named.
        """
        self.zk.server.put(DISCOVERY, b"")
        self.zk.server.put(f"{DISCOVERY}/cache-1", b"")
        self.zk.server.acls[f"{DISCOVERY}/cache-1"] = OPEN
        self.start()
        self.assertIsNone(self.publisher.unhealthy_reason())
        reads = self.zk.calls["get_acls"]
        self.check(self.instance("cache-1"), UP)
        self.check(self.instance("cache-2"), UP)
        self.assertTrue(self.zk.server.children(f"{DISCOVERY}/cache-2"))
        self.assertEqual(
            self.publisher.unhealthy_reason(),
            f"zookeeper: {DISCOVERY}/cache-1 lets anyone create or change nodes"
            " (ACL world:anyone cdwa): auth_file does not protect what this"
            " agent publishes",
        )
        # One read each folder, not one per member written.
        self.assertEqual(self.zk.calls["get_acls"], reads + 2)
        self.zk.server.acls[DISCOVERY] = OPEN
        self.zk.suspend()
        self.zk.connect()
        self.assertIn(
            f"zookeeper: {DISCOVERY} lets anyone create or change nodes",
            self.publisher.unhealthy_reason() or "",
        )
