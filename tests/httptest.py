"""
Driving the HTTP app in memory, turn by turn.

`Turns` is the slicer's scheduler run by hand: each `Turns.run` is one
reactor turn, so a test sees exactly what one turn renders. `fetch` gets a
whole answer through `StubTreq`; `agent_get` one from a whole agent's
service tree (`sentinel.agent.make_agent`). `Connection` is one client connection to a
real site over a `StringTransport`, for what StubTreq hides: bytes as they
are written, a client that stops reading, one that goes away, pipelining
(`run_until_answered`).
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sentinel.httpd import HTTPServer
from sentinel.streaming import Slicer

# More turns than any answer of these tests needs: a test that hits it
# has found an answer that never ends.
MAX_TURNS = 10_000


class Turns:
    """A scheduler for `Slicer` whose turns run one at a time, by hand."""

    def __init__(self) -> None:
        self.clock = Clock()

    def __call__(self, work: Any) -> IDelayedCall:
        return self.clock.callLater(1, work)

    @property
    def waiting(self) -> bool:
        """Whether a turn is scheduled."""
        return bool(self.clock.getDelayedCalls())

    def run(self) -> None:
        """One reactor turn: the slicer renders one slice (if it has one)."""
        self.clock.advance(1)

    def slicer(self, clock: Clock) -> Slicer:
        """A slicer on `clock` (stall timeouts) whose turns are ours."""
        return Slicer(clock, scheduler=self)


def run_until_answered(clock: Clock, turns: Turns) -> None:
    """
    Run the slicer's turns, and the calls due now on `clock` (a
    connection reads its next pipelined request a turn after an answer),
    until neither has work left.
    """
    for _ in range(MAX_TURNS):
        if turns.waiting:
            turns.run()
        elif any(c.getTime() <= clock.seconds() for c in clock.getDelayedCalls()):
            clock.advance(0)
        else:
            return
    raise AssertionError(f"still answering after {MAX_TURNS} turns")


def fetch(
    treq: StubTreq, turns: Turns, path: str, method: str = "GET", **kw: Any
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """
    The whole answer to `path` through StubTreq, turning the slicer as
    long as it has work: status, headers and body.
    """
    responses: list[Any] = []
    bodies: list[Any] = []
    treq.request(method, "http://agent" + path, **kw).addBoth(responses.append)
    asked = False
    for _ in range(MAX_TURNS):
        treq.flush()
        if responses and not asked:
            if isinstance(responses[0], Failure):
                responses[0].raiseException()
            responses[0].content().addBoth(bodies.append)
            asked = True
            treq.flush()
        if bodies:
            if isinstance(bodies[0], Failure):
                bodies[0].raiseException()
            response = responses[0]
            headers = dict(response.headers.getAllRawHeaders())
            return response.code, headers, bodies[0]
        turns.run()
    raise AssertionError(f"{path}: no answer after {MAX_TURNS} turns")


def fetch_json(treq: StubTreq, turns: Turns, path: str) -> tuple[int, Any]:
    """The status and decoded JSON body of `path`."""
    code, headers, body = fetch(treq, turns, path)
    if headers.get(b"Content-Type") != [b"application/json"]:
        raise AssertionError(f"{path}: not JSON: {headers}")
    return code, json.loads(body)


class Connection:
    """One client connection to `factory`, in memory: bytes in, bytes out."""

    def __init__(self, factory: IProtocolFactory, port: int = 40000) -> None:
        peer = IPv4Address("TCP", "127.0.0.1", port)
        self.transport = StringTransportWithDisconnection(peerAddress=peer)
        protocol = factory.buildProtocol(peer)
        self.refused = protocol is None
        if protocol is not None:
            self.transport.protocol = protocol
            protocol.makeConnection(self.transport)
        self.protocol = protocol

    def request(self, path: str, method: str = "GET", extra: str = "") -> None:
        """Send one request (more can follow: they are pipelined)."""
        assert self.protocol is not None, "refused"
        self.protocol.dataReceived(
            f"{method} {path} HTTP/1.1\r\nHost: agent\r\n{extra}\r\n".encode()
        )

    def output(self) -> bytes:
        """Everything the server wrote so far."""
        return self.transport.value()

    @property
    def open(self) -> bool:
        """Whether neither side has closed the connection."""
        return bool(self.transport.connected) and not self.transport.disconnecting

    def lose(self) -> None:
        """The client goes away."""
        if self.transport.connected:
            self.transport.connected = False
            assert self.protocol is not None
            self.protocol.connectionLost(Failure(ConnectionDone()))


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Every complete HTTP/1.1 response in `raw`: status, headers, body."""
    found = []
    while raw:
        head, separator, rest = raw.partition(b"\r\n\r\n")
        if not separator:
            break
        lines = head.decode("latin-1").split("\r\n")
        code = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if headers.get("transfer-encoding") == "chunked":
            body, rest, complete = _dechunk(rest)
            if not complete:
                break
        else:
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                break
            body, rest = rest[:length], rest[length:]
        found.append((code, headers, body))
        raw = rest
    return found


def _dechunk(data: bytes) -> tuple[bytes, bytes, bool]:
    body = []
    while True:
        size_line, separator, rest = data.partition(b"\r\n")
        if not separator:
            return b"".join(body), data, False
        size = int(size_line, 16)
        if len(rest) < size + 2:
            return b"".join(body), data, False
        body.append(rest[:size])
        data = rest[size + 2 :]
        if size == 0:
            return b"".join(body), data, True


def status_app(names: list[str], **kw: Any) -> tuple[Any, Any, Clock, Any, Turns]:
    """
    A monitor of `names` on a Clock at t=1000 (not started: start it, the
    first tick runs at once), and a `StatusApp` on it whose slicer turns by
    hand: (app, monitor, clock, probes, turns).
    """
    from sentinel.web import StatusApp
    from tests.fakes import make_monitor

    monitor, clock, probes, _ = make_monitor(names)
    clock.advance(1000.0)
    turns = Turns()
    app = StatusApp(
        monitor=monitor,
        reactor=clock,
        agent_id="agent-1",
        gc_objects=lambda: 1234,
        slicer=turns.slicer(clock),
        **kw,
    )
    return app, monitor, clock, probes, turns


def agent_get(case: SynchronousTestCase, top: Any, path: str) -> tuple[int, Any]:
    """The status and JSON body of `path` from the HTTP service in `top`."""
    [http] = [s for s in top if isinstance(s, HTTPServer)]
    client = StubTreq(http.factory.wrappedFactory.resource)
    response = case.successResultOf(client.get(f"http://agent{path}"))
    body = case.successResultOf(response.content())
    return response.code, json.loads(body)
