"""The quiet UDP port of name lookups."""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import LogEvent, globalLogPublisher
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from sentinel.dnsclient import QuietPort, ReadableOnly


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
