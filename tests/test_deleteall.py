"""
A group's root and discovery root deleted behind the members' backs
(``deleteall /sentinel`` and ``deleteall /discovery``), their sessions
alive: nothing moves between them (`Membership`, wiped catalogs).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.documents import NERVE
from sentinel.guard import REWRITE_AFTER
from sentinel.membership import WIPED_STAND_IN_AFTER
from tests.groupfakes import DISCOVERY, ROOT, Fleet

NAMES = [f"r{i:02d}" for i in range(30)]
AGENTS = ("a", "b", "c")


class DeleteAllTests(SynchronousTestCase):
    """Three members, two replicas, nerve members, settled; both roots deleted."""

    def setUp(self) -> None:
        self.fleet = Fleet()
        for agent in AGENTS:
            self.fleet.add(agent, NAMES, replicas=2, discovery=(NERVE, DISCOVERY))
            self.fleet.members[agent].start()
        self.fleet.run(3.0)
        self.primaries = {n: self.fleet.owner_of(n) for n in NAMES}
        self.assertEqual(
            set(self.primaries.values()),
            {self.fleet.session_of(a) for a in AGENTS},
        )

    def test_views_hold_and_no_node_moves(self) -> None:
        """
        Each member finds its own catalog deleted with the others': it
        keeps them in its view while they write theirs again, rather than
        take them for gone (their sessions ended) and take every instance
        alone, then hand two thirds back as they were listed again, each
        member at its own time, the nodes going back and forth between
        them. Every node is made again by its primary and moves no more;
        every service lists one member.
        """
        self.fleet.server.delete_trees(ROOT, DISCOVERY)
        lone_views = set()
        holders: dict[str, list[int]] = {n: [] for n in NAMES}
        for _ in range(round(6.0 / 0.05)):
            self.fleet.run(0.05)
            for agent in AGENTS:
                if set(self.fleet.members[agent].group.membership.view) != set(AGENTS):
                    lone_views.add(agent)
            for name in NAMES:
                owner = self.fleet.owner_of(name)
                if owner is not None and (
                    not holders[name] or holders[name][-1] != owner
                ):
                    holders[name].append(owner)
        self.assertEqual(lone_views, set())
        moved = {n: h for n, h in holders.items() if len(h) > 1}
        self.assertEqual(moved, {})
        self.assertEqual({n: self.fleet.owner_of(n) for n in NAMES}, self.primaries)
        for name in NAMES:
            self.assertEqual(len(self.fleet.members_of(name)), 1, name)

    def test_member_slow_to_hear_of_it_keeps_its_nodes(self) -> None:
        """
        A member cut off for a second as it happens (its session alive)
        makes its catalog and nodes again once back: the others wait for
        it `WIPED_STAND_IN_AFTER` before they stand in for its share, and
        none of its nodes goes to a stand-in and back to it.
        """
        slow = self.fleet.members["c"]
        slow.zk.suspend()
        self.fleet.server.delete_trees(ROOT, DISCOVERY)
        holders = self.watch_holders(1.0)
        slow.zk.connect()
        for name, later in self.watch_holders(6.0).items():
            for holder in later:
                if holders[name][-1:] != [holder]:
                    holders[name].append(holder)
        self.assertEqual({n: h for n, h in holders.items() if len(h) > 1}, {})
        self.assertEqual({n: self.fleet.owner_of(n) for n in NAMES}, self.primaries)

    def test_member_gone_meanwhile_stood_in_for(self) -> None:
        """
        A member cut off as it happens (its session may be ending) is
        waited for `WIPED_STAND_IN_AFTER`, no longer, before its share is
        published again by the next observers where its nodes are missing:
        not taken at once for gone, as a member whose session ended.
        """
        session = self.fleet.session_of("c")
        share = [n for n in NAMES if self.primaries[n] == session]
        self.assertTrue(share)
        self.fleet.members["c"].zk.suspend()
        self.fleet.server.delete_trees(ROOT, DISCOVERY)
        self.fleet.run(1.0)
        self.assertEqual([n for n in share if self.fleet.owner_of(n)], [])
        self.fleet.run(WIPED_STAND_IN_AFTER)
        self.assertEqual([n for n in share if self.fleet.owner_of(n) is None], [])

    def watch_holders(self, seconds: float) -> dict[str, list[int]]:
        """Each instance node's holders in turn over `seconds`."""
        holders: dict[str, list[int]] = {n: [] for n in NAMES}
        for _ in range(round(seconds / 0.05)):
            self.fleet.run(0.05)
            for name in NAMES:
                owner = self.fleet.owner_of(name)
                if owner is not None and (
                    not holders[name] or holders[name][-1] != owner
                ):
                    holders[name].append(owner)
        return holders

    def test_listed_with_its_own_catalog_left(self) -> None:
        """
        A member that lists the group with its own catalog still there
        (the others' deleted first, or its own written again already)
        but its own agent node gone with the others' keeps them in its
        view too: their sessions did not end.
        """
        server = self.fleet.server
        server.delete_trees(
            f"{ROOT}/agents",
            *(
                f"{ROOT}/catalogs/{p}"
                for p in server.children(f"{ROOT}/catalogs")
                if not p.startswith("a.")
            ),
        )
        holders = self.watch_holders(1.0)
        self.assertEqual(
            set(self.fleet.members["a"].group.membership.view), set(AGENTS)
        )
        self.assertEqual({n: h for n, h in holders.items() if len(h) > 1}, {})


class MemberAskedAboutTests(SynchronousTestCase):
    """One agent, nerve members; its instance node and member deleted at once."""

    def test_member_made_again_when_the_node_is_ours_while_asked(self) -> None:
        """
        A member and its instance's node deleted together (a ``deleteall``
        of the chroot) are both written again; the node is made (ours)
        while the member's write asks whether the member is still there:
        the member is made again at once. Before, the node's
        `instance_owned` found the member still held and left it, and the
        answer (gone) then dropped it: the service listed no member until
        the refresh, 30 s later, its instance up and ready.
        """
        fleet = Fleet()
        agent = fleet.add("a", ["r00"], discovery=(NERVE, DISCOVERY)).start()
        fleet.run(3.0)
        [member] = fleet.members_of("r00")
        owner = fleet.owner_of("r00")
        # The reads answered in order: the node's question before the
        # member's, as the real ZooKeeper answered them in the run.
        agent.zk.hold_answers("exists")
        fleet.server.remove(f"{ROOT}/instances/r00")
        fleet.server.remove(f"{DISCOVERY}/r00/{member}")
        fleet.clock.advance(REWRITE_AFTER)
        self.assertEqual(
            [c.path for c in agent.zk.held],
            [
                f"{ROOT}/instances/r00",
                f"{DISCOVERY}/r00/{member}",
                f"{ROOT}/instances/r00",
            ],
        )
        agent.zk.unhang()
        agent.zk.release("exists")
        self.assertEqual(fleet.owner_of("r00"), owner)
        fleet.run(1.0)
        self.assertEqual(len(fleet.members_of("r00")), 1)
