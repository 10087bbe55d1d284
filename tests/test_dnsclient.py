"""The quiet UDP port of name lookups."""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import LogEvent, globalLogPublisher
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from sentinel.dnsclient import AnotherQuestion, NameServers, QuietPort, ReadableOnly
from sentinel.lookup import describe_failure
from tests.test_resolve import FakeUDPPort, UDPClock, a


class QuietPortTests(SynchronousTestCase):
    def test_no_socket_is_cannot_listen(self) -> None:
        """
        A socket that cannot be made (out of file descriptors) fails the
        port as Twisted's does, with CannotListenError carrying the errno,
        which the resolver reads as the agent's shortage.
        """
        port = QuietPort(0, DatagramProtocol(), "127.0.0.1", 8192, reactor=None)

        def no_socket() -> object:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

        port.createInternetSocket = no_socket  # type: ignore[assignment,method-assign]
        error = self.assertRaises(CannotListenError, port.startListening)
        self.assertEqual(error.socketError.errno, errno.EMFILE)


class _Controller:
    def __init__(self) -> None:
        self.messages: list[dns.Message] = []

    def messageReceived(self, message: dns.Message, *args: Any) -> None:
        self.messages.append(message)


class ReadableOnlyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.controller = _Controller()
        self.protocol = dns.DNSDatagramProtocol(self.controller)
        self.protocol.startProtocol()

    def test_garbage_unsaid(self) -> None:
        """
        Datagrams that are no DNS message (cut short, a compression loop)
        reach no query and write no log line: twisted.names wrote one per
        datagram, as fast as a name server (or anyone) sent them.
        """
        answer = dns.Message(id=7, answer=1).toStr()
        garbage = [
            answer[:8],
            answer[:2] + b"\x81\x80\0\x01\0\x01\0\0\0\0" + b"\xc0\x0c" * 4,
        ]
        for data in garbage:
            self.protocol.datagramReceived(data, ("127.0.0.1", 53))
        self.assertEqual(len(self.events), 2)
        del self.events[:]
        readable = ReadableOnly(self.protocol)
        for data in garbage:
            readable.datagramReceived(data, ("127.0.0.1", 53))
        self.assertEqual((self.events, self.controller.messages), ([], []))

    def test_messages_passed_on(self) -> None:
        """A DNS message is passed on, and so is anything else asked of it."""
        readable = ReadableOnly(self.protocol)
        readable.datagramReceived(dns.Message(id=7, answer=1).toStr(), ("x", 53))
        self.assertEqual([m.id for m in self.controller.messages], [7])
        self.assertIs(readable.controller, self.controller)


class NameServersTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = UDPClock()
        self.servers = [("192.0.2.53", 53), ("192.0.2.54", 53)]
        self.client = NameServers(self.servers, (1.0, 1.0), self.reactor)
        self.queries = [dns.Query("redis.example", dns.A, dns.IN)]

    def assert_all_ended(self) -> None:
        """No socket open, no timer left."""
        self.assertEqual(self.reactor.open_ports(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_late_answer_to_an_earlier_try_counts(self) -> None:
        """
        An answer to the first try that comes after the second try was
        sent (1.9 s, tries of 1 s) is the query's answer: twisted.names
        had closed the first try's socket, and the lookup failed at 2 s.
        """
        d = self.client.queryUDP(self.queries)
        self.reactor.advance(1.0)
        [port] = self.reactor.ports
        self.assertEqual([address for _, address in port.sent], self.servers)
        first, second = port.query(0).id, port.query(1).id
        self.assertNotEqual(first, second)
        self.reactor.advance(0.9)
        port.reply(answers=(a("redis.example", "192.0.2.1"),), index=0)
        self.assertEqual(self.successResultOf(d).id, first)
        self.assert_all_ended()

    def test_answer_from_elsewhere_ignored(self) -> None:
        """
        An answer to a try must come from the name server it was sent to,
        as in twisted.names: the first try's id, from the second server,
        answers nothing.
        """
        d = self.client.queryUDP(self.queries)
        self.reactor.advance(1.0)
        [port] = self.reactor.ports
        response = dns.Message(port.query(0).id, answer=1)
        response.queries = self.queries
        port.protocol.datagramReceived(response.toStr(), self.servers[1])
        self.assertNoResult(d)
        self.reactor.advance(1.0)
        self.failureResultOf(d, TimeoutError)

    def reply_about(self, port: FakeUDPPort, index: int, name: str) -> None:
        """Answer the `index`th query on `port` as if it had asked `name`."""
        response = dns.Message(port.query(index).id, answer=1)
        response.queries = [dns.Query(name, dns.A, dns.IN)]
        response.answers = [a(name, "192.0.2.7")]
        port.protocol.datagramReceived(response.toStr(), port.sent[index][1])

    def test_answer_to_another_question_ignored(self) -> None:
        """
        An answer with the query's id but another question (and that
        name's records) is not the query's answer: the next try's
        answer still is.
        """
        d = self.client.queryUDP(self.queries)
        [port] = self.reactor.ports
        self.reply_about(port, 0, "other.example")
        self.assertNoResult(d)
        self.reactor.advance(1.0)
        port.reply(answers=(a("redis.example", "192.0.2.1"),))
        self.assertEqual(self.successResultOf(d).queries, self.queries)
        self.assert_all_ended()

    def test_only_answers_to_another_question(self) -> None:
        """
        When every try was answered about another name, the query fails
        saying so (as soon as the last try is answered), not as a
        timeout, nor as the name's having no address.
        """
        d = self.client.queryUDP(self.queries)
        [port] = self.reactor.ports
        self.reply_about(port, 0, "other.example")
        self.reactor.advance(1.0)
        self.reply_about(port, 1, "other.example")
        failure = self.failureResultOf(d, AnotherQuestion)
        self.assertEqual(
            describe_failure(failure, 2.0), "the name server answered another question"
        )
        self.assert_all_ended()

    def test_no_answer_times_out_at_the_bound(self) -> None:
        """
        Without an answer the query fails with a TimeoutError when the
        last try's time is up, and not before; its socket and timers end.
        """
        d = self.client.queryUDP(self.queries)
        self.reactor.advance(1.999)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        self.failureResultOf(d, TimeoutError)
        self.assertEqual(len(self.reactor.ports[0].sent), 2)
        self.assert_all_ended()

    def test_cancel_ends_everything(self) -> None:
        """Cancelling the query closes its socket and stops its tries."""
        d = self.client.queryUDP(self.queries)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assert_all_ended()
        self.reactor.advance(5)
        self.assertEqual(len(self.reactor.ports[0].sent), 1)

    def test_send_failure_at_once(self) -> None:
        """A query that cannot be sent fails with the system's error."""
        self.reactor.unreachable = True
        d = self.client.queryUDP(self.queries)
        self.failureResultOf(d, OSError)
        self.assert_all_ended()

    def test_no_socket(self) -> None:
        """Out of file descriptors: CannotListenError, nothing left behind."""
        self.reactor.out_of_files = True
        d = self.client.queryUDP(self.queries)
        self.failureResultOf(d, CannotListenError)
        self.assert_all_ended()
