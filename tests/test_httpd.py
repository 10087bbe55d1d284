"""
What an HTTP client may cost the agent: idle timeout, connection cap,
request bodies, the listener's one-line error; in memory, on a Clock.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.internet import unix
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import (
    MemoryReactorClock,
    StringTransportWithDisconnection,
)
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase

from sentinel import httpd
from sentinel.httpd import (
    IDLE_TIMEOUT,
    LINGER,
    MAX_BODY_BYTES,
    REFUSED_LOG_INTERVAL,
    SEND_BUFFER,
    STALE_AFTER,
    UNREAD_AFTER,
    ConnectionLimit,
    HTTPServer,
    StatusSite,
    http_service,
)
from sentinel.metrics import LoadedAtStart
from sentinel.targets import NOT_A_TARGET
from tests.certs import make_certificates
from tests.fakes import make_monitor
from tests.httptest import Connection, responses, run_until_answered, status_app

PIPELINED = b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n"


class SiteTests(SynchronousTestCase):
    """The site's own limits."""

    def setUp(self) -> None:
        self.app, self.monitor, self.clock, _, self.turns = status_app(["a"])
        self.monitor.startService()
        self.site = StatusSite(self.app.resource(), self.clock)

    def test_no_timer_for_the_access_log(self) -> None:
        """
        Started, the site (which keeps no access log) leaves no timer on
        the reactor: Twisted's refresh of the log's date each second would
        wake an idle agent every second for nothing.
        """
        clock = Clock()
        site = StatusSite(self.app.resource(), clock)
        site.doStart()
        self.assertEqual(clock.getDelayedCalls(), [])
        site.doStop()

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

    def turn_by_turn(self, client: Connection) -> Clock:
        """
        The channel's later calls on a clock of their own, each
        ``advance(1)`` one reactor turn: a Clock runs a call made for
        now by a call it runs in the same ``advance``, a reactor on its
        next turn.
        """
        turns = Clock()

        def later(delay: float, f: Any, *a: Any, **kw: Any) -> Any:
            return turns.callLater(1 + delay, f, *a, **kw)

        assert client.protocol is not None
        client.protocol.callLater = later
        return turns

    def test_pipelined_requests_one_per_turn(self) -> None:
        """
        Requests sent together are answered one per reactor turn, in
        order, each complete: a client pipelining thousands never holds
        the reactor for more than one answer.
        """
        client = Connection(self.site)
        turns = self.turn_by_turn(client)
        assert client.protocol is not None
        client.protocol.dataReceived(PIPELINED * 3)
        self.assertEqual(len(responses(client.output())), 1)
        turns.advance(1)
        self.assertEqual(len(responses(client.output())), 2)
        turns.advance(1)
        answers = responses(client.output())
        self.assertEqual([code for code, _, _ in answers], [200, 200, 200])
        turns.advance(1)
        self.assertEqual(len(responses(client.output())), 3)
        self.assertTrue(client.open)

    def test_pipelined_requests_wait_for_a_reading_client(self) -> None:
        """
        While a client reads none of its answers (its transport is full),
        the requests it sent already wait, and its connection reads
        nothing; once it reads, they are answered again, one per turn.
        """
        client = Connection(self.site)
        turns = self.turn_by_turn(client)
        assert client.protocol is not None
        client.protocol.pauseProducing()  # The transport: its buffer is full.
        client.protocol.dataReceived(PIPELINED * 3)
        turns.advance(5)
        self.assertEqual(len(responses(client.output())), 1)
        self.assertEqual(client.transport.producerState, "paused")
        client.protocol.resumeProducing()
        turns.advance(1)
        self.assertEqual(len(responses(client.output())), 2)
        turns.advance(1)
        self.assertEqual(len(responses(client.output())), 3)
        self.assertEqual(client.transport.producerState, "producing")

    def test_client_that_never_reads_is_closed(self) -> None:
        """
        A client whose pipelined requests wait for it to read, and that
        never reads, is closed by the idle timeout, leaving no call of
        its connection behind.
        """
        client = Connection(self.site)
        assert client.protocol is not None
        client.protocol.pauseProducing()
        client.protocol.dataReceived(PIPELINED * 3)
        self.clock.advance(IDLE_TIMEOUT)
        self.assertFalse(client.open)
        client.lose()
        self.assertEqual(len(responses(client.output())), 1)
        self.assertEqual(
            [
                call
                for call in self.clock.getDelayedCalls()
                if getattr(call.func, "__self__", None) is client.protocol
            ],
            [],
        )

    def test_half_closed_client_answered(self) -> None:
        """
        A client that closes its side after its requests (``nc -N``) gets
        every answer, streamed and pipelined ones too, then the connection
        is closed.
        """
        client = Connection(self.site)
        assert client.protocol is not None
        client.request("/healthz")
        client.protocol.readConnectionLost()  # type: ignore[attr-defined]
        [(code, _, _)] = responses(client.output())
        self.assertEqual(code, 200)
        self.assertFalse(client.open)
        client = Connection(self.site)
        assert client.protocol is not None
        client.protocol.dataReceived(
            b"GET /instances HTTP/1.1\r\nHost: agent\r\n\r\n" + PIPELINED
        )
        client.protocol.readConnectionLost()  # type: ignore[attr-defined]
        self.assertTrue(client.open)
        run_until_answered(self.clock, self.turns)
        answers = responses(client.output())
        self.assertEqual([code for code, _, _ in answers], [200, 200])
        self.assertEqual(json.loads(answers[0][2])["instances"][0]["name"], "a")
        self.assertFalse(client.open)

    def test_not_utf8_answered_without_a_log(self) -> None:
        """
        A path or Host header that is not UTF-8 is a 400 with a JSON error,
        and logs nothing (Klein logged a traceback each time: a client
        looping on one would fill the log); the connection goes on.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = Connection(self.site)
        assert client.protocol is not None
        client.protocol.dataReceived(
            b"GET /instances/%ff HTTP/1.1\r\nHost: agent\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: \xff\r\n\r\n"
        )
        client.request("/healthz")
        self.clock.advance(0)
        answers = responses(client.output())
        self.assertEqual(
            [(code, json.loads(body)) for code, _, body in answers[:2]],
            [
                (400, {"error": "the path is not UTF-8"}),
                (400, {"error": "the Host header is not UTF-8"}),
            ],
        )
        self.assertEqual(answers[2][0], 200)
        self.assertEqual(answers[0][1]["content-type"], "application/json")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([formatEvent(e) for e in events], [])

    def test_host_that_is_no_host_name(self) -> None:
        """
        A Host header that is no host name to IDNA (found by the fuzzer:
        ``.*``; an empty label; one over 63
        characters), which werkzeug refuses before any route runs, is a
        400 with a JSON error, logging nothing (it was a logged traceback
        and a 500); the connection goes on.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client = Connection(self.site)
        assert client.protocol is not None
        for host in (b".*", b"a..b", b"x" * 64 + b".example:6060"):
            client.protocol.dataReceived(
                b"GET /metrics HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
            )
            self.clock.advance(0)
        client.request("/healthz")
        answers = responses(client.output())
        error = {"error": "the Host header is not a host name"}
        self.assertEqual(
            [(code, json.loads(body)) for code, _, body in answers[:3]],
            [(400, error)] * 3,
        )
        self.assertEqual(answers[3][0], 200)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([formatEvent(e) for e in events], [])

    def test_asterisk_target(self) -> None:
        """
        OPTIONS * is a 405 with a JSON error and ``Allow``, as OPTIONS on
        any path, where Twisted answers an empty 200; another method on *
        is a JSON 400; the connection goes on.
        """
        client = Connection(self.site)
        client.request("*", "OPTIONS")
        client.request("*", "GET")
        client.request("/healthz")
        answers = responses(client.output())
        self.assertEqual(
            [(code, json.loads(body)) for code, _, body in answers[:2]],
            [
                (405, {"error": "method not allowed (allowed: GET, HEAD)"}),
                (400, {"error": "the request target * is only for OPTIONS"}),
            ],
        )
        self.assertEqual(answers[0][1]["allow"], "GET, HEAD")
        self.assertEqual(answers[1][1]["content-type"], "application/json")
        self.assertEqual(answers[2][0], 200)

    def answers_to(self, *requests: bytes) -> list[tuple[int, Any]]:
        """
        The status and JSON body of the answer to each of `requests`, each
        sent on a connection of its own, and that an HTTP/1.1 connection
        goes on (a ``/healthz`` after it is answered).
        """
        found = []
        for request in requests:
            client = Connection(self.site)
            assert client.protocol is not None
            client.protocol.dataReceived(request)
            kept = request.split(b"\r\n", 1)[0].endswith(b"HTTP/1.1")
            if kept:
                client.request("/healthz")
            run_until_answered(self.clock, self.turns)
            head, _, rest = client.output().partition(b"\r\n\r\n")
            if kept:
                [(code, _, body), (then, _, _)] = responses(client.output())
                self.assertEqual(then, 200, request)
            else:
                # HTTP/1.0: the body may have no length, and ends the
                # connection.
                code, body = int(head.split(b" ", 2)[1]), rest
                self.assertFalse(client.open, request)
            self.assertIn(b"Content-Type: application/json", head, request)
            found.append((code, json.loads(body)))
        return found

    def test_host_header_missing_or_repeated(self) -> None:
        """
        A request with two Host headers, or with one that is no host, is a
        400 with a JSON error (RFC 9112 section 3.2), where Twisted
        answered it; a request without one (HTTP/1.1 too: a bare health
        probe's) is answered, and an empty one is a host.
        """
        answers = self.answers_to(
            b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: a/b\r\n\r\n",
        )
        self.assertEqual(
            answers,
            [
                (400, {"error": "2 Host header fields, where there must be one"}),
                (400, {"error": "2 Host header fields, where there must be one"}),
                (400, {"error": "the Host header is not a host name"}),
                (400, {"error": "the Host header is not a host name"}),
            ],
        )
        self.assertEqual(
            self.answers_to(
                b"GET /healthz HTTP/1.0\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost:\r\n\r\n",
            ),
            [(200, {"status": "ok"})] * 3,
        )

    def test_absolute_form_target(self) -> None:
        """
        A target in absolute form (as a client sends it to a proxy) is
        read as the path and query it names, whatever the scheme's case,
        an empty path the root's, its host taken for the Host header's
        (RFC 9112 section 3.2.2; every such route was a 404); one with no
        host, a host that is no host name (a user's ``@`` in it), another
        scheme, or a target that is neither that nor a path, is a 400.
        """
        answers = self.answers_to(
            b"GET http://127.0.0.1:6060/instances/a HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET HTTP://agent/instances?limit=1 HTTP/1.1\r\nHost: agent\r\n\r\n",
            b"GET https://agent/healthz HTTP/1.0\r\n\r\n",
        )
        self.assertEqual([code for code, _ in answers], [200, 200, 200])
        self.assertEqual(answers[0][1]["name"], "a")
        self.assertEqual([i["name"] for i in answers[1][1]["instances"]], ["a"])
        self.assertEqual(
            self.answers_to(
                b"GET http:///healthz HTTP/1.1\r\nHost: agent\r\n\r\n",
                b"GET http://u@agent/healthz HTTP/1.1\r\nHost: agent\r\n\r\n",
                b"GET ftp://agent/healthz HTTP/1.1\r\nHost: agent\r\n\r\n",
                b"GET healthz HTTP/1.1\r\nHost: agent\r\n\r\n",
            ),
            [
                (400, {"error": "the request target's host is not a host name"}),
                (400, {"error": "the request target's host is not a host name"}),
                (400, {"error": NOT_A_TARGET}),
                (400, {"error": NOT_A_TARGET}),
            ],
        )

    def test_bug_in_a_route(self) -> None:
        """
        A route that raises is a JSON 500 (Twisted writes an HTML page),
        its failure logged; the connection goes on.
        """

        def broken() -> None:
            raise ZeroDivisionError("a bug")

        app, monitor, clock, _, _ = status_app(["a"], stats_sources={"x": broken})
        monitor.startService()
        client = Connection(StatusSite(app.resource(), clock))
        client.request("/debug/stats")
        client.request("/healthz")
        [(code, headers, body), (then, _, _)] = responses(client.output())
        self.assertEqual((code, json.loads(body)), (500, {"error": "internal error"}))
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(then, 200)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_long_bodies_logged_once_a_minute(self) -> None:
        """
        Bodies over MAX_BODY_BYTES, however many, are one log line per
        REFUSED_LOG_INTERVAL with the count so far, not one each.
        """
        events: list[LogEvent] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for _second in range(int(REFUSED_LOG_INTERVAL) + 1):
            for _ in range(10):
                client = Connection(self.site)
                client.request("/", "POST", f"Content-Length: {MAX_BODY_BYTES + 1}\r\n")
                [(code, _, _)] = responses(client.output())
                self.assertEqual(code, 413)
            self.clock.advance(1)
        lines = [formatEvent(e) for e in events if "request body" in formatEvent(e)]
        self.assertEqual(
            lines,
            [
                f"an HTTP request body over {MAX_BODY_BYTES} bytes: connection"
                f" closed ({count} so far)"
                for count in (1, 10 * int(REFUSED_LOG_INTERVAL) + 1)
            ],
        )

    def test_long_body_answered_413(self) -> None:
        """
        A declared body over MAX_BODY_BYTES, or a chunked one that grows
        past it, is answered 413 with a JSON error (the connection was
        reset: no answer at all), and no 100 Continue to a client that
        waits for one; the rest is discarded and the connection closed
        as for a head too long; a small one is read and answered.
        """
        error = f"request body over {MAX_BODY_BYTES} bytes"
        for expect in ("", "Expect: 100-continue\r\n"):
            client = Connection(self.site)
            length = f"Content-Length: {MAX_BODY_BYTES + 1}\r\n"
            client.request("/", "POST", length + expect)
            self.refused(client, 413, error)
        client = Connection(self.site)
        client.request("/", "POST", "Transfer-Encoding: chunked\r\n")
        assert client.protocol is not None
        chunk = b"%x\r\n%s\r\n" % (16384, b"x" * 16384)
        for _ in range(MAX_BODY_BYTES // 16384):
            client.protocol.dataReceived(chunk)
            self.assertEqual(client.output(), b"")
        client.protocol.dataReceived(chunk * 2)
        self.refused(client, 413, error)
        self.assertEqual(self.site.long_bodies, 3)
        client = Connection(self.site)
        client.request("/", "POST", "Content-Length: 5\r\n")
        client.protocol.dataReceived(b"hello")
        [(code, _, _)] = responses(client.output())
        self.assertEqual(code, 405)

    def refused(self, client: Connection, code: int, error: str) -> None:
        """
        `client` has one answer, `code` with the JSON `error`; the
        connection stays open while the client may read it, its input
        discarded, and is closed after LINGER.
        """
        [(answered, headers, body)] = responses(client.output())
        self.assertEqual(answered, code)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(json.loads(body), {"error": error})
        written = len(client.output())
        assert client.protocol is not None
        client.protocol.dataReceived(b"x" * 100_000 + b"\r\n\r\n")
        client.request("/healthz")
        self.assertEqual(len(client.output()), written)
        self.clock.advance(LINGER - 0.1)
        self.assertTrue(client.open)
        self.clock.advance(0.1)
        self.assertFalse(client.open)

    def test_overlong_request_line(self) -> None:
        """
        A request line over Twisted's 16 KB limit is answered 414 with a
        JSON error, where Twisted alone closes the connection unanswered.
        """
        client = Connection(self.site)
        assert client.protocol is not None
        client.protocol.dataReceived(b"GET /" + b"a" * 20_000)
        self.refused(client, 414, "request line longer than 16384 bytes")

    def test_overlong_header_line(self) -> None:
        """A header line over 16 KB is answered 431."""
        client = Connection(self.site)
        client.request("/healthz", extra=f"X-Long: {'b' * 17_000}\r\n")
        self.refused(client, 431, "header line longer than 16384 bytes")

    def test_overlong_head(self) -> None:
        """
        A head over Twisted's limits, 16 KB in all or 500 header fields,
        each line short, is answered 431 with a JSON error, where Twisted
        answers a bare 400; the rest of it is discarded.
        """
        client = Connection(self.site)
        client.request("/healthz", extra=f"X-Long: {'b' * 6000}\r\n" * 3)
        self.refused(client, 431, "request head longer than 16384 bytes")
        client = Connection(self.site)
        client.request("/healthz", extra="X: y\r\n" * 501)
        self.refused(client, 431, "more than 500 header fields")

    def test_malformed_requests(self) -> None:
        """
        A request Twisted cannot read (request line, header, length, chunk)
        is answered 400 with a JSON error, where Twisted answers a bare 400;
        a request sent after it in the same packet is not answered.
        """
        for head in (
            b"NONSENSE\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nno colon\r\nHost: agent\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ):
            client = Connection(self.site)
            assert client.protocol is not None
            client.protocol.dataReceived(
                head + b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n"
            )
            self.refused(client, 400, "malformed request")

    def test_overlong_lines_after_an_answer(self) -> None:
        """
        On a kept-alive connection, the line after an answered request is
        a request line again, and the one after it a header line.
        """
        client = Connection(self.site)
        client.request("/healthz")
        [(code, _, _)] = responses(client.output())
        self.assertEqual(code, 200)
        assert client.protocol is not None
        client.protocol.dataReceived(b"GET /" + b"a" * 20_000 + b"\r\n")
        [_, (code, _, _)] = responses(client.output())
        self.assertEqual(code, 414)
        client = Connection(self.site)
        client.request("/healthz")
        client.protocol.dataReceived(b"GET /healthz HTTP/1.1\r\n")
        client.protocol.dataReceived(b"X-Long: " + b"b" * 17_000 + b"\r\n")
        [_, (code, _, _)] = responses(client.output())
        self.assertEqual(code, 431)

    def test_client_gone_before_the_linger_ends(self) -> None:
        """A client that closes first leaves no timer behind."""
        client = Connection(self.site)
        assert client.protocol is not None
        before = set(self.clock.getDelayedCalls())
        client.protocol.dataReceived(b"GET /" + b"a" * 20_000)
        lingering = set(self.clock.getDelayedCalls()) - before
        self.assertTrue(lingering)
        client.lose()
        for call in lingering:
            self.assertFalse(call.active())


class ConnectionLimitTests(SynchronousTestCase):
    """
    At most `limit` connections: one more is closed as it is accepted,
    unless one has waited STALE_AFTER for a request: then it takes the
    place of the one waiting longest.
    """

    def setUp(self) -> None:
        app, monitor, self.clock, _, self.turns = status_app(["a"])
        monitor.startService()
        self.factory = ConnectionLimit(
            StatusSite(app.resource(), self.clock), 3, self.clock
        )
        self.warned: list[dict[str, Any]] = []
        self.patch(httpd.log, "warn", lambda _, **kw: self.warned.append(kw))

    def answered(self, client: Connection) -> int:
        """Turn the slicer until `client` has its one answer: its status."""
        for _ in range(1000):
            found = responses(client.output())
            if found:
                [(code, _, _)] = found
                return code
            self.turns.run()
        raise AssertionError("no answer")

    def test_half_close_passed_on(self) -> None:
        """A client's half-close reaches the channel: it is answered."""
        client = Connection(self.factory)
        assert client.protocol is not None
        client.request("/healthz")
        self.assertTrue(IHalfCloseableProtocol.providedBy(client.protocol))
        IHalfCloseableProtocol(client.protocol).readConnectionLost()
        self.assertEqual(self.answered(client), 200)
        self.assertFalse(client.open)

    def test_send_buffer_bounded(self) -> None:
        """
        A connection's send buffer is set to SEND_BUFFER as it is accepted,
        before anything is written: what the kernel holds of an answer its
        client does not read is bounded.
        """
        sock = _RecordingSocket()
        self.addCleanup(sock.close)
        transport = StringTransportWithDisconnection()
        transport.getHandle = lambda: sock  # type: ignore[attr-defined]
        protocol = self.factory.buildProtocol(transport.getPeer())
        assert protocol is not None
        self.assertEqual(sock.options, [])
        protocol.makeConnection(transport)
        self.assertEqual(
            sock.options, [(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)]
        )
        self.assertEqual(transport.value(), b"")

    def test_send_buffer_bounded_over_tls(self) -> None:
        """
        Over TLS (``--http ssl:...``) too, the send buffer of the socket
        under the TLS layer is set to SEND_BUFFER as the connection is
        accepted: the TLS layer's own handle holds no socket.
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        pem = Path(certs.server_cert_file).read_bytes()
        pem += Path(certs.server_key_file).read_bytes()
        options = PrivateCertificate.loadPEM(pem).options()
        tls = TLSMemoryBIOFactory(options, False, self.factory)
        sock = _RecordingSocket()
        self.addCleanup(sock.close)
        transport = StringTransportWithDisconnection()
        transport.getHandle = lambda: sock  # type: ignore[attr-defined]
        transport.setTcpNoDelay = lambda enabled: None  # type: ignore[attr-defined]
        protocol = tls.buildProtocol(transport.getPeer())
        assert protocol is not None
        protocol.makeConnection(transport)
        self.assertEqual(
            sock.options, [(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)]
        )

    def test_alpn_offer_negotiates_http_1_1(self) -> None:
        """
        Over TLS (``--http ssl:...``), a client offering ALPN (``h2`` and
        ``http/1.1``, as curl, browsers and Go's clients do) completes its
        handshake and is given ``http/1.1``, the only protocol the channel
        speaks: the limit passes the site's protocols on, where Twisted
        failed every such handshake (an internal error alert) for a factory
        that names none.
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        pem = Path(certs.server_cert_file).read_bytes()
        pem += Path(certs.server_key_file).read_bytes()
        server = TLSMemoryBIOFactory(
            PrivateCertificate.loadPEM(pem).options(), False, self.factory
        ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        trust = Certificate.loadPEM(Path(certs.ca_file).read_bytes())
        options = optionsForClientTLS(
            "localhost", trustRoot=trust, acceptableProtocols=[b"h2", b"http/1.1"]
        )
        client = TLSMemoryBIOFactory(
            options, True, Factory.forProtocol(Protocol)
        ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 6060))
        assert server is not None and client is not None
        connect(
            server,
            FakeTransport(server, isServer=True),
            client,
            FakeTransport(client, isServer=False),
        )
        self.assertEqual(client.negotiatedProtocol, b"http/1.1")
        self.assertEqual(server.negotiatedProtocol, b"http/1.1")
        self.assertEqual(self.factory.acceptableProtocols(), [b"http/1.1"])

    def test_alpn_without_http_1_1_refused_as_rfc_7301_says(self) -> None:
        """
        Over TLS, a client offering only protocols the channel does not
        speak (``h2`` alone) is refused in its handshake with the
        ``no_application_protocol`` alert RFC 7301 asks for, where Twisted
        sent ``internal_error`` (curl: ``tlsv1 alert internal error``, as
        if the agent were broken); the connection never reaches the
        channel. A client offering ``http/1.1`` after it, on the same
        context, is still given ``http/1.1``. The options are those the
        ``ssl:`` endpoint hands the reactor, made into TLS as the reactor
        does.
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        pem = Path(certs.server_cert_file).read_bytes()
        pem += Path(certs.server_key_file).read_bytes()
        (directory / "server.pem").write_bytes(pem)
        reactor = MemoryReactorClock()
        HTTPServer(
            f"ssl:0:privateKey={directory / 'server.pem'}", self.factory, reactor
        ).privilegedStartService()
        [(_, factory, options, _, _)] = reactor.sslServers
        tls = TLSMemoryBIOFactory(options, False, factory)
        trust = Certificate.loadPEM(Path(certs.ca_file).read_bytes())
        lost: list[Failure] = []

        class Client(Protocol):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                lost.append(reason)

        for offered in ([b"h2"], [b"spdy/3", b"http/1.1"]):
            server = tls.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
            options = optionsForClientTLS(
                "localhost", trustRoot=trust, acceptableProtocols=offered
            )
            client = TLSMemoryBIOFactory(
                options, True, Factory.forProtocol(Client)
            ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 6060))
            assert server is not None and client is not None
            pump = connect(
                server,
                FakeTransport(server, isServer=True),
                client,
                FakeTransport(client, isServer=False),
            )
            pump.flush()
            if offered == [b"h2"]:
                self.assertEqual(len(lost), 1)
                self.assertIn("no application protocol", str(lost[0].value))
                self.assertEqual(self.factory.stats()["connections"], 0)
            else:
                self.assertEqual(client.negotiatedProtocol, b"http/1.1")

    def test_cap(self) -> None:
        """
        The fourth connection is refused while each is being answered (no
        protocol: the port closes it), counted, and logged once a minute at
        most; once one closes, a new one is accepted again.
        """
        clients = [Connection(self.factory, 40000 + i) for i in range(3)]
        self.assertFalse(any(c.refused for c in clients))
        for client in clients:
            client.request("/instances")
        self.assertTrue(Connection(self.factory, 40003).refused)
        self.clock.advance(STALE_AFTER / 2)
        self.assertTrue(Connection(self.factory, 40004).refused)
        self.assertEqual(
            self.factory.stats(),
            {
                "connections": 3,
                "max_connections": 3,
                "refused_connections": 2,
                "evicted_connections": 0,
            },
        )
        self.assertEqual(len(self.warned), 1)
        # Named as an operator writes it, not as Twisted's repr.
        self.assertEqual(self.warned[0]["peer"], "127.0.0.1:40003")
        clients[0].lose()
        again = Connection(self.factory, 40006)
        self.assertFalse(again.refused)
        again.request("/healthz")
        self.assertEqual(self.answered(again), 200)

    def test_stale_connection_makes_room(self) -> None:
        """
        Over the cap, the connection that has waited longest for a request,
        once it has waited STALE_AFTER, is closed and the new one takes its
        place; a connection answered waits from its answer on, last in line.
        """
        a, b, c = (Connection(self.factory, 40000 + i) for i in range(3))
        self.clock.advance(STALE_AFTER / 2)
        a.request("/healthz")
        self.assertEqual(self.answered(a), 200)
        self.clock.advance(STALE_AFTER / 2)
        d = Connection(self.factory, 40003)
        self.assertFalse(d.refused)
        self.assertEqual([x.open for x in (a, b, c)], [True, False, True])
        d.request("/healthz")
        self.assertEqual(self.answered(d), 200)
        e = Connection(self.factory, 40004)
        self.assertFalse(e.refused)
        self.assertEqual([x.open for x in (a, b, c)], [True, False, False])
        e.request("/healthz")
        self.assertEqual(self.answered(e), 200)
        # a has waited half of STALE_AFTER, d and e none: a, waiting
        # longest, makes room though it has not waited STALE_AFTER.
        self.assertFalse(Connection(self.factory, 40005).refused)
        self.assertFalse(a.open)
        self.assertTrue(d.open)
        self.assertEqual(
            (self.factory.stats()["evicted_connections"], len(self.warned)), (3, 1)
        )
        self.assertEqual(self.warned[0]["victim"], "127.0.0.1:40001")

    def test_reconnecting_client_keeps_no_probe_out(self) -> None:
        """
        One client holding every place with connections that send a
        request's head a byte at a time, and opening a new one whenever one
        is closed, keeps no probe out: over the cap, a connection that has
        sent no whole request yet gives its place at once, the one open
        longest first, so that each probe is answered and the attacker's
        own connections take each other's places. A connection answered
        before (a client kept alive) keeps its place while there are such
        connections; with every place kept alive, the one waiting longest
        for its next request gives way.
        """
        kept = Connection(self.factory, 40000)
        kept.request("/healthz")
        self.assertEqual(self.answered(kept), 200)
        kept.transport.clear()
        slow = [Connection(self.factory, 40001 + i) for i in range(2)]
        answered = 0
        for turn in range(40):
            self.clock.advance(0.5)
            if turn % 10 == 9:
                # A scraper kept alive, every 5 s: its place is kept.
                kept.request("/healthz")
                self.assertEqual(self.answered(kept), 200)
                kept.transport.clear()
            for client in slow:
                if client.open:
                    assert client.protocol is not None
                    client.protocol.dataReceived(b"G")
            again = Connection(self.factory, 41000 + turn)
            slow = [c for c in [*slow, again] if c.open and not c.refused]
            probe = Connection(self.factory, 42000 + turn)
            if not probe.refused:
                probe.request("/healthz")
                answered += self.answered(probe) == 200
                probe.lose()
        self.assertEqual(answered, 40)
        self.assertTrue(kept.open)
        for client in slow:
            client.lose()
        full_house = [Connection(self.factory, 43000 + i) for i in range(2)]
        for client in full_house:
            client.request("/healthz")
            self.assertEqual(self.answered(client), 200)
        self.assertFalse(Connection(self.factory, 43002).refused)
        self.assertEqual([c.open for c in (kept, *full_house)], [False, True, True])

    def test_kept_alive_client_keeps_no_probe_out(self) -> None:
        """
        One client holding every place with connections that each send one
        whole request, then wait kept alive, opening a new one whenever one
        is closed and renewing each before it has waited STALE_AFTER, keeps
        no probe out: with nothing else to close, a connection kept alive
        gives its place at once, the one waiting longest first, so that
        each probe is answered and the attacker's new connections take its
        own places.
        """
        # Every line logged, not one a minute.
        self.patch(httpd.LogThrottle, "due", lambda _: True)
        held: list[tuple[Connection, float]] = []
        port = iter(range(41000, 42000))

        def hold() -> None:
            # The attacker's new connection: one request in its first write.
            client = Connection(self.factory, next(port))
            if not client.refused:
                client.request("/healthz")
                self.assertEqual(self.answered(client), 200)
                held.append((client, self.clock.seconds()))

        for _ in range(3):
            hold()
        answered = 0
        for turn in range(40):
            self.clock.advance(0.5)
            for client, since in list(held):
                if self.clock.seconds() - since >= STALE_AFTER - 1:
                    held.remove((client, since))
                    client.lose()
                    hold()
            probe = Connection(self.factory, 42000 + turn)
            if not probe.refused:
                probe.request("/healthz")
            # The attacker sees what was closed, and opens as many anew.
            closed = [(c, t) for c, t in held if not c.open]
            held = [(c, t) for c, t in held if c.open]
            for _ in closed:
                hold()
            if not probe.refused:
                answered += self.answered(probe) == 200
                probe.lose()
        self.assertEqual(answered, 40)
        evicted = [w for w in self.warned if "victim" in w]
        self.assertTrue(evicted[0]["victim"].startswith("127.0.0.1:41"))
        self.assertIn("kept alive after its answer", evicted[0]["why"])

    def test_refused_while_every_connection_is_answered(self) -> None:
        """
        With every connection in the middle of an answer (a sliced one), a
        new one is refused; once an answer ends, its connection is the one
        that makes room.
        """
        clients = [Connection(self.factory, 40000 + i) for i in range(3)]
        for client in clients:
            client.request("/instances")
        self.clock.advance(STALE_AFTER)
        self.assertTrue(Connection(self.factory, 40003).refused)
        self.assertEqual(self.factory.stats()["refused_connections"], 1)
        self.assertTrue(all(c.open for c in clients))
        self.assertEqual(self.answered(clients[1]), 200)
        for client in (clients[0], clients[2]):
            self.assertEqual(self.answered(client), 200)
        # All three answered, in the order asked: the first to finish
        # waits longest for its next request, and makes room.
        later = Connection(self.factory, 40004)
        self.assertFalse(later.refused)
        self.assertEqual([c.open for c in clients], [False, True, True])

    def test_slow_reader_makes_room(self) -> None:
        """
        Over the cap, with no connection waiting for a request, the one
        whose client has left its answer unread longest, counted over the
        whole answer, once UNREAD_AFTER or more and while it still leaves
        it unread, is closed and the new one takes its place: clients
        reading a big answer a little at a time keep a probe out for
        UNREAD_AFTER at most. A client whose answer is written as fast as
        it is rendered keeps its place.
        """
        # Every line logged, not one a minute.
        self.patch(httpd.LogThrottle, "due", lambda _: True)
        a, b, c = (Connection(self.factory, 40000 + i) for i in range(3))
        for client in (a, b, c):
            client.request("/instances")
        full(a)
        self.clock.advance(UNREAD_AFTER / 4)
        full(b)
        self.clock.advance(UNREAD_AFTER / 2)
        # a reads a little: its answer goes on, then waits again.
        read(a)
        full(a)
        self.clock.advance(UNREAD_AFTER / 4 - 0.01)
        self.assertTrue(Connection(self.factory, 40003).refused)
        self.clock.advance(0.01)
        # a has waited UNREAD_AFTER in all, though never as long at a
        # stretch; b a quarter of it less. Each probe let in is answered.
        probe = Connection(self.factory, 40004)
        self.assertFalse(probe.refused)
        self.assertEqual([x.open for x in (a, b, c)], [False, True, True])
        probe.request("/healthz")
        self.assertEqual(self.answered(probe), 200)
        # The probe asks again: it is being answered, not kept waiting.
        probe.request("/instances")
        self.assertTrue(Connection(self.factory, 40005).refused)
        self.clock.advance(UNREAD_AFTER / 4)
        probe = Connection(self.factory, 40006)
        self.assertFalse(probe.refused)
        self.assertEqual([x.open for x in (a, b, c)], [False, False, True])
        probe.request("/healthz")
        self.assertEqual(self.answered(probe), 200)
        probe.request("/instances")
        self.assertTrue(Connection(self.factory, 40007).refused)
        self.assertEqual(self.factory.stats()["evicted_connections"], 2)
        evicted = [w for w in self.warned if "victim" in w]
        self.assertEqual(len(evicted), 2)
        self.assertEqual(evicted[0]["victim"], "127.0.0.1:40000")
        self.assertIn("answer unread longest, 2 s in all", evicted[0]["why"])

    def test_reading_client_keeps_its_place(self) -> None:
        """
        A client that has read since its answer waited UNREAD_AFTER keeps
        its place while it reads; what it left unread during one answer
        does not count against the next: a connection kept alive after its
        answer makes room first.
        """
        a, b, c = (Connection(self.factory, 40000 + i) for i in range(3))
        for client in (a, b, c):
            client.request("/instances")
        full(a)
        self.clock.advance(UNREAD_AFTER)
        read(a)
        self.assertTrue(Connection(self.factory, 40003).refused)
        self.assertEqual(self.answered(a), 200)
        a.request("/instances")
        full(a)
        self.clock.advance(UNREAD_AFTER * 3 / 4)
        # b and c, answered, wait for a request: the first makes room, not
        # a, whose answer has waited less than UNREAD_AFTER.
        self.assertFalse(Connection(self.factory, 40004).refused)
        self.assertEqual([x.open for x in (a, b, c)], [True, False, True])
        self.assertEqual(self.factory.stats()["evicted_connections"], 1)

    def test_closing_connections_are_bounded(self) -> None:
        """
        Connections closed to make room hold their descriptors until the
        next turn: beyond MAX_CLOSING of them, a new one is refused.
        """
        self.patch(httpd, "MAX_CLOSING", 2)
        clients = [Connection(self.factory, 40000 + i) for i in range(3)]
        for client in clients:
            # As a TCP transport does: lost at a later turn, not at once.
            client.transport.abortConnection = lambda: None  # type: ignore[method-assign]
        self.clock.advance(STALE_AFTER)
        Connection(self.factory, 40003)
        Connection(self.factory, 40004)
        self.assertTrue(Connection(self.factory, 40005).refused)
        clients[0].lose()
        self.assertFalse(Connection(self.factory, 40006).refused)
        self.assertEqual(self.factory.stats()["evicted_connections"], 3)

    def test_idle_connections_free_their_place(self) -> None:
        """Connections held idle are closed after IDLE_TIMEOUT, making room."""
        for i in range(3):
            Connection(self.factory, 40000 + i)
        self.clock.advance(IDLE_TIMEOUT)
        self.assertEqual(self.factory.stats()["connections"], 0)
        self.assertFalse(Connection(self.factory, 40011).refused)


def full(client: Connection) -> None:
    """`client` reads nothing: its transport is full (as TCP's says)."""
    client.transport.producer.pauseProducing()


def read(client: Connection) -> None:
    """`client` has read: its transport has room again (as TCP's says)."""
    client.transport.producer.resumeProducing()


class _RecordingSocket(socket.socket):
    """A socket that records the options set on it (and sets them)."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
        self.options.append((level, option, value))
        super().setsockopt(level, option, value, *rest)


class _RefusingReactor(MemoryReactorClock):
    """A reactor whose ports are all taken."""

    def listenTCP(self, port: int, *args: Any, **kw: Any) -> Any:
        raise CannotListenError(kw.get("interface", ""), port, OSError(98, "in use"))


class _MissingDirectoryReactor(MemoryReactorClock):
    """A reactor whose UNIX sockets' directory is missing."""

    def listenUNIX(self, address: str, *args: Any, **kw: Any) -> Any:
        # What twisted.internet.unix.Port raises: its lock file's symlink.
        raise FileNotFoundError(
            2, "No such file or directory", "1402", None, address + ".lock"
        )


class _UNIXReactor(MemoryReactorClock):
    """A reactor whose UNIX sockets are Twisted's own ports, locks and all."""

    def listenUNIX(
        self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666,
        wantPID: int = 0,
    ) -> Any:  # fmt: skip
        port = unix.Port(address, factory, backlog, mode, self, wantPID)
        port.startListening()
        return port


class _Group:
    """What `http_service` and a scrape ask of a group, its verdicts given."""

    def __init__(self, monitor: Any, verdicts: dict[str, str]) -> None:
        self.monitor = monitor
        self.verdict_status = verdicts.get
        self.known = tuple(monitor.states)
        self.membership = SimpleNamespace(
            view={"me": None}, missed=0, behind_seconds=lambda: None
        )
        self.publishing = SimpleNamespace(primaries=len(verdicts))
        self.holdoff = SimpleNamespace(remaining=lambda: None, ends=lambda: 0, waits=0)
        self.unshared = SimpleNamespace(names=frozenset())

    def unhealthy_reason(self) -> None:
        return None


class PeerTextTests(SynchronousTestCase):
    """How the connection cap's log lines name a client."""

    def test_forms(self) -> None:
        """
        A TCP client is HOST:PORT (IPv6 in brackets), a UNIX socket's client
        its path or ``unix``, anything else as it prints (before: Twisted's
        ``IPv4Address(type='TCP', host='127.0.0.1', port=37262)``).
        """
        self.assertEqual(
            httpd.peer_text(IPv4Address("TCP", "127.0.0.1", 37262)), "127.0.0.1:37262"
        )
        self.assertEqual(httpd.peer_text(IPv6Address("TCP", "::1", 6060)), "[::1]:6060")
        self.assertEqual(httpd.peer_text(UNIXAddress(None)), "unix")
        self.assertEqual(httpd.peer_text(UNIXAddress(b"/run/s.sock")), "/run/s.sock")
        self.assertEqual(httpd.peer_text(None), "None")


class ServiceTests(SynchronousTestCase):
    """The listener and the HTTP part of the agent."""

    def test_verdicts_from_the_group(self) -> None:
        """
        In a group, /metrics' ``sentinel_instance_verdict_up`` is what the
        group says this agent publishes (its verdicts), whatever its own
        view: a down verdict where it is primary, nothing elsewhere.
        """
        reactor = MemoryReactorClock()
        monitor, _, _, _ = make_monitor(["a", "b"])
        monitor.startService()
        self.addCleanup(monitor.stopService)
        server = http_service(
            "tcp:6060:interface=127.0.0.1",
            reactor,
            monitor,
            agent_id="me",
            reload=LoadedAtStart(0.0),
            zookeeper=None,
            gc_objects=lambda: 0,
            group=_Group(monitor, {"a": "down"}),  # type: ignore[arg-type]
        )
        client = Connection(server.factory)
        client.request("/metrics")
        for _ in range(100):
            reactor.advance(0)
        [(_, _, body)] = responses(client.output())
        samples = [
            line
            for line in body.decode().splitlines()
            if line.startswith(("sentinel_instance_up{", "sentinel_instance_verdict"))
        ]
        self.assertEqual(
            samples,
            [
                'sentinel_instance_up{name="a",addr="127.0.0.1:7000"} 1.0',
                'sentinel_instance_up{name="b",addr="127.0.0.1:7001"} 1.0',
                'sentinel_instance_verdict_up{name="a",addr="127.0.0.1:7000"} 0.0',
            ],
        )

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

    def test_cannot_listen_names_the_field_as_given(self) -> None:
        """
        The line names the field as the user gave it (``--http`` on the
        command line), and of an error of the socket layer its reason
        alone: a UNIX socket's names its lock file and the PID it links to.
        """
        app, _, clock, _, _ = status_app(["a"])
        factory = ConnectionLimit(StatusSite(app.resource(), clock), 3, clock)
        server = HTTPServer(
            "unix:/gone/s", factory, _MissingDirectoryReactor(), "--http"
        )
        with self.assertRaises(SystemExit) as caught:
            server.privilegedStartService()
        self.assertEqual(
            caught.exception.code,
            "sentinel: --http: cannot listen on unix:/gone/s: "
            "No such file or directory",
        )

    def test_failed_unix_listen_leaves_no_lock(self) -> None:
        """
        A ``unix:`` listen that fails after Twisted took the socket's lock
        link (a file already at the socket's path: its bind refused) ends
        start-up as before, and takes the link away: a link naming this
        PID refused every later start while a process held that PID (an
        agent run as PID 1 in a container, restarted). A link naming
        another PID is left alone.
        """
        app, _, clock, _, _ = status_app(["a"])
        factory = ConnectionLimit(StatusSite(app.resource(), clock), 3, clock)
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, "s")
        with open(path, "w"):
            pass  # Not a socket: Twisted leaves it, and bind() fails.
        server = HTTPServer(f"unix:{path}", factory, _UNIXReactor(), "--http")
        with self.assertRaises(SystemExit) as caught:
            server.privilegedStartService()
        self.assertIn("Address already in use", str(caught.exception.code))
        self.assertFalse(os.path.lexists(path + ".lock"))
        # Another process's link (PID 1 lives): neither taken nor removed.
        os.symlink("1", path + ".lock")
        server = HTTPServer(f"unix:{path}", factory, _UNIXReactor(), "--http")
        with self.assertRaises(SystemExit) as caught:
            server.privilegedStartService()
        self.assertIn("Cannot acquire lock", str(caught.exception.code))
        self.assertEqual(os.readlink(path + ".lock"), "1")

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
                "evicted_connections": 0,
                "answers_in_progress": 0,
                "slices": 0,
                "slowest_slice_seconds": 0.0,
                "stalled_clients_dropped": 0,
                "slow_clients_dropped": 0,
            },
        )
