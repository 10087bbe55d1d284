"""
The HTTP server around the app: what an HTTP client may cost the agent.

- An idle connection is closed after `IDLE_TIMEOUT`, set here rather than
  left to Twisted's default (12 hours in older releases); an answer whose
  client reads too slowly over its life is dropped once that is clear
  (`sentinel.streaming`: as long in all, plus a second for each 4 KB it
  took), since Twisted suspends the idle timeout while an answer is
  written.
- At most `MAX_CONNECTIONS` at once. Every connection is an open file, like
  every Redis connection: the agent counts them in its open-file reserve
  (`sentinel.agent.FD_RESERVE`). 64: a Prometheus or two (one kept-alive
  connection each), a few people with the page open (a browser opens up to
  6), scripts and health probes, with room to spare; 64 descriptors and,
  with every client reading nothing, about 0.4 MB of buffers each
  (`SEND_BUFFER` in the kernel, Twisted's 64 KB, a slice of an answer).
  Over the cap, a new connection is closed as soon as it is accepted, so
  that HTTP clients, however many, are refused before a check is; but one
  that has waited `STALE_AFTER` seconds or more for a request (kept alive
  after its last answer, or still sending its request's head) gives its
  place to the new one, the longest waiting first, as nginx reuses its
  idle keep-alive connections: clients that hold connections open and ask
  nothing, however many, keep a health probe or a scrape out for
  `STALE_AFTER` at most. Failing those, a connection that has sent no
  whole request yet (still sending its first head or body, or nothing at
  all) gives its place at once, the one open longest first: one client
  holding every place so and opening a new connection whenever one is
  closed, as fast as it likes, took every place freed before a probe
  could (2 of 40 probes answered in `tests.test_httpd`; 36 of 39
  ``/healthz`` refused over 20 s by 200 connections sending a byte a
  second), where now its connections take each other's places, and a
  probe's, the newest, is read before they come to it. A client's first
  request takes one write; a browser's spare connections, opened ahead
  and unused, go first, as they would at the idle timeout.
  Failing those, a connection whose client has left its answer waiting
  (its transport full, the answer's writing paused), now and for
  `UNREAD_AFTER` or more in all, gives its place, the one left waiting
  longest first: clients that read a big answer a little at a time,
  however many, keep a probe out for `UNREAD_AFTER` at most once their
  buffers are full (`SEND_BUFFER`: about a second of rendering for 64).
  Failing all those, a connection kept alive after its answer gives its
  place however short a time it has waited, the one waiting longest
  first, as nginx closes its idle keep-alive connections, oldest first,
  when it runs out of connections: one client whose connections each send
  one whole request and then wait, opening a new one whenever one is
  closed and before any has waited `STALE_AFTER`, took every place
  freed before a probe could (0 of 40 probes answered in
  `tests.test_httpd`), and nothing tells such a connection from a
  scraper's between two scrapes. A client whose kept-alive connection
  was closed connects again for its next request, as it would after the
  idle timeout; `STALE_AFTER` only says which go before a connection
  still sending its first request.
  In all, not at a stretch: Twisted resumes an answer each time its
  transport's buffer (64 KB) has gone out, so a client reading 64 KB every
  few seconds would never leave it waiting long at a stretch, and would
  hold its place for many minutes over `/instances` at 10,000 instances
  (4.7 MB); a client that reads as fast as the answer is rendered is
  hardly ever left waiting.
- No route reads a request body: one is never spooled to disk, and one
  longer than `MAX_BODY_BYTES` (declared so, or grown so) is answered
  413 with a JSON error, then the connection lingers as below and is
  closed.
- A request line or header line longer than Twisted's line limit (16 KB)
  is answered, 414 or 431 with a JSON error, where Twisted would close the
  connection without a word (`BoundedChannel`); so is a request head over
  Twisted's limits (16 KB in all, 500 header fields: 431) or one it cannot
  read (400), where Twisted answers a bare 400 and closes at once. The
  rest of the request is read and discarded for at most `LINGER` seconds,
  so that the client can read the answer before the connection closes.
- Requests pipelined on one connection are read one per reactor turn,
  and none while the client leaves its answers unread (`BoundedChannel`):
  Twisted answers every request of a read at once, whatever the
  transport holds already.
- Every other error is JSON too (`BoundedRequest`): a request target
  ``*``, a URL or Host header that is not UTF-8, a Host header missing
  (HTTP/1.1), repeated or no host name, a target neither a path nor an
  absolute URL (one that is is read as its path: `sentinel.targets`), a
  bug of ours in a route.
- No access log: scrapes would drown the agent's log.

`http_service` is the one call the composition root makes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from io import BytesIO
from socket import SO_SNDBUF, SOL_SOCKET, socket
from typing import Any, NoReturn

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocolNegotiationFactory,
    IReactorTime,
    ITransport,
)
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site
from werkzeug.exceptions import BadHost
from zope.interface import implementer

from sentinel.alpn import TLSListening
from sentinel.group import Group, GroupMetrics
from sentinel.history import CheckHistory
from sentinel.metrics import AgentMetrics, LogOutputMetrics, ReloadOutcome
from sentinel.monitor import Monitor
from sentinel.output import LogOutput
from sentinel.publisher import ZooKeeperPublisher
from sentinel.streaming import Slicer
from sentinel.targets import host_problem, origin_form
from sentinel.unixlocks import release_lock
from sentinel.web import HealthCheck, StatsSource, StatusApp, error_body, json_error

log = Logger()

# The one protocol the channel speaks, as TLS names it (ALPN).
HTTP_1_1 = b"http/1.1"
IDLE_TIMEOUT = 60.0
MAX_CONNECTIONS = 64
MAX_BODY_BYTES = 64 * 1024
# Seconds between two log lines about refused connections.
REFUSED_LOG_INTERVAL = 60.0
# Seconds a connection may wait for a request before a new connection over
# the cap takes its place ahead of one still sending its first request:
# longer than a burst of connections takes to open, far shorter than the
# idle timeout. One kept alive for less still gives way when nothing else
# does.
STALE_AFTER = 10.0
# Seconds in all a client may leave its answer waiting before a new
# connection over the cap takes its place: short, since a client that
# reads as fast as the agent renders (a few MB a second) is hardly ever
# left waiting, and only a full house of connections makes anyone give
# way; at `STALE_AFTER`, 64 slow readers kept every probe out for 10 s.
UNREAD_AFTER = 2.0
# Connections closed to make room whose descriptors are not released yet
# (they are at the next turn of the reactor): beyond this many, a new
# connection is refused rather than given a place, so that a burst of
# them never holds more than this many descriptors over the cap.
MAX_CLOSING = 16
# Seconds a connection answered for an overlong line stays open, its input
# discarded, before it is closed: closed at once, the rest of the request
# unread would make the close a reset, which can take the answer with it.
LINGER = 2.0
TOO_LARGE = b"431 Request Header Fields Too Large"
TOO_LONG = b"413 Content Too Large"
# Bytes of an answer the kernel holds for a connection, set rather than
# left to Linux, which grows a connection's buffer up to tcp_wmem's most
# (4 MB by default) while its client reads nothing: 64 clients asking
# /instances at 10,000 instances and reading 2 KB/s held 2.8 MB each, 180
# MB of kernel memory, and the agent rendered those 180 MB before any of
# their answers was paused, so that none could give its place for 15-70 s.
# 128 KB (Linux doubles it for its bookkeeping) still sends 1.3 MB/s to a
# client 100 ms away, 13 MB/s at 10 ms.
SEND_BUFFER = 128 * 1024
# Transports looked through for a connection's socket: TLS over TCP is two.
TRANSPORT_LAYERS = 3
# The methods every route of the app takes (`sentinel.web.StatusApp`).
ALLOWED_METHODS = "GET, HEAD"


class BoundedRequest(Request):
    """
    A request whose body is kept in memory, and only up to `MAX_BODY_BYTES`;
    whose target may be in absolute form, and whose Host header is checked
    (`sentinel.targets`).
    """

    body_length = 0
    # Why the request's target or Host header is refused (a 400), if it is.
    refusal: str | None = None

    def gotLength(self, length: int | None) -> None:
        # Twisted spools a body of unknown or large length to a temporary
        # file: an open file and disk space per request.
        self.content = BytesIO()
        if length is not None and length > MAX_BODY_BYTES:
            self._too_long()

    def handleContentChunk(self, data: bytes) -> None:
        self.body_length += len(data)
        if self.body_length > MAX_BODY_BYTES:
            self._too_long()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        hosts = self.requestHeaders.getRawHeaders(b"host")
        self.refusal = host_problem(hosts)
        target = origin_form(path)
        if isinstance(target, str):
            self.refusal = self.refusal or target
        else:
            path, host = target
            if host is not None:
                # The target's host, not the header's, is the one asked
                # for: what the routes see.
                self.requestHeaders.setRawHeaders(b"host", [host])
        super().requestReceived(command, path, version)

    def process(self) -> None:
        # The whole request is in: its connection is being answered, and
        # is given no other client's place until the answer ends.
        limit = getattr(self.channel.transport, "factory", None)
        if isinstance(limit, ConnectionLimit):
            limit.answering(self)
        super().process()

    def render(self, resrc: Any) -> None:
        # Klein logs a traceback for every URL or Host header that is not
        # UTF-8 (its routes are text), or Host header that is no host
        # name: a client looping on one would fill the log, which no other
        # request writes to. Answered here instead.
        where = _not_utf8(b"/".join(self.postpath or ()), "path") or _not_utf8(
            self.getRequestHostname(), "Host header"
        )
        if where is not None:
            self._answer_error(400, f"the {where} is not UTF-8")
            return
        if self.refusal is not None:
            self._answer_error(400, self.refusal)
            return
        try:
            super().render(resrc)
        except BadHost:
            # A Host header that is no host name to IDNA (an empty label,
            # as in ``.x``, or one over 63 characters), which werkzeug
            # refuses as Klein binds its routes, before any route runs and
            # out of reach of the app's error handlers: a logged traceback
            # and a 500 for every such request.
            self._answer_error(400, "the Host header is not a host name")

    def _handleStar(self) -> None:
        # Twisted answers OPTIONS * with an empty 200 and any other method
        # with an empty 405, where the app takes no OPTIONS and answers
        # in JSON.
        if self.refusal is not None:
            self._answer_error(400, self.refusal)
        elif self.method == b"OPTIONS":
            self.setHeader(b"allow", ALLOWED_METHODS.encode("ascii"))
            self._answer_error(405, f"method not allowed (allowed: {ALLOWED_METHODS})")
        else:
            self._answer_error(400, "the request target * is only for OPTIONS")

    def processingFailed(self, reason: Failure) -> None:
        # A bug of ours in a route (Klein hands it here before anything is
        # written): logged as Twisted logs it, answered in JSON rather than
        # Twisted's HTML.
        log.failure(
            "answering {method} {uri}", reason, method=self.method, uri=self.uri
        )
        self._answer_error(500, "internal error")

    def _answer_error(self, code: int, message: str) -> None:
        """Answer `code` with a JSON error saying `message`."""
        body = json_error(self, code, message)
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def _too_long(self) -> None:
        channel = self.channel
        if isinstance(channel, BoundedChannel):
            if channel.refused:
                return  # The rest of the body, in the same read.
            # Answered, where the connection was reset: a client saw no
            # status, and one that waited with ``Expect: 100-continue``
            # had sent nothing yet that a reset could lose it for.
            channel.refuse(TOO_LONG, f"request body over {MAX_BODY_BYTES} bytes")
        else:
            transport: Any = channel.transport
            transport.abortConnection()
        site = getattr(channel, "site", None)
        if isinstance(site, StatusSite):
            site.body_too_long()


class LogThrottle:
    """
    Whether a line about what clients do may be logged now: at most one a
    `REFUSED_LOG_INTERVAL`, whatever a client does (a line each would let
    a client in a loop fill the log).
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._logged_at: float | None = None

    def due(self) -> bool:
        """Whether to log now (and if so, the interval starts again)."""
        now = self._clock.seconds()
        if self._logged_at is not None and now - self._logged_at < REFUSED_LOG_INTERVAL:
            return False
        self._logged_at = now
        return True


