"""The agent node's heartbeat never stops for good."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sentinel import timer
from sentinel.documents import agent_document
from sentinel.publisher import ZooKeeperPublisher
from tests.fakezk import FakeZooKeeper

AGENT_PATH = "/sentinel/agents/me"
HEARTBEAT = 10.0


class HeartbeatTests(SynchronousTestCase):
    """The publisher's heartbeat runs on a RestartingTimer."""

    def test_failure_restarts_heartbeat(self) -> None:
        """
        A heartbeat that raises is logged with its task's name and reported
        by /healthz's check, and the agent node is rewritten a period later.
        """
        events: list[dict[str, Any]] = []
        self.patch(timer, "log", Logger(observer=events.append))
        clock = Clock()
        zk = FakeZooKeeper(clock)

        def document() -> dict[str, object]:
            return agent_document("me", 0.0, clock.seconds(), 1.0, [])

        publisher = ZooKeeperPublisher(
            clock, zk, "/sentinel", "me", 30.0, HEARTBEAT, document
        )
        publisher.startService()
        zk.connect()
        self.assertEqual(zk.writes(AGENT_PATH), 1)

        def broken(node: object) -> None:
            raise RuntimeError("heartbeat bug")

        original = publisher._mark
        self.patch(publisher, "_mark", broken)
        clock.advance(HEARTBEAT)
        self.patch(publisher, "_mark", original)
        reason = publisher.heartbeat_timer.unhealthy_reason() or ""
        self.assertIn("the agent heartbeat task failed", reason)
        self.assertEqual(events[0]["task"], "agent heartbeat")
        clock.advance(HEARTBEAT)
        self.assertEqual(zk.writes(AGENT_PATH), 2)
        self.assertEqual(zk.document(AGENT_PATH)["heartbeat_at"], 2 * HEARTBEAT)
