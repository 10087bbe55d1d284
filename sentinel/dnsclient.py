"""
twisted.names' client as `sentinel.lookup` uses it: ``queryUDP`` to the
name servers it is given, one UDP socket per try, quietly.

Twisted writes four info lines per try: the datagram protocol's ``Starting
protocol`` and ``Stopping protocol`` (twisted.names' is noisy), and the UDP
port's ``... starting on N`` and ``(UDP Port N Closed)``, which
``twisted.internet.udp.Port`` writes whatever its protocol says (twisted
26.10). 150 names whose name server never answered cost 32 lines a second.
Here the protocol is not noisy, and on the POSIX reactors the port is one
that writes neither line. Lookup errors are ours to say, and
`sentinel.resolve` and the instances' errors still say them.

twisted.names also writes a line for each datagram it cannot read as a
DNS message (``Truncated packet ...``, ``Invalid packet ...``), whoever
sent it to the query's port: a name server answering each query with
garbage wrote 772 lines in 8 s, and one that floods would write as fast
as it sends. Such a datagram answers nothing, and is dropped unsaid (its
query times out as if it had not come).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import base, udp
from twisted.internet.error import CannotListenError
from twisted.internet.posixbase import PosixReactorBase
from twisted.names import client, dns


class QuietPort(udp.Port):
    """A UDP port that does not log its opening and closing."""

    def _bindSocket(self) -> None:
        # udp.Port._bindSocket without its log line (and without the
        # adopted-socket case, which listenUDP never uses). A socket that
        # cannot be made (out of file descriptors) fails as Twisted's does,
        # with CannotListenError, which says the shortage is the agent's.
        try:
            skt = self.createInternetSocket()
        except OSError as e:
            raise CannotListenError(self.interface, self.port, e) from None
        try:
            skt.bind((self.interface, self.port))
        except OSError as e:
            skt.close()
            raise CannotListenError(self.interface, self.port, e) from None
        self._realPortNumber = skt.getsockname()[1]
        self.connected = 1
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Any = None) -> None:
        # udp.Port.connectionLost without its log line.
        self._realPortNumber = None
        self.maxThroughput = -1
        base.BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno
        if hasattr(self, "d"):
            self.d.callback(None)
            del self.d


class ReadableOnly:
    """
    A datagram protocol's stand-in that passes on only the datagrams that
    read as DNS messages, and everything else as it is.
    """

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)

    def datagramReceived(self, data: bytes, address: Any) -> None:
        """The datagram to the protocol, if it is a DNS message."""
        # Read twice when it is (the protocol reads it again): answers are
        # few, a few tens of microseconds each.
        try:
            dns.Message().fromStr(data)
        except (EOFError, ValueError):
            return
        self._protocol.datagramReceived(data, address)


class QuietUDP:
    """
    A reactor whose ``listenUDP`` starts its protocol quietly, on a
    `QuietPort` where the reactor's ports are ``udp.Port`` (the POSIX
    reactors); everything else is the reactor's own.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> Any:
        """
        Listen as the reactor does, without a log line per socket, nor
        one per datagram that is no DNS message.
        """
        protocol.noisy = False
        readable = ReadableOnly(protocol)
        if not isinstance(self._reactor, PosixReactorBase):
            return self._reactor.listenUDP(port, readable, interface, maxPacketSize)
        quiet = QuietPort(port, readable, interface, maxPacketSize, self._reactor)
        quiet.startListening()
        return quiet


class NameServers(client.Resolver):
    """twisted.names' client, for `queryUDP` to the name servers it is given."""

    def __init__(self, servers: list[tuple[str, int]], timeout: Any, reactor: Any):
        super().__init__(servers=servers, timeout=timeout, reactor=QuietUDP(reactor))

    def messageReceived(self, message: Any, protocol: Any, address: Any = None) -> None:
        # A datagram that answers no query of ours (late, repeated, forged):
        # dropped, without the log line per datagram twisted.names writes.
        pass
