"""
With auth_file, the root's and its used children's ACLs are read at each
connection: one that lets anyone create or change nodes there fails
/healthz, since the protection auth_file promises does not hold.
"""

from __future__ import annotations

from kazoo.security import ACL, ANYONE_ID_UNSAFE, Id, Permissions
from twisted.trial.unittest import SynchronousTestCase

from sentinel.openacls import open_to_anyone
from sentinel.zk import node_acl
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
            "world:anyone cdwa) (and 1 more): auth_file does not protect",
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