def _not_utf8(data: bytes, where: str) -> str | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return where
    return None


@implementer(IHalfCloseableProtocol)
class BoundedChannel(HTTPChannel):
    """
    Twisted's HTTP/1.1 channel, with an answer for a line over its limit
    (``MAX_LENGTH``, 16 KB): 414 for the request line, 431 for a header
    line; and for a request Twisted refuses (a bare 400): 431 for a head
    over its limits, else 400; 413 for a body over `MAX_BODY_BYTES`
    (`BoundedRequest`). Each is a JSON error, then `LINGER` seconds
    at most for the client to read it (module docstring). A client that
    closes its side after its requests (``nc -N``) is answered, then the
    connection is closed.
    """

    # Whether the next line read is a request line (as Twisted's private
    # ``__first_line`` says): at the start, and after each request's end.
    _at_request_line = True
    # Whether a request was refused (`refuse`): answered, what follows it
    # discarded until the connection closes.
    refused = False
    _linger: IDelayedCall | None = None
    # Reads the next pipelined request on a later turn (`requestDone`).
    _next_request: IDelayedCall | None = None
    # Whether the client has closed its side: it sends nothing more.
    _client_done = False

    def pauseProducing(self) -> None:
        # The transport is full: the client is not reading.
        super().pauseProducing()
        limit = self._limit()
        if limit is not None:
            limit.held(self.transport)

    def _limit(self) -> ConnectionLimit | None:
        # The channel's transport is its ProtocolWrapper (WrappingFactory).
        limit = getattr(self.transport, "factory", None)
        return limit if isinstance(limit, ConnectionLimit) else None

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return  # The rest of a refused request's head, in the same read.
        super().lineReceived(line)
        if line:
            # A request line, or a header line (a blank line ends the head).
            self._at_request_line = False

    def allContentReceived(self) -> None:
        self._at_request_line = True
        super().allContentReceived()

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._at_request_line:
            status, what = b"414 URI Too Long", "request line"
        else:
            status, what = TOO_LARGE, "header line"
        self.refuse(status, f"{what} longer than {self.MAX_LENGTH} bytes")

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's one answer to every request it refuses (a bare 400,
        # the connection closed at once); which limit it met, from the
        # counts it documents (HTTPChannel's ivars).
        if self._receivedHeaderSize > self.totalHeadersSize:
            error = f"request head longer than {self.totalHeadersSize} bytes"
            self.refuse(TOO_LARGE, error)
        elif self._receivedHeaderCount > self.maxHeaders:
            self.refuse(TOO_LARGE, f"more than {self.maxHeaders} header fields")
        else:
            self.refuse(b"400 Bad Request", "malformed request")

    def refuse(self, status: bytes, error: str) -> None:
        """Answer `status` with a JSON `error`, then linger and close."""
        if self.refused:
            return
        self.refused = True
        body = error_body(error)
        transport: Any = self.transport
        transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, len(body), body)
        )
        self.setTimeout(None)
        self._linger = self.callLater(LINGER, transport.loseConnection)

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # The rest of a refused request: discarded.
        super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # The rest of a refused body, in the same read.
        super().rawDataReceived(data)

    def _send100Continue(self) -> None:
        # Twisted sends it once the head is read, even when the body it
        # invites was refused already (its length declared too long).
        if not self.refused:
            super()._send100Continue()

    def requestDone(self, request: Request) -> None:
        # Twisted reads the next pipelined request as soon as one is
        # answered, in the same turn, and writes each answer whatever the
        # transport holds already: one read of 64 KB (1,800 requests) held
        # the reactor for 5-12 s, and connections whose clients read none
        # of their answers wedged the agent for good. So a request already
        # sent waits for the next turn, and for the client to read once
        # its answers fill the transport (`resumeProducing`); the
        # connection reads nothing meanwhile, and the idle timeout ends a
        # client that never reads.
        waiting = bool(self._buffer or self._dataBuffer or self._waitingForTransport)
        held = bool(self.persistent) and waiting
        if held:
            self.paused = True  # The line parser stops: the rest stays buffered.
        super().requestDone(request)
        if held:
            self._networkProducer.pauseProducing()
            self._read_next_later()
        else:
            self._close_if_done()

    def resumeProducing(self) -> None:
        limit = self._limit()
        if limit is not None:
            limit.released(self.transport)
        super().resumeProducing()
        if self.paused:
            self._read_next_later()

    def _read_next_later(self) -> None:
        if self._next_request is None and not self._waitingForTransport:
            self._next_request = self.callLater(0, self._read_next)

    def _read_next(self) -> None:
        self._next_request = None
        if self._waitingForTransport:
            return  # Until the client reads: `resumeProducing` calls again.
        self.paused = False
        self._networkProducer.resumeProducing()
        # What is buffered, without resetting the idle timeout as data
        # from the client does.
        LineReceiver.dataReceived(self, b"")
        self._close_if_done()

    def readConnectionLost(self) -> None:
        # Twisted would drop the connection at once, and with it the
        # answers not yet written (even one to a request already answered,
        # still in the transport's buffer).
        self._client_done = True
        self._close_if_done()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _close_if_done(self) -> None:
        """Once a client that closed its side has every answer: close."""
        if self._client_done and not self.requests and not self.paused:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        if self._next_request is not None:
            self._next_request.cancel()
            self._next_request = None
        super().connectionLost(reason)


