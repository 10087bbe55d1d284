"""The quiet UDP port of name lookups."""

from __future__ import annotations

import errno
import os

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase

from sentinel.dnsclient import QuietPort


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
