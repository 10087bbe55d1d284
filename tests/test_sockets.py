"""Connection attempts that found no socket: the agent's shortage, not Redis's."""

from __future__ import annotations

import errno

from twisted.internet.defer import fail
from twisted.internet.error import (
    ConnectBindError,
    ConnectionRefusedError,
    DNSLookupError,
    getConnectError,
)
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sentinel.resolve import CannotResolve
from sentinel.sockets import HOLD, SocketShortage
from tests.test_probe import Harness, ManualResolver


def no_socket(code: int = errno.EMFILE) -> Failure:
    """How Twisted fails a connect whose socket could not be made."""
    return Failure(ConnectBindError(code, "no socket"))


def lookup_without_socket() -> CannotResolve:
    """How `sentinel.resolve` fails a lookup that found no socket to ask with."""
    error = CannotResolve("cannot resolve redis.example: cannot open a socket")
    error.shortage = errno.EMFILE
    return error


class ProbeTests(SynchronousTestCase):
    def fail_attempt(self, h: Harness, failure: Failure) -> None:
        factory = h.reactor.tcpClients[-1][2]
        factory.clientConnectionFailed(h.reactor.connectors[-1], failure)

    def test_no_socket_is_inconclusive(self) -> None:
        """
        A check whose connect found no socket (out of file descriptors)
        ends with None: neither up nor down. So does the next one until a
        reconnect is due; that one connects, and its check counts again.
        """
        h = Harness()
        d = h.check()
        self.fail_attempt(h, no_socket())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(h.pacer.sockets.count, 1)
        h.reactor.advance(0.5)
        self.assertIsNone(self.successResultOf(h.check()))
        self.assertEqual(len(h.reactor.tcpClients), 1)
        h.reactor.advance(0.5)
        d = h.check()
        h.accept()
        h.reply(b"+PONG\r\n")
        observation = self.successResultOf(d)
        assert observation is not None
        self.assertTrue(observation.ok)

    def test_lookup_without_socket_is_inconclusive(self) -> None:
        """
        A check whose name lookup found no socket to ask with ends with
        None, counted as the agent's shortage; a lookup that failed on its
        own (no such name) fails the check.
        """
        resolver = ManualResolver()
        h = Harness(host="redis.example", resolver=resolver)
        d = h.check()
        resolver.lookups[-1][1].errback(lookup_without_socket())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(h.pacer.sockets.count, 1)
        h.reactor.advance(1.0)
        d = h.check()
        resolver.lookups[-1][1].errback(
            CannotResolve("cannot resolve redis.example: no such name")
        )
        observation = self.successResultOf(d)
        assert observation is not None
        self.assertFalse(observation.ok)
        self.assertEqual(h.pacer.sockets.count, 1)

    def test_lookup_without_socket_at_once_is_inconclusive(self) -> None:
        """
        A lookup that fails before the check has even waited for it (its
        socket could not be made: the resolver answers at once) leaves the
        check inconclusive too.
        """
        resolver = ManualResolver()
        resolver.addresses = lambda host, fresh_since=None: fail(  # type: ignore[method-assign]
            lookup_without_socket()
        )
        h = Harness(host="redis.example", resolver=resolver)
        self.assertIsNone(self.successResultOf(h.check()))
        self.assertEqual(h.pacer.sockets.count, 1)

    def test_healthz_while_sockets_are_short(self) -> None:
        """
        /healthz's reason says how many checks found no socket, and for
        how long; it clears once a connect got a socket and `HOLD` seconds
        passed without another shortage.
        """
        h = Harness()
        sockets = h.pacer.sockets
        d = h.check()
        self.fail_attempt(h, no_socket())
        self.successResultOf(d)
        h.reactor.advance(1.0)
        d = h.check()
        self.fail_attempt(h, no_socket(errno.ENFILE))
        self.successResultOf(d)
        self.assertEqual(
            sockets.unhealthy_reason(),
            "out of file descriptors (2 check(s) could not start a connection in the "
            "last 1 s: too many open files in system)",
        )
        h.reactor.advance(1.0)
        d = h.check()
        h.accept()
        h.reply(b"+PONG\r\n")
        self.successResultOf(d)
        self.assertIsNotNone(sockets.unhealthy_reason())
        h.reactor.advance(HOLD)
        self.assertIsNone(sockets.unhealthy_reason())
        self.assertEqual(sockets.stats()["checks_without_socket"], 2)

    def test_refused_still_fails(self) -> None:
        """A refused connect is Redis's answer: it fails the check, as ever."""
        h = Harness()
        d = h.check()
        h.refuse()
        observation = self.successResultOf(d)
        assert observation is not None
        self.assertEqual(observation.error, "connection refused")
        self.assertEqual(h.pacer.sockets.count, 0)


class SocketShortageTests(SynchronousTestCase):
    def test_which_errors(self) -> None:
        """
        EMFILE, ENFILE, ENOBUFS and ENOMEM on making the socket are a
        shortage; another bind error, a refused connect or a failed lookup
        are not.
        """
        shortage = SocketShortage(Clock())
        for code in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self.assertTrue(shortage.ended(no_socket(code)), code)
        for failure in (
            no_socket(errno.EADDRINUSE),
            Failure(ConnectionRefusedError()),
            Failure(DNSLookupError("no such name")),
        ):
            self.assertFalse(shortage.ended(failure))
        self.assertEqual(shortage.count, 4)
        self.assertIn("out of memory for sockets", shortage.unhealthy_reason() or "")

    def test_no_local_port_is_a_shortage(self) -> None:
        """
        A connect refused a local port (EADDRNOTAVAIL, as Twisted reports
        connect's own error) is the agent's shortage too; another plain
        connect error is not.
        """
        shortage = SocketShortage(Clock())
        no_port = getConnectError((errno.EADDRNOTAVAIL, "no port"))
        self.assertTrue(shortage.ended(Failure(no_port)))
        self.assertIn("out of local ports", shortage.unhealthy_reason() or "")
        other = getConnectError((errno.EHOSTUNREACH, "no route"))
        self.assertFalse(shortage.ended(Failure(other)))
        self.assertEqual(shortage.count, 1)

    def test_lasts_until_a_socket_opens(self) -> None:
        """
        With no attempt getting a socket since the last shortage, it lasts
        however long ago that was; a lookup that failed proves nothing.
        """
        clock = Clock()
        shortage = SocketShortage(clock)
        shortage.ended(no_socket())
        clock.advance(HOLD * 10)
        shortage.ended(Failure(DNSLookupError("no such name")))
        self.assertIsNotNone(shortage.unhealthy_reason())
        shortage.ended(Failure(ConnectionRefusedError()))
        self.assertIsNone(shortage.unhealthy_reason())

    def test_a_new_shortage_counts_afresh(self) -> None:
        """Once one has cleared, the next one's count and time start at 0."""
        clock = Clock()
        shortage = SocketShortage(clock)
        shortage.ended(no_socket())
        shortage.ended(object())  # A connection.
        clock.advance(HOLD + 50)
        self.assertIsNone(shortage.unhealthy_reason())
        shortage.ended(no_socket())
        clock.advance(3)
        self.assertEqual(
            shortage.unhealthy_reason(),
            "out of file descriptors (1 check(s) could not start a connection in the "
            "last 3 s: too many open files)",
        )
        self.assertEqual(shortage.count, 2)