class StatusSite(Site):
    """The app's site: idle connections time out, no access log."""

    noisy = False
    requestFactory = BoundedRequest
    # The channel itself, where Twisted's default is a proxy that can turn
    # into an HTTP/2 connection when TLS negotiates it and the h2 package
    # is installed: neither is ever the case here.
    protocol = BoundedChannel  # type: ignore[assignment]

    def __init__(self, resource: Any, reactor: IReactorTime) -> None:
        super().__init__(resource, timeout=IDLE_TIMEOUT, reactor=reactor)
        self.long_bodies = 0
        self._throttle = LogThrottle(reactor)

    def acceptableProtocols(self) -> list[bytes]:
        """
        What TLS may negotiate (ALPN): HTTP/1.1 alone, as `BoundedChannel`
        speaks nothing else, where Twisted's site offers HTTP/2 too once
        the h2 package is installed.
        """
        return [HTTP_1_1]

    def log(self, request: object) -> None:
        pass

    def _updateLogDateTime(self) -> None:
        # Twisted keeps the access log's date string fresh with a timer
        # that fires every second from the site's start: a wake-up a second
        # of every agent for a log this site never writes.
        pass

    def body_too_long(self) -> None:
        """
        A request body over `MAX_BODY_BYTES` was refused (its connection
        closed): counted, and logged when the throttle allows.
        """
        self.long_bodies += 1
        if self._throttle.due():
            log.info(
                "an HTTP request body over {limit} bytes: connection closed"
                " ({count} so far)",
                limit=MAX_BODY_BYTES,
                count=self.long_bodies,
            )


