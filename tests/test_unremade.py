"""
A restart that could not reattach: ``/healthz`` fails, naming them, until
the instance nodes gone with the previous process's session are made
again (`sentinel.unremade`). Processes are publishers on a shared
in-memory ZooKeeper, as in `tests.test_handoff`.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.nodes import Nodes
from sentinel.ownership import Holding
from sentinel.unremade import Unremade
from tests.test_handoff import HandoffTestCase, Process
from tests.test_publisher import DOWN, HEARTBEAT, UP, path


class RestartNotReattachedTests(HandoffTestCase):
    """SIGTERM, the session expires, then a new process on the state_dir."""

    def restarted_after_expiry(self) -> tuple[int, Process]:
        first = self.running()
        old = first.zk.session_id
        assert old is not None
        first.stop()
        self.server.end_session(old)
        self.assertNotIn(path("a"), self.server.nodes)
        second = self.process()
        second.start()
        self.assertFalse(second.handoff.reattached)
        return old, second

    def test_fails_until_each_node_is_made_again(self) -> None:
        """
        The nodes went with the expired session, and this process has not
        written them yet: /healthz fails, naming the session and the
        nodes, and each name goes as its node is made again. Before, it
        said nothing until a node had been due for 5 s.
        """
        old, second = self.restarted_after_expiry()
        reason = second.publisher.unhealthy_reason()
        self.assertEqual(
            reason,
            f"zookeeper: not reattached to the session of the process before"
            f" ({old:#x}: the session had expired): 2 instance node(s) went with"
            " it and are not made again yet (a, b): readers find them missing",
        )
        second.check("a", UP)
        self.assertIn(path("a"), self.server.nodes)
        reason = second.publisher.unhealthy_reason() or ""
        self.assertIn("1 instance node(s) went with it", reason)
        self.assertIn("not made again yet (b)", reason)
        second.check("b", DOWN)
        self.assertIsNone(second.publisher.unhealthy_reason())

    def test_removed_instance_not_waited_for(self) -> None:
        """An instance removed from the config (a reload) is not waited for."""
        _, second = self.restarted_after_expiry()
        del second.states["b"]
        second.check("a", UP)
        self.assertIsNone(second.publisher.unhealthy_reason())

    def test_not_said_while_disconnected(self) -> None:
        """
        While not connected the outage is the reason; the nodes still not
        made are named again once connected.
        """
        _, second = self.restarted_after_expiry()
        second.zk.suspend()
        reason = second.publisher.unhealthy_reason() or ""
        self.assertNotIn("went with it", reason)
        second.zk.connect()
        reason = second.publisher.unhealthy_reason() or ""
        self.assertIn("2 instance node(s) went with it", reason)

    def test_reattached_session_says_nothing_of_it(self) -> None:
        """A reattach keeps the nodes: nothing went, nothing is waited for."""
        self.running().stop()
        second = self.process()
        second.start()
        self.assertTrue(second.handoff.reattached)
        self.assertIsNone(second.publisher.unhealthy_reason())

    def test_one_line_when_it_starts_and_one_when_it_ends(self) -> None:
        """
        One line at the connection naming the nodes, none per answer, one
        at the heartbeat that finds none left, with nobody asking.
        """
        logged: list[str] = []

        def observer(event: LogEvent) -> None:
            if event.get("log_namespace") == "sentinel.unremade":
                logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        _, second = self.restarted_after_expiry()
        [started] = logged
        self.assertIn("its 2 instance node(s) went with it", started)
        self.assertIn("(a, b)", started)
        for _ in range(3):
            second.publisher.unhealthy_reason()
        second.check("a", UP)
        second.check("b", UP)
        self.assertEqual(len(logged), 1)
        self.clock.advance(HEARTBEAT)
        [_, ended] = logged
        self.assertIn("no instance node gone with the session", ended)

    def test_stale_session_closed_at_start(self) -> None:
        """
        A session unchecked for too long is closed at start: its nodes go
        with it, and the reason says so, with why it was not reattached.
        """
        first = self.running()
        old = first.zk.session_id
        self.server.drop(first.zk)
        self.clock.advance(16.0)
        second = self.process()
        second.start(alone=False)
        self.assertEqual(second.zk.closed_sessions, [old])
        reason = second.publisher.unhealthy_reason() or ""
        self.assertIn(
            f"not reattached to the session of the process before ({old:#x}: no"
            " process checked its instances",
            reason,
        )
        self.assertIn("2 instance node(s) went with it", reason)
        second.check("a", UP)
        second.check("b", UP)
        self.assertIsNone(second.publisher.unhealthy_reason())

    def test_first_start_waits_for_nothing(self) -> None:
        """Without a session left (no state file), nothing went with one."""
        first = self.process()
        first.start()
        self.assertIsNone(first.publisher.unhealthy_reason())


class UnremadeTests(SynchronousTestCase):
    """The names left, as the group's view and the nodes say."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100.0)
        self.nodes = Nodes(lambda node, event: None, "/s/agents/x", lambda: b"{}")
        self.watched = {n: RedisInstance(n, "10.0.0.1", 6379) for n in "abc"}
        self.view_known = False
        self.unremade = Unremade(
            self.clock, self.nodes, lambda: self.watched, lambda: self.view_known
        )
        self.unremade.session_gone(0x1234, "the session had expired")

    def test_unassigned_kept_until_the_view_is_known(self) -> None:
        """
        Before the group's view, every instance may be this agent's to
        write; once known, those without a node here are another member's.
        """
        self.assertEqual(self.unremade.look(()), ["a", "b", "c"])
        node = self.nodes.instances["b"] = self.nodes.new("/s/instances/b", bytes)
        self.view_known = True
        self.assertEqual(self.unremade.look(()), ["b"])
        # Written with nothing to say yet (no check): still missing.
        node.written_at = self.clock.seconds()
        self.assertEqual(self.unremade.look(()), ["b"])
        node.owned = True
        self.assertEqual(self.unremade.look(()), [])
        self.assertFalse(self.unremade.waiting)
        self.assertIsNone(self.unremade.reason([]))

    def test_held_or_failing_named_elsewhere(self) -> None:
        """
        A node held by another session, or failing long, has a reason of
        its own; one not held by this process's session is not made.
        """
        held = self.nodes.instances["a"] = self.nodes.new("/s/instances/a", bytes)
        held.holding = Holding(7, 0.0, 0.0, 0)
        failing = self.nodes.instances["b"] = self.nodes.new("/s/instances/b", bytes)
        self.nodes.instances["c"] = self.nodes.new("/s/instances/c", bytes)
        self.assertEqual(self.unremade.look({failing}), ["c"])
