"""
twisted.names' client as `sentinel.lookup` uses it: ``queryUDP`` to the
name servers it is given, one UDP socket per query (for all its tries), quietly.

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

from collections.abc import Sequence
from typing import Any

from twisted.internet import base, udp
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.posixbase import PosixReactorBase
from twisted.names import client, dns
from twisted.python.failure import Failure


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
    """
    twisted.names' client, for `queryUDP` to the name servers it is given,
    where an answer to any try of a query counts until the last try's time
    is up (see `queryUDP`).
    """

    def __init__(self, servers: list[tuple[str, int]], timeout: Any, reactor: Any):
        super().__init__(servers=servers, timeout=timeout, reactor=QuietUDP(reactor))

    def queryUDP(
        self, queries: list[dns.Query], timeout: Sequence[float] | None = None
    ) -> Deferred[dns.Message]:
        """
        Ask `queries` of the name servers in turn, a try every ``timeout[i]``
        seconds, and fire with the first answer to any try: one that comes
        after the next try was sent still counts, until the time of the last
        try is up (then `defer.TimeoutError`).

        twisted.names closes each try's socket when the next try is sent, so
        its answer is lost: a name server answering every query in 1.2 s
        (tries of 1 s, a bound of 2 s) resolved no name at all, and 100
        instances on it stayed down. glibc, too, takes a late answer to an
        earlier try. The tries share one socket per address family (a
        random source port each, as before), and each has its own query id.
        """
        addresses = self.servers + list(self.dynServers)
        if not addresses:
            return fail(OSError("No domain name servers available"))
        chosen = self.timeout if timeout is None else timeout
        timeouts = tuple(float(seconds) for seconds in chosen or ())
        return _Tries(self, queries, timeouts, addresses).start()


class AnotherQuestion(Exception):
    """Every answer to a query was to another question (the first arg)."""


class _Tries:
    """One `NameServers.queryUDP`: its tries, sockets and deadline."""

    def __init__(
        self,
        resolver: NameServers,
        queries: list[dns.Query],
        timeouts: tuple[float, ...],
        addresses: list[tuple[str, int]],
    ) -> None:
        self._resolver = resolver
        self._queries = queries
        self._timeouts = timeouts
        self._addresses = addresses
        self._clock = resolver._reactor
        self._deadline = self._clock.seconds() + sum(timeouts)
        self._result: Deferred[dns.Message] = Deferred(lambda _: self._end())
        # A socket per address family, opened at its first try.
        self._protocols: dict[bool, dns.DNSDatagramProtocol] = {}
        self._tries_waiting = 0
        self._next_try: IDelayedCall | None = None
        # The last answer that was to another question, if any.
        self._wrong: dns.Message | None = None
        self._ended = False

    def start(self) -> Deferred[dns.Message]:
        """Send the first try; the Deferred fires as `queryUDP` says."""
        self._send(0)
        return self._result

    def _send(self, index: int) -> None:
        self._next_try = None
        address = self._addresses[index % len(self._addresses)]
        ipv6 = isIPv6Address(address[0])
        try:
            protocol = self._protocols.get(ipv6)
            if protocol is None:
                # Raises CannotListenError when out of file descriptors.
                protocol = self._protocols[ipv6] = self._resolver._connectedProtocol(
                    interface="::" if ipv6 else ""
                )
        except Exception:
            self._finish(Failure())
            return
        remaining = max(0.0, self._deadline - self._clock.seconds())
        self._tries_waiting += 1
        asked = protocol.query(address, self._queries, remaining)
        asked.addCallbacks(self._answered, self._try_failed)
        if not self._ended and index + 1 < len(self._timeouts):
            self._next_try = self._clock.callLater(
                self._timeouts[index], self._send, index + 1
            )

    def _answered(self, message: dns.Message) -> None:
        if message.queries == self._queries:
            self._finish(message)
            return
        # An answer to another question (as glibc, not taken as ours: its
        # records are another name's, and read as "no address" it sent
        # operators looking for a missing record). The other tries wait on.
        self._tries_waiting -= 1
        self._wrong = message
        self._tries_ended()

    def _try_failed(self, failure: Failure) -> None:
        self._tries_waiting -= 1
        if not failure.check(dns.DNSQueryTimeoutError):
            # Sending failed (no route, ...): as twisted.names, said at once.
            self._finish(failure)
        else:
            self._tries_ended()

    def _tries_ended(self) -> None:
        if self._tries_waiting or self._next_try is not None:
            return
        if self._wrong is not None:
            self._finish(Failure(AnotherQuestion(self._wrong.queries)))
        else:
            self._finish(Failure(TimeoutError(self._queries)))

    def _finish(self, result: dns.Message | Failure) -> None:
        if self._ended:
            return
        self._end()
        if isinstance(result, Failure):
            self._result.errback(result)
        else:
            self._result.callback(result)

    def _end(self) -> None:
        # Cancelled, answered or failed: no more tries, no timer, no socket.
        self._ended = True
        if self._next_try is not None:
            self._next_try.cancel()
            self._next_try = None
        for protocol in self._protocols.values():
            for _, timer in list((protocol.liveMessages or {}).values()):
                if timer.active():
                    timer.cancel()
            if protocol.transport is not None:
                protocol.transport.stopListening()
        self._protocols = {}

    def messageReceived(self, message: Any, protocol: Any, address: Any = None) -> None:
        # A datagram that answers no query of ours (late, repeated, forged):
        # dropped, without the log line per datagram twisted.names writes.
        pass
