"""
twisted.names' client as `sentinel.lookup` uses it: ``queryUDP`` to the
name servers it is given, one UDP socket per query (for all its tries), or
one for the queries sent together (`QuerySockets`: a name's A and AAAA),
quietly.

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

A truncated answer (TC set) is asked again over TCP (`query_tcp`), of the
name server that sent it, as glibc does, but not as twisted.names does it:
its ``queryTCP`` has no way to cancel, shares one connection among
queries, and waits up to 30 s for each connect. Here each query has its own
connection, made and ended within the lookup's bound (cancelling the query
aborts it), and the first message read ends it: a name server that
trickles, stalls or floods over TCP costs one socket, one message read and
the lookup's bound, no more. `sentinel.resolve` bounds how many lookups
(and so connections) are in flight.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, TypeVar

from twisted.internet import base, udp
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.error import CannotListenError, NotConnectingError
from twisted.internet.interfaces import IConnector, IDelayedCall
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import ClientFactory, connectionDone
from twisted.names import client, dns
from twisted.protocols.basic import Int16StringReceiver
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
        return self.ask(queries, timeout).addCallback(lambda answered: answered[0])

    def ask(
        self,
        queries: list[dns.Query],
        timeout: Sequence[float] | None = None,
        sockets: QuerySockets | None = None,
    ) -> Deferred[tuple[dns.Message, tuple[str, int]]]:
        """
        As `queryUDP`, firing with the answer and the name server that sent
        it (to ask it again over TCP, if the answer is truncated). Queries
        given the same `sockets` (`sockets()`) share them.
        """
        addresses = self.servers + list(self.dynServers)
        if not addresses:
            return fail(OSError("No domain name servers available"))
        chosen = self.timeout if timeout is None else timeout
        timeouts = tuple(float(seconds) for seconds in chosen or ())
        shared = QuerySockets(self) if sockets is None else sockets
        return _Tries(shared, queries, timeouts, addresses).start()

    def sockets(self) -> QuerySockets:
        """Sockets for queries sent together (a name's A and AAAA)."""
        return QuerySockets(self)

    def messageReceived(self, message: Any, protocol: Any, address: Any = None) -> None:
        """
        Drop a datagram that answers no query in flight (late, repeated,
        forged), without the log line per datagram twisted.names writes: a
        socket of a name's A and AAAA outlives the one answered first.
        """

    def query_tcp(
        self, address: tuple[str, int], queries: list[dns.Query], timeout: float
    ) -> Deferred[dns.Message]:
        """
        Ask `queries` of the name server at `address` over a TCP connection
        of their own, and fire with its answer; see the module docstring.
        """
        return _TCPQuery(self._reactor, address, queries, timeout).start()


class AnotherQuestion(Exception):
    """Every answer to a query was to another question (the first arg)."""


class TCPAnswerUnreadable(Exception):
    """The name server (the first arg) answered over TCP with no DNS message."""


_T = TypeVar("_T")


def _fire(d: Deferred[_T], result: _T | Failure) -> None:
    """Fire `d` with `result`: its callback, or its errback if a failure."""
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


class QuerySockets:
    """
    The UDP sockets of queries sent together (a name's A and AAAA, as glibc
    sends both from one socket): one per address family of the name
    servers, opened at its first try, closed when the last query that
    uses them ends. A lookup thus holds one socket (two with name servers
    of both families), however many questions it asks.
    """

    def __init__(self, resolver: NameServers) -> None:
        self.resolver = resolver
        self._protocols: dict[bool, dns.DNSDatagramProtocol] = {}
        self._users = 0

    def joined(self) -> None:
        """A query uses these sockets until it calls `left`."""
        self._users += 1

    def protocol(self, ipv6: bool) -> dns.DNSDatagramProtocol:
        """
        The socket for name servers of that family.

        @raise CannotListenError: when out of file descriptors.
        """
        protocol = self._protocols.get(ipv6)
        if protocol is None:
            protocol = self._protocols[ipv6] = self.resolver._connectedProtocol(
                interface="::" if ipv6 else ""
            )
        return protocol

    def left(self, asked: list[Deferred[dns.Message]]) -> None:
        """
        A query ended: its tries (`asked`) wait no more, and the sockets
        close if it was the last to use them.
        """
        for protocol in self._protocols.values():
            live = protocol.liveMessages or {}
            for query_id, (d, timer) in list(live.items()):
                if any(d is mine for mine in asked):
                    if timer.active():
                        timer.cancel()
                    del live[query_id]
        self._users -= 1
        if self._users:
            return
        for protocol in self._protocols.values():
            if protocol.transport is not None:
                protocol.transport.stopListening()
        self._protocols = {}


class _Tries:
    """One `NameServers.queryUDP`: its tries, sockets and deadline."""

    def __init__(
        self,
        sockets: QuerySockets,
        queries: list[dns.Query],
        timeouts: tuple[float, ...],
        addresses: list[tuple[str, int]],
    ) -> None:
        self._sockets = sockets
        self._queries = queries
        self._timeouts = timeouts
        self._addresses = addresses
        self._clock = sockets.resolver._reactor
        self._deadline = self._clock.seconds() + sum(timeouts)
        self._result: Deferred[tuple[dns.Message, tuple[str, int]]] = Deferred(
            lambda _: self._end()
        )
        # Each try's Deferred, to stop waiting for those unanswered.
        self._asked: list[Deferred[dns.Message]] = []
        self._tries_waiting = 0
        self._next_try: IDelayedCall | None = None
        # The last answer that was to another question, if any.
        self._wrong: dns.Message | None = None
        self._ended = False
        sockets.joined()

    def start(self) -> Deferred[tuple[dns.Message, tuple[str, int]]]:
        """Send the first try; the Deferred fires as `NameServers.ask` says."""
        self._send(0)
        return self._result

    def _send(self, index: int) -> None:
        self._next_try = None
        address = self._addresses[index % len(self._addresses)]
        try:
            protocol = self._sockets.protocol(isIPv6Address(address[0]))
        except Exception:
            self._finish(Failure())
            return
        remaining = max(0.0, self._deadline - self._clock.seconds())
        self._tries_waiting += 1
        asked = protocol.query(address, self._queries, remaining)
        self._asked.append(asked)
        asked.addCallbacks(self._answered, self._try_failed, callbackArgs=(address,))
        if not self._ended and index + 1 < len(self._timeouts):
            self._next_try = self._clock.callLater(
                self._timeouts[index], self._send, index + 1
            )

    def _answered(self, message: dns.Message, address: tuple[str, int]) -> None:
        if message.queries == self._queries:
            self._finish((message, address))
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

    def _finish(self, result: tuple[dns.Message, tuple[str, int]] | Failure) -> None:
        if not self._ended:
            self._end()
            _fire(self._result, result)

    def _end(self) -> None:
        # Cancelled, answered or failed: no more tries, no timer, and the
        # sockets closed unless another query still uses them.
        if self._ended:
            return
        self._ended = True
        if self._next_try is not None:
            self._next_try.cancel()
            self._next_try = None
        self._sockets.left(self._asked)


class _TCPQuery(Int16StringReceiver):
    """
    One query over one TCP connection (`NameServers.query_tcp`): connected,
    asked, and ended by the first message read, the time being up, or a
    cancel.
    """

    def __init__(
        self,
        reactor: Any,
        address: tuple[str, int],
        queries: list[dns.Query],
        timeout: float,
    ) -> None:
        self._reactor = reactor
        self._address = address
        self._query = dns.Message(id=random.randrange(65536), recDes=1)
        self._query.queries = queries
        self._timeout = timeout
        self._result: Deferred[dns.Message] = Deferred(lambda _: self._end())
        self._connector: IConnector | None = None
        self._timer: IDelayedCall | None = None
        self._ended = False

    def start(self) -> Deferred[dns.Message]:
        """Connect and ask; the Deferred fires with the answer."""
        factory = _OneConnection(self)
        self._timer = self._reactor.callLater(
            self._timeout, self._finish, Failure(TimeoutError([self._query]))
        )
        host, port = self._address
        self._connector = self._reactor.connectTCP(
            host, port, factory, timeout=max(self._timeout, 0.001)
        )
        return self._result

    def connectionMade(self) -> None:
        """Send the query."""
        self.sendString(self._query.toStr())

    def stringReceived(self, data: bytes) -> None:
        """The first message: the answer, or a reason to give up."""
        message = dns.Message()
        try:
            message.fromStr(data)
        except (EOFError, ValueError):
            self._finish(Failure(TCPAnswerUnreadable(self._address)))
            return
        if message.id != self._query.id or message.queries != self._query.queries:
            self._finish(Failure(AnotherQuestion(message.queries)))
            return
        self._finish(message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Closed before an answer: that is the query's end."""
        self._finish(reason)

    def _finish(self, result: dns.Message | Failure) -> None:
        if not self._ended:
            self._end()
            _fire(self._result, result)

    def _end(self) -> None:
        # Answered, failed, timed out or cancelled: no timer, no connection.
        self._ended = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
        elif self._connector is not None:
            try:
                self._connector.stopConnecting()
            except NotConnectingError:
                pass  # It failed already.


class _OneConnection(ClientFactory):
    """The factory of one `_TCPQuery`'s connection: the query is its protocol."""

    def __init__(self, query: _TCPQuery) -> None:
        self._query = query

    def buildProtocol(self, addr: Any) -> _TCPQuery:
        """The query itself."""
        self._query.factory = self
        return self._query

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        """The query fails with why it could not connect."""
        self._query._finish(reason)
