"""
Children of {root}/instances that no member publishes (`sentinel.crowding`),
in a group of two on a Clock (`tests.groupfakes`).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.crowding import ALLOWED_EXTRA, LOOK_EVERY
from sentinel.readers import JAVA_READER_LIMIT
from tests.groupfakes import ROOT, Fleet

NAMES = [f"r{i:02d}" for i in range(30)]
# 45 bytes a name, as benchmarks/poison.py's: 30,000 make a listing over 1 MiB.
STRANGER = "x{:044d}"


class CrowdingTests(SynchronousTestCase):
    """Two agents sharing 30 instances, and strangers under {root}/instances."""

    def setUp(self) -> None:
        self.fleet = Fleet()
        for agent in ("a", "b"):
            self.fleet.add(agent, NAMES).start()
        self.fleet.run(2.0)
        self.reasons()  # Settled: nothing named.

    def strangers(self, count: int) -> list[str]:
        """`count` persistent children of no agent's under {root}/instances."""
        paths = [f"{ROOT}/instances/{STRANGER.format(i)}" for i in range(count)]
        for path in paths:
            self.fleet.server.put(path, b"{}", 0)
        return paths

    def reasons(self) -> list[str | None]:
        return [
            member.group.unhealthy_reason() for member in self.fleet.members.values()
        ]

    def test_strangers_named_at_the_second_look(self) -> None:
        """
        More children than the group's instances by over ALLOWED_EXTRA are
        named in /healthz once two looks in a row found them, with the
        count and what their names' length means for Java readers; gone,
        they are no longer named at the next look.
        """
        extra = ALLOWED_EXTRA + 500
        paths = self.strangers(extra)
        self.fleet.run(LOOK_EVERY)
        self.assertEqual(self.reasons(), [None, None])
        self.fleet.run(LOOK_EVERY)
        room = JAVA_READER_LIMIT - 3 * len(NAMES) - 4 * (len(NAMES) + extra)
        for reason in self.reasons():
            assert reason is not None
            self.assertIn(
                f"{ROOT}/instances has {len(NAMES) + extra} children, {extra} more"
                f" than the {len(NAMES)} instances the group publishes",
                reason,
            )
            self.assertIn(f"if their names average over {room // extra} bytes", reason)
        for path in paths:
            self.fleet.server.remove(path)
        self.fleet.run(LOOK_EVERY)
        self.assertEqual(self.reasons(), [None, None])
        self.flushLoggedErrors()

    def test_few_strangers_not_named(self) -> None:
        """
        Up to ALLOWED_EXTRA children more than the group's instances (the
        replicas other members discovered, nodes being deleted) are not
        named, however long they stay.
        """
        self.strangers(ALLOWED_EXTRA)
        self.fleet.run(3 * LOOK_EVERY)
        self.assertEqual(self.reasons(), [None, None])

    def test_counted_without_listing(self) -> None:
        """
        Each agent asks only for the node's stat, once per LOOK_EVERY:
        it never lists the children, however many there are.
        """
        self.strangers(ALLOWED_EXTRA + 1)
        zk = self.fleet.members["a"].publisher.zk
        path = f"{ROOT}/instances"
        exists = zk.calls_by_path["exists", path]
        self.fleet.run(4 * LOOK_EVERY)
        self.assertEqual(zk.calls_by_path["exists", path] - exists, 4)
        self.assertEqual(zk.calls_by_path["get_children", path], 0)
        self.assertIsNotNone(self.reasons()[0])