@implementer(IHalfCloseableProtocol)
class _Connection(ProtocolWrapper):
    """
    `ConnectionLimit`'s wrapper: it bounds the connection's send buffer
    (`SEND_BUFFER`), and passes a half-close on to the channel.
    """

    def makeConnection(self, transport: ITransport) -> None:
        sock = _socket_of(transport)
        if sock is not None:
            sock.setsockopt(SOL_SOCKET, SO_SNDBUF, SEND_BUFFER)
        super().makeConnection(transport)

    def readConnectionLost(self) -> None:
        IHalfCloseableProtocol(self.wrappedProtocol).readConnectionLost()

    def writeConnectionLost(self) -> None:
        IHalfCloseableProtocol(self.wrappedProtocol).writeConnectionLost()


def _socket_of(transport: object) -> socket | None:
    """
    The socket under `transport`: its own handle (TCP, UNIX), or, over
    TLS (``--http ssl:...``), the handle of the transport the TLS layer
    wraps, whose own is the TLS connection. Left unset there, Linux grew
    a TLS client's buffer to 3.9 MB while it read nothing.
    """
    for _ in range(TRANSPORT_LAYERS):
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket):
            return handle
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def peer_text(addr: object) -> str:
    """
    A client's address as an operator writes it in a log line:
    C{HOST:PORT}, C{[HOST]:PORT} over IPv6, a UNIX socket's path (or
    C{unix}); not Twisted's C{IPv4Address(type='TCP', ...)}.
    """
    if isinstance(addr, IPv4Address):
        return f"{addr.host}:{addr.port}"
    if isinstance(addr, IPv6Address):
        return f"[{addr.host}]:{addr.port}"
    if isinstance(addr, UNIXAddress):
        # A client of a UNIX socket is most often unnamed.
        name = addr.name
        return name.decode("utf-8", "backslashreplace") if name else "unix"
    return str(addr)


