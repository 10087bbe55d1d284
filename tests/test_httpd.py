"""
What an HTTP client may cost the agent: idle timeout, connection cap,
request bodies, the listener's one-line error; in memory, on a Clock.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import httpd
from sentinel.httpd import (
    IDLE_TIMEOUT,
    MAX_BODY_BYTES,
    ConnectionLimit,
    HTTPServer,
    StatusSite,
    http_service,
)
from sentinel.metrics import LoadedAtStart
from tests.fakes import make_monitor
from tests.httptest import Connection, responses, status_app


class SiteTests(SynchronousTestCase):
    """The site's own limits."""

    def setUp(self) -> None:
        self.app, self.monitor, self.clock, _, self.turns = status_app(["a"])
        self.monitor.startService()
        self.site = StatusSite(self.app.resource(), self.clock)

    def test_idle_connection_closed(self) -> None:
        """A connection that sends nothing is closed after IDLE_TIMEOUT."""
        client = Connection(self.site)
        self.clock.advance(IDLE_TIMEOUT - 0.5)
        self.assertTrue(client.open)
        self.clock.advance(0.5)
        self.assertFalse(client.open)

    def test_idle_after_an_answer(self) -> None:
        """
        A kept-alive connection is closed IDLE_TIMEOUT after its last
        answer, not before.
        """
        client = Connection(self.site)
        self.clock.advance(IDLE_TIMEOUT - 1)
        client.request("/healthz")
        [(code, _, _)] = responses(client.output())
        self.assertEqual(code, 200)
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertTrue(client.open)
        self.clock.advance(1)
        self.assertFalse(client.open)

    def test_long_body_closes_the_connection(self) -> None:
        """
        A declared body over MAX_BODY_BYTES, or a chunked one that grows
        past it, closes the connection; a small one is read and answered.
        """
        client = Connection(self.site)
        client.request("/", "POST", f"Content-Length: {MAX_BODY_BYTES + 1}\r\n")
        self.assertFalse(client.open)
        client = Connection(self.site)
        client.request("/", "POST", "Transfer-Encoding: chunked\r\n")
        assert client.protocol is not None
        chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
        for _ in range(MAX_BODY_BYTES // 16384):
            client.protocol.dataReceived(chunk)
            self.assertTrue(client.open)
        client.protocol.dataReceived(chunk)
        self.assertFalse(client.open)
        client = Connection(self.site)
        client.request("/", "POST", "Content-Length: 5\r\n")
        client.protocol.dataReceived(b"hello")
        [(code, _, _)] = responses(client.output())
        self.assertEqual(code, 405)


class ConnectionLimitTests(SynchronousTestCase):
    """At most `limit` connections; the next is closed as it is accepted."""

    def setUp(self) -> None:
        app, monitor, self.clock, _, _ = status_app(["a"])
        monitor.startService()
        self.factory = ConnectionLimit(
            StatusSite(app.resource(), self.clock), 3, self.clock
        )
        self.warned: list[dict[str, Any]] = []
        self.patch(httpd.log, "warn", lambda _, **kw: self.warned.append(kw))

    def test_cap(self) -> None:
        """
        The fourth connection is refused (no protocol: the port closes it),
        counted, and logged once a minute at most; once one closes, a new
        one is accepted again.
        """
        clients = [Connection(self.factory, 40000 + i) for i in range(3)]
        self.assertFalse(any(c.refused for c in clients))
        self.assertTrue(Connection(self.factory, 40003).refused)
        self.assertTrue(Connection(self.factory, 40004).refused)
        self.assertEqual(
            self.factory.stats(),
            {"connections": 3, "max_connections": 3, "refused_connections": 2},
        )
        self.assertEqual(len(self.warned), 1)
        # Sooner than the idle timeout, which would free a place.
        self.patch(httpd, "REFUSED_LOG_INTERVAL", IDLE_TIMEOUT / 2)
        self.clock.advance(IDLE_TIMEOUT / 2)
        self.assertTrue(Connection(self.factory, 40005).refused)
        self.assertEqual(len(self.warned), 2)
        clients[0].lose()
        again = Connection(self.factory, 40006)
        self.assertFalse(again.refused)
        again.request("/healthz")
        [(code, _, _)] = responses(again.output())
        self.assertEqual(code, 200)

    def test_idle_connections_free_their_place(self) -> None:
        """Connections held idle are closed after IDLE_TIMEOUT, making room."""
        for i in range(3):
            Connection(self.factory, 40000 + i)
        self.assertTrue(Connection(self.factory, 40010).refused)
        self.clock.advance(IDLE_TIMEOUT)
        self.assertEqual(self.factory.stats()["connections"], 0)
        self.assertFalse(Connection(self.factory, 40011).refused)


class _RefusingReactor(MemoryReactorClock):
    """A reactor whose ports are all taken."""

    def listenTCP(self, port: int, *args: Any, **kw: Any) -> Any:
        raise CannotListenError(kw.get("interface", ""), port, OSError(98, "in use"))


class ServiceTests(SynchronousTestCase):
    """The listener and the HTTP part of the agent."""

    def test_cannot_listen_is_one_line(self) -> None:
        """A port that cannot be bound ends start-up with one line."""
        app, _, clock, _, _ = status_app(["a"])
        factory = ConnectionLimit(StatusSite(app.resource(), clock), 3, clock)
        description = "tcp:6060:interface=127.0.0.1"
        server = HTTPServer(description, factory, _RefusingReactor())
        with self.assertRaises(SystemExit) as caught:
            server.privilegedStartService()
        message = str(caught.exception.code)
        self.assertEqual(
            message.splitlines(),
            [
                "sentinel: http: cannot listen on tcp:6060:interface=127.0.0.1: "
                "[Errno 98] in use"
            ],
        )

    def test_listens_and_reports(self) -> None:
        """
        The HTTP part listens on its endpoint; its /debug/stats shows the
        gc_objects collaborator's count, the stats given and its own.
        """
        reactor = MemoryReactorClock()
        monitor, _, _, _ = make_monitor(["a"])
        server = http_service(
            "tcp:6060:interface=127.0.0.1",
            reactor,
            monitor,
            agent_id="me",
            reload=LoadedAtStart(0.0),
            zookeeper=None,
            gc_objects=lambda: 4321,
            stats_sources={"tasks": lambda: {"check loop": {}}},
        )
        server.privilegedStartService()
        server.startService()
        self.addCleanup(server.stopService)
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(6060, "127.0.0.1")],
        )
        client = Connection(server.factory)
        client.request("/debug/stats")
        [(_, _, body)] = responses(client.output())
        stats = json.loads(body)
        self.assertEqual(stats["gc_objects"], 4321)
        self.assertEqual(stats["tasks"], {"check loop": {}})
        self.assertEqual(
            stats["http"],
            {
                "connections": 1,
                "max_connections": httpd.MAX_CONNECTIONS,
                "refused_connections": 0,
                "answers_in_progress": 0,
                "slices": 0,
                "slowest_slice_seconds": 0.0,
                "stalled_clients_dropped": 0,
            },
        )
