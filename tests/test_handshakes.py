"""
A timeout behind the agent's own handshakes: a server that completed
another of the agent's handshakes meanwhile was answering, so the wait was
its queue of the agent's connections (`sentinel.handshakes`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as neterror
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.handshakes import KEEP, Handshakes
from sentinel.observation import Observation
from sentinel.pacing import BEAT, ConnectPacer
from sentinel.protocol import Unanswered
from sentinel.resolve import Resolver
from tests.test_probe import paced_probe

ADDRESS = ("127.0.0.1", 6379)
# As the probes key it (`sentinel.stalls.Address`): plain TCP.
ENDPOINT = (*ADDRESS, None)


class HandshakesTests(SynchronousTestCase):
    """The last completion per address, forgotten after `KEEP` seconds."""

    def test_completed_since(self) -> None:
        """A completion counts after any earlier time, not at or after it."""
        clock = Clock()
        handshakes = Handshakes(clock)
        self.assertFalse(handshakes.since(ENDPOINT, -1.0))
        clock.advance(2.0)
        handshakes.completed(ENDPOINT)
        self.assertTrue(handshakes.since(ENDPOINT, 1.9))
        self.assertFalse(handshakes.since(ENDPOINT, 2.0))
        self.assertFalse(handshakes.since(("127.0.0.1", 6380, None), 0.0))
        self.assertFalse(handshakes.since((*ADDRESS, "localhost"), 0.0))

    def test_old_addresses_forgotten(self) -> None:
        """
        An address without a completion for `KEEP` seconds is forgotten at
        a later completion: one entry per address in use, at most.
        """
        clock = Clock()
        handshakes = Handshakes(clock)
        for port in range(100):
            handshakes.completed(("127.0.0.1", port, None))
        clock.advance(KEEP + 1.0)
        handshakes.completed(ENDPOINT)
        self.assertEqual(len(handshakes), 1)
        self.assertTrue(handshakes.since(ENDPOINT, 0.0))


class Server:
    """
    Probes of instances on one server (one address), sharing a pacer, as
    the agent's are; check timeout 1.0 s (a fair chance is 0.9 s).
    """

    def __init__(self, count: int, password: str | None = "s3cret") -> None:
        self.reactor = MemoryReactorClock()
        self.pacer = ConnectPacer(self.reactor, 10, 1.0)
        resolver = Resolver(self.reactor)  # type: ignore[arg-type]
        self.probes = [
            paced_probe(
                RedisInstance(f"r{i}", "127.0.0.1", 6379, password=password),
                self.reactor,
                self.pacer,
                resolver,
            )
            for i in range(count)
        ]
        self.transports: list[StringTransport] = []

    def on_time(self, seconds: float) -> None:
        """Let `seconds` pass with the agent on time: every timer when due."""
        self.reactor.pump([BEAT] * round(seconds / BEAT))

    def accept(self, index: int) -> Any:
        """TCP-complete the `index`-th attempt (from 0): its protocol."""
        factory = self.reactor.tcpClients[index][2]
        protocol = factory.buildProtocol(IPv4Address("TCP", *ADDRESS))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        return protocol

    def connect_failed(self, index: int, error: Exception) -> None:
        """The `index`-th attempt (from 0) fails with `error`, by its connector."""
        factory = self.reactor.tcpClients[index][2]
        factory.clientConnectionFailed(self.reactor.connectors[index], Failure(error))


def ended(d: Deferred[Observation | None]) -> list[object]:
    """Cancel a check at its deadline: what it ended with."""
    d.cancel()
    results: list[object] = []
    d.addBoth(results.append)
    return results


class QueuedBehindOwnTests(SynchronousTestCase):
    """
    A timeout while the server completed another of the agent's
    handshakes (TLS, AUTH) is inconclusive; with none, or only plain TCP
    connects, it fails as ever.
    """

    def test_attempt_behind_own_handshakes(self) -> None:
        """
        An attempt that waits for its AUTH reply the whole timeout, while
        the server answers another instance's AUTH, ends its check with
        None, and the attempt's own bound running out later is not
        reported by the next check.
        """
        server = Server(2)
        waiting, answered = server.probes
        d = waiting.check(False)
        server.accept(0)  # Connected; its AUTH is never answered.
        server.on_time(0.1)  # A token for the next attempt.
        other = answered.check(False)
        server.on_time(0.2)
        server.accept(1).dataReceived(b"+OK\r\n+PONG\r\n")
        self.assertTrue(self.successResultOf(other).ok)  # type: ignore[union-attr]
        server.on_time(0.66)
        self.assertEqual(ended(d), [None])
        server.on_time(0.1)  # The attempt's own bound: it timed out.
        self.assertNoResult(waiting.check(False))  # A new attempt, in flight.

    def test_connect_behind_own_handshakes(self) -> None:
        """
        A connect whose SYN the server's full listen backlog dropped for
        its whole bound (`Unanswered`, the agent on time), while the server
        answered another instance's AUTH, ends its check with None, as a
        plain timeout does: the backlog was the agent's own connections,
        and the server was accepting them. Before, `Unanswered` failed it
        whatever the server answered meanwhile, and every connect timeout
        of an agent on time is one (the kernel still waits on its SYN):
        the instance was published down at its first check.
        """
        for error in (Unanswered(), neterror.TimeoutError()):
            server = Server(2)
            waiting, answered = server.probes
            d = waiting.check(False)  # Its SYN dropped: the backlog is full.
            server.on_time(0.1)
            other = answered.check(False)
            server.on_time(0.2)
            server.accept(1).dataReceived(b"+OK\r\n+PONG\r\n")
            self.assertTrue(self.successResultOf(other).ok)  # type: ignore[union-attr]
            server.on_time(0.66)
            server.connect_failed(0, error)
            self.assertEqual(self.successResultOf(d), None)

    def test_connect_with_no_handshake_meanwhile(self) -> None:
        """
        A connect whose SYN went unanswered for its bound while the server
        completed no other handshake fails, the agent late or not: a host
        that is down is found.
        """
        server = Server(2)
        d = server.probes[0].check(False)
        server.reactor.advance(0.96)  # One turn of 0.96 s: the agent stalled.
        server.connect_failed(0, Unanswered())
        self.assertEqual(
            self.successResultOf(d), Observation(ok=False, error="timeout (connect)")
        )

    def test_attempt_with_no_handshake_meanwhile(self) -> None:
        """
        An attempt that waits for its AUTH reply the whole timeout while
        the server completes no other handshake fails, as ever: a hung
        server is found.
        """
        server = Server(2)
        waiting = server.probes[0]
        d = waiting.check(False)
        server.accept(0)
        server.on_time(0.1)
        server.probes[1].check(False)
        server.accept(1)  # Connected too; its AUTH is not answered either.
        server.on_time(0.86)
        self.assertEqual(ended(d), [Observation(ok=False, error="timeout (auth)")])

    def test_first_ping_behind_own_handshakes(self) -> None:
        """
        The first PING on a connection just made, unanswered at the
        deadline while the server completed another instance's AUTH, ends
        its check with None and keeps the connection; the next PING on it,
        unanswered with no handshake meanwhile, fails.
        """
        server = Server(2)
        waiting, answered = server.probes
        d = waiting.check(False)
        server.accept(0).dataReceived(b"+OK\r\n")  # PING sent, never answered.
        server.on_time(0.1)
        answered.check(False)
        server.on_time(0.4)
        server.accept(1).dataReceived(b"+OK\r\n")
        server.on_time(0.46)
        self.assertEqual(ended(d), [None])
        self.assertTrue(waiting.connected)
        server.on_time(0.04)
        d = waiting.check(False)
        server.on_time(0.96)
        self.assertEqual(ended(d), [Observation(ok=False, error="timeout (ping)")])
        self.assertFalse(waiting.connected)

    def test_plain_connects_prove_nothing(self) -> None:
        """
        Without TLS or AUTH, another instance's connect completing is no
        sign of the server (the kernel completes it from the listen backlog
        of a stopped server): the first PING unanswered fails, as ever.
        """
        server = Server(2, password=None)
        waiting, other = server.probes
        d = waiting.check(False)
        server.accept(0)
        server.on_time(0.1)
        other.check(False)
        server.on_time(0.4)
        server.accept(1)
        server.on_time(0.46)
        self.assertEqual(ended(d), [Observation(ok=False, error="timeout (ping)")])