@implementer(IProtocolNegotiationFactory)
class ConnectionLimit(WrappingFactory):
    """
    At most `limit` connections to the wrapped factory at once. One more is
    closed as it is accepted (it never gets an HTTP answer, and holds a
    descriptor for no longer than the accept), unless a connection has
    waited `STALE_AFTER` for a request, has sent no whole request yet, its
    client has left its answer waiting `UNREAD_AFTER` in all, or it is
    kept alive after its answer: the one waiting longest for a request
    `STALE_AFTER` or more is closed, or else the one open longest of those
    that sent none, or else the one whose answer waited longest, or else
    the one kept alive waiting longest, and the new one takes its place.
    See the module docstring.
    """

    noisy = False
    protocol = _Connection

    def __init__(self, factory: Site, limit: int, clock: IReactorTime) -> None:
        super().__init__(factory)
        self._site = factory
        self.limit = limit
        self.refused = 0
        self.evicted = 0
        self._clock = clock
        self._throttle = LogThrottle(clock)
        # Connections waiting for a request, the longest waiting first, with
        # since when, and how many answers each connection being answered
        # has in progress.
        self._waiting: dict[ProtocolWrapper, float] = {}
        self._answers: dict[ProtocolWrapper, int] = {}
        # Connections whose client leaves their transport full now, since
        # when; and, of each connection being answered, how long its client
        # left the answer waiting before that.
        self._held: dict[ProtocolWrapper, float] = {}
        self._held_before: dict[ProtocolWrapper, float] = {}
        # Closed to make room, until their connection is lost.
        self._closing: set[ProtocolWrapper] = set()
        # Connections that have sent a whole request, which keep their
        # place `STALE_AFTER` while they wait for the next.
        self._asked: set[ProtocolWrapper] = set()

    def acceptableProtocols(self) -> list[bytes]:
        """
        The site's protocols, for TLS to negotiate (ALPN). Twisted asks the
        factory its TLS layer wraps, this one: while it named none, every
        handshake whose client offers ALPN (curl, browsers, Go's HTTP
        clients) failed with an internal error alert over ``--http ssl:...``.
        """
        return list(self._site.acceptableProtocols())

    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper | None:  # type: ignore[override]
        if len(self.protocols) - len(self._closing) >= self.limit:
            victim = self._victim()
            if victim is None or len(self._closing) >= MAX_CLOSING:
                self._refuse(addr)
                return None
            self._evict(*victim, addr)
        return super().buildProtocol(addr)

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        super().registerProtocol(p)
        self._waiting[p] = self._clock.seconds()

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        self._waiting.pop(p, None)
        self._answers.pop(p, None)
        self._held.pop(p, None)
        self._held_before.pop(p, None)
        self._closing.discard(p)
        self._asked.discard(p)

    def answering(self, request: Request) -> None:
        """`request`, read whole, is being answered on its connection."""
        # The channel's transport is its ProtocolWrapper (WrappingFactory).
        connection: Any = request.channel.transport
        if (
            not isinstance(connection, ProtocolWrapper)
            or connection not in self.protocols
        ):
            return
        self._waiting.pop(connection, None)
        self._asked.add(connection)
        if connection not in self._answers:
            # An answer starts: what its client left waiting before is past.
            self._held_before[connection] = 0.0
            if connection in self._held:
                self._held[connection] = self._clock.seconds()
        self._answers[connection] = self._answers.get(connection, 0) + 1
        request.notifyFinish().addBoth(lambda _: self._answered(connection))

    def _answered(self, connection: ProtocolWrapper) -> None:
        left = self._answers.get(connection, 0) - 1
        if left > 0:
            self._answers[connection] = left
            return
        self._answers.pop(connection, None)
        self._held_before.pop(connection, None)
        if connection in self.protocols and connection not in self._closing:
            # Waiting for its next request from now: the last in line.
            self._waiting[connection] = self._clock.seconds()

    def held(self, connection: Any) -> None:
        """`connection`'s transport is full: its client is not reading."""
        if connection in self.protocols and connection not in self._closing:
            self._held.setdefault(connection, self._clock.seconds())

    def released(self, connection: Any) -> None:
        """`connection`'s transport has room again: its client read."""
        since = self._held.pop(connection, None)
        if since is not None and connection in self._held_before:
            self._held_before[connection] += self._clock.seconds() - since

    def _victim(self) -> tuple[ProtocolWrapper, str] | None:
        """
        The connection to close to make room, and why, if one may be: the
        one that has waited longest for a request, if `STALE_AFTER` or
        more; else the one open longest of those that have sent no whole
        request yet; else the one whose client has left its answer waiting
        longest in all, if it is waiting now and has waited `UNREAD_AFTER`
        or more; else the one kept alive after its answer that has waited
        longest for its next request, however short a time.
        """
        now = self._clock.seconds()
        for connection, since in self._waiting.items():
            if now - since < STALE_AFTER:
                break  # The one waiting longest has not waited long enough.
            return (
                connection,
                f"it waited longest for a request, over {STALE_AFTER:g} s",
            )
        for connection, since in self._waiting.items():
            if connection not in self._asked:
                return (
                    connection,
                    "it has sent no whole request yet, open longest of those"
                    f" ({now - since:.1f} s)",
                )
        slowest: tuple[ProtocolWrapper, float] | None = None
        for connection, since in self._held.items():
            before = self._held_before.get(connection)
            if before is None:
                continue  # Not being answered: waiting for a request.
            held = before + now - since
            if held >= UNREAD_AFTER and (slowest is None or held > slowest[1]):
                slowest = (connection, held)
        if slowest is not None:
            connection, held = slowest
            why = f"its client left its answer unread longest, {held:.0f} s in all"
            return connection, why
        for connection, since in self._waiting.items():
            return (
                connection,
                f"it waited longest for a request ({now - since:.1f} s), kept"
                " alive after its answer",
            )
        return None

    def _evict(self, victim: ProtocolWrapper, why: str, addr: IAddress | None) -> None:
        self._waiting.pop(victim, None)
        self._held.pop(victim, None)
        self._closing.add(victim)
        self.evicted += 1
        self._warn(
            "HTTP connection from {victim} closed to make room for {peer}: "
            "{open} open, the most allowed, and {why} ({evicted} closed so far)",
            victim=peer_text(victim.getPeer()),
            peer=peer_text(addr),
            why=why,
            evicted=self.evicted,
        )
        transport: Any = victim.transport
        transport.abortConnection()

    def _refuse(self, addr: IAddress | None) -> None:
        self.refused += 1
        self._warn(
            "HTTP connection from {peer} refused: {open} open, the most "
            "allowed ({refused} refused so far)",
            peer=peer_text(addr),
            refused=self.refused,
        )

    def _warn(self, text: str, **fields: object) -> None:
        if self._throttle.due():
            log.warn(text, open=len(self.protocols), **fields)

    def stats(self) -> dict[str, int]:
        """Open, refused and evicted connections, for ``/debug/stats``."""
        return {
            "connections": len(self.protocols),
            "max_connections": self.limit,
            "refused_connections": self.refused,
            "evicted_connections": self.evicted,
        }


