"""
What `sentinel.guard` relies on, proved against the real ZooKeeper: a
children watch on an ephemeral node of ours fires when the node is deleted,
never for a write of its data; and kazoo does not set it again after a
lost connection (it fires it with an event of type NONE), so the agent
must arm it again when it writes its nodes after the reconnection.
"""

from __future__ import annotations

import threading

from kazoo.client import KazooClient
from kazoo.protocol.states import EventType, WatchedEvent
from kazoo.retry import KazooRetry
from twisted.trial.unittest import SynchronousTestCase

from tests.servers import shared_zookeeper

# Every blocking call of these tests waits at most this long.
WAIT = 5.0
# The server's minimum: kazoo notices a dead connection after 2/3 of it.
SESSION_TIMEOUT = 2.0


class ChildrenWatchTests(SynchronousTestCase):
    """A children watch on our own ephemeral node, on the real server."""

    def setUp(self) -> None:
        self.zookeeper = shared_zookeeper()
        self.root = f"/t-{self._testMethodName}"
        self.client = self.connect()
        self.client.ensure_path(self.root)
        self.events: list[WatchedEvent] = []
        self.fired = threading.Event()

    def connect(self) -> KazooClient:
        client = KazooClient(
            hosts=self.zookeeper.hosts,
            timeout=SESSION_TIMEOUT,
            connection_retry=KazooRetry(max_tries=-1, max_delay=0.2),
        )
        client.start(timeout=WAIT)
        self.addCleanup(client.close)
        self.addCleanup(client.stop)
        return client

    def watch(self, event: WatchedEvent) -> None:
        self.events.append(event)
        self.fired.set()

    def test_fires_on_delete_not_on_set(self) -> None:
        """
        Our sets never fire the watch; another client's delete fires it
        once, as a deletion of that very path.
        """
        path = f"{self.root}/node"
        self.client.create(path, b"1", ephemeral=True)
        self.client.get_children(path, watch=self.watch)
        for n in range(20):
            self.client.set(path, str(n).encode())
        self.client.sync(path)
        self.assertEqual(self.events, [])
        other = self.connect()
        other.delete(path)
        self.assertTrue(self.fired.wait(WAIT))
        self.assertEqual(
            [(e.type, e.path) for e in self.events], [(EventType.DELETED, path)]
        )

    def test_lost_connection_drops_the_watch(self) -> None:
        """
        A lost connection fires the watch with NONE and forgets it: a
        delete after the reconnection to the same session fires nothing.
        """
        path = f"{self.root}/node"
        self.client.create(path, b"1", ephemeral=True)
        session = self.client.client_id
        self.client.get_children(path, watch=self.watch)
        reconnected = threading.Event()
        self.client.add_listener(
            lambda state: reconnected.set() if state == "CONNECTED" else None
        )
        self.addCleanup(self.zookeeper.restore)
        self.zookeeper.pause()
        try:
            self.assertTrue(self.fired.wait(WAIT))
        finally:
            self.zookeeper.resume()
        self.assertTrue(reconnected.wait(WAIT))
        self.assertEqual(self.client.client_id, session)
        self.assertEqual([e.type for e in self.events], [EventType.NONE])
        self.fired.clear()
        self.connect().delete(path)
        self.assertFalse(self.fired.wait(0.5))
