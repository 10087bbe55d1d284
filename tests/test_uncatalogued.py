"""
A member whose catalog is deleted behind its back while its session lives
(`sentinel.membership`, "A catalog deleted behind a member's back"): the
others keep it in their view, as long as the session that held its catalog
holds its agent node, so that a client deleting one agent's catalog in a
loop does not move its instances away and back at every deletion.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sentinel.membership import SETTLE
from sentinel.uncatalogued import RECHECK
from tests.groupfakes import ROOT, Fleet

NAMES = [f"cache-{i}" for i in range(12)]


class UncataloguedTests(SynchronousTestCase):
    """Three agents with one replica; ``c``'s catalog deleted by another client."""

    def setUp(self) -> None:
        self.fleet = Fleet()
        for agent in ("a", "b", "c"):
            self.fleet.add(agent, NAMES).start()
        self.fleet.run(2.0)
        self.before = self.shares()
        self.assertTrue(self.before["c"])

    def shares(self) -> dict[str, set[str]]:
        return {a: m.watched for a, m in self.fleet.members.items()}

    def views(self) -> dict[str, set[str]]:
        return {
            a: set(m.group.membership.view)
            for a, m in self.fleet.members.items()
            if a != "c"
        }

    def delete_catalog_of_c(self) -> None:
        """``c``'s catalog deleted; ``c`` answered nothing meanwhile."""
        # Its calls held: it cannot write its catalog again yet.
        self.fleet.members["c"].zk.hang()
        self.deleted = {}
        for child in self.fleet.server.children(f"{ROOT}/catalogs"):
            if child.startswith("c."):
                path = f"{ROOT}/catalogs/{child}"
                self.deleted[path] = self.fleet.server.nodes[path]
                self.fleet.server.remove(path)
        self.assertTrue(self.deleted)

    def test_kept_while_its_session_holds_its_agent_node(self) -> None:
        """
        Its catalog gone, its agent node still held by the session that
        held the catalog (a leave deletes the agent node first): the
        others keep ``c`` in their view, and nothing moves, for as long
        as that lasts (here 20 settle times). Before, its instances
        moved to ``a`` and ``b`` one settle time after the deletion, and
        back once ``c`` wrote its catalog again.
        """
        self.delete_catalog_of_c()
        for _ in range(round(20 * SETTLE / 0.05)):
            self.fleet.run(0.05)
            self.assertEqual(self.shares(), self.before)
        self.assertEqual(self.views(), {"a": {"a", "b", "c"}, "b": {"a", "b", "c"}})

    def test_kept_when_gone_before_it_is_read(self) -> None:
        """
        A catalog listed, then deleted before it is read (a deleter racing
        the member's rewrites of it) keeps ``c`` too: before, it left the
        view one settle time later, as for a catalog not listed.
        """
        self.delete_catalog_of_c()
        self.fleet.run(2 * SETTLE)
        catalogs = [
            (path, node.data, node.owner) for path, node in self.deleted.items()
        ]
        membership = self.fleet.members["a"].group.membership
        exists = membership.zk.exists

        def deleted_first(path: str, *args: Any, **kw: Any) -> Any:
            if (
                path.startswith(f"{ROOT}/catalogs/c.")
                and path in self.fleet.server.nodes
            ):
                self.fleet.server.remove(path)
            return exists(path, *args, **kw)

        self.patch(membership.zk, "exists", deleted_first)
        # Written again as ``c`` would: listed, and gone when asked about.
        for path, data, owner in catalogs:
            self.fleet.server.put(path, data, owner)
        for _ in range(round(10 * SETTLE / 0.05)):
            self.fleet.run(0.05)
            self.assertEqual(self.shares(), self.before)
        self.assertEqual(self.views()["a"], {"a", "b", "c"})

    def test_moved_once_its_session_ends(self) -> None:
        """
        Kept so, ``c`` still leaves the view when its session ends (its
        agent node goes with it, and no catalog watch fires any more):
        its instances are moved within `RECHECK` and a settle time.
        """
        self.delete_catalog_of_c()
        self.fleet.run(5 * SETTLE)
        self.assertEqual(self.shares(), self.before)
        self.fleet.server.end_session(self.fleet.session_of("c"))  # type: ignore[arg-type]
        self.fleet.run(RECHECK + SETTLE + 0.5)
        self.assertEqual(self.views(), {"a": {"a", "b"}, "b": {"a", "b"}})
        shares = self.shares()
        self.assertEqual(shares["a"] | shares["b"], set(NAMES))

    def test_not_kept_for_an_agent_node_of_another_session(self) -> None:
        """
        An agent node held by another session than the catalog's (a
        squatter's, after ``c``'s own was deleted too) keeps nothing:
        ``c`` leaves the view as before, once a listing finds it so (at
        most `RECHECK` after the one that kept it) and the settle time.
        This one passes before the change too: it guards the rule.
        """
        self.delete_catalog_of_c()
        squatter = self.fleet.server.open_session()
        said = json.dumps({"agent": "c", "pid": 1}).encode()
        path = f"{ROOT}/agents/c"
        self.fleet.server.remove(path)
        self.fleet.server.put(path, said, owner=squatter)
        self.fleet.run(RECHECK + SETTLE + 0.5)
        self.assertEqual(self.views(), {"a": {"a", "b"}, "b": {"a", "b"}})

    def test_back_when_written_again(self) -> None:
        """
        ``c`` answering again writes its catalog again: the view and the
        shares are as they were, and were throughout.
        """
        self.delete_catalog_of_c()
        self.fleet.run(3 * SETTLE)
        self.fleet.members["c"].zk.unhang()
        self.fleet.members["c"].zk.release()
        for _ in range(round(4.0 / 0.05)):
            self.fleet.run(0.05)
            self.assertEqual(self.shares(), self.before)
        self.assertIn(
            "c",
            {n.split(".")[0] for n in self.fleet.server.children(f"{ROOT}/catalogs")},
        )
        self.assertEqual(self.views(), {"a": {"a", "b", "c"}, "b": {"a", "b", "c"}})