class HTTPServer(MultiService):
    """
    The listener (`strports.service`): a port that cannot be bound ends
    start-up with one line naming the field (`label`, as the user gave it)
    and a non-zero status, whether Twisted says so (`CannotListenError`)
    or the socket layer does (a TCP port out of range: `OverflowError`; a
    UNIX socket whose directory is missing: the lock file's `OSError`),
    and takes away the lock link a failed ``unix:`` listen left
    (`sentinel.unixlocks`).
    """

    def __init__(
        self,
        description: str,
        factory: ConnectionLimit,
        reactor: Any,
        label: str = "http",
    ):
        super().__init__()
        self.description = description
        self.factory = factory
        self.label = label
        # Over TLS, a client offering no protocol the channel speaks is
        # refused as RFC 7301 says (`sentinel.alpn`).
        # The reactor, by delegation: its interfaces are the reactor's.
        listening: Any = TLSListening(reactor, factory.acceptableProtocols())
        strports.service(description, factory, reactor=listening).setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            self._refused(e.socketError)
        except OSError as e:
            # Its text names the lock file of a UNIX socket, and the PID it
            # links to, rather than the socket: the reason alone.
            self._refused(e.strerror or e)
        except OverflowError as e:
            self._refused(e)

    def _refused(self, reason: object) -> NoReturn:
        # A unix: socket's lock link, which Twisted took and left behind.
        release_lock(self.description, os.getpid())
        raise SystemExit(
            f"sentinel: {self.label}: cannot listen on {self.description}: {reason}"
        ) from None


def http_service(
    description: str,
    reactor: Any,
    monitor: Monitor,
    *,
    agent_id: str,
    reload: ReloadOutcome,
    zookeeper: ZooKeeperPublisher | None,
    gc_objects: Callable[[], int],
    health_checks: Sequence[HealthCheck] = (),
    stats_sources: Mapping[str, StatsSource] | None = None,
    group: Group | None = None,
    health_details: Mapping[str, StatsSource] | None = None,
    log_output: LogOutput | None = None,
    label: str = "http",
) -> HTTPServer:
    """
    The agent's HTTP part, listening on `description` (a strports string,
    the field `label`: ``--http`` when given on the command line):
    the app with its metrics, check history and ZooKeeper's health and
    stats, the `health_checks`, `stats_sources` and `health_details` of
    the rest of the agent, its `group` (``/group``, its health and
    metrics; see `sentinel.web.StatusApp`), and the process's `log_output`
    (its stats and metrics).
    """
    history = CheckHistory()
    monitor.add_listener(history.record)
    monitor.add_removal_listener(history.forget)
    slicer = Slicer(reactor)

    def http_stats() -> dict[str, Any]:
        # `factory` wraps the app's site, so it comes after the app.
        return {**factory.stats(), **slicer.stats()}

    stats: dict[str, StatsSource] = {**(stats_sources or {}), "http": http_stats}
    checks = list(health_checks)
    details = dict(health_details or {})
    if zookeeper is not None:
        stats["zookeeper"] = zookeeper.stats
        checks.append(zookeeper.unhealthy_reason)
        details["unconfirmed"] = zookeeper.unconfirmed_detail
    if group is not None:
        checks.append(group.unhealthy_reason)
    if log_output is not None:
        stats["log_output"] = log_output.stats
    app = StatusApp(
        monitor=monitor,
        reactor=reactor,
        agent_id=agent_id,
        gc_objects=gc_objects,
        metrics=AgentMetrics(
            monitor,
            reload,
            zookeeper,
            # The app is made just below; the gauge asks it at each scrape.
            unhealthy_reasons=lambda: app.unhealthy_reasons(),
            verdict=None if group is None else group.verdict_status,
        ),
        history=history,
        zookeeper_stats=None if zookeeper is None else zookeeper.stats,
        health_checks=checks,
        stats_sources=stats,
        health_details=details,
        slicer=slicer,
        group=group,
    )
    if group is not None and app.metrics is not None:
        app.metrics.registry.register(GroupMetrics(group))
    if log_output is not None and app.metrics is not None:
        app.metrics.registry.register(LogOutputMetrics(log_output))
    factory = ConnectionLimit(
        StatusSite(app.resource(), reactor), MAX_CONNECTIONS, reactor
    )
    return HTTPServer(description, factory, reactor, label)
