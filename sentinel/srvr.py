"""
What a ZooKeeper server says of itself when asked ``srvr``, ZooKeeper's
four-letter word that every server answers by default (the only one in
the default ``4lw.commands.whitelist``): whether it serves, and its last
transaction id.

The bridge asks it of a server that closed a client's handshake in an
outage (`sentinel.zk`): such a server runs, but will not serve that
client, and only its own word says why. An ensemble without a quorum
answers that it is "not currently serving requests"; a server that
serves, with a transaction id lower than the client has seen, lost those
transactions (ZooKeeper wiped and started again empty) and refuses that
client for good, whatever it waits.

One short TCP connection, to the address the client's connect reached
(no name to look up), ended by the server once it has answered, and by
`SRVR_TIMEOUT` at the latest: a server that accepted a handshake and
closed it answers at once. The answer is at most `SRVR_MAX_BYTES` (a few
hundred bytes in practice); more is no answer of ZooKeeper's.
"""

from __future__ import annotations

from typing import Any

import attr
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

# Seconds the whole exchange may take.
SRVR_TIMEOUT = 2.0

# Bytes of answer kept; a longer one is not ZooKeeper's.
SRVR_MAX_BYTES = 4096

# The modes of a server that serves clients.
SERVING_MODES = frozenset({"standalone", "leader", "follower", "observer"})


@attr.frozen
class ServerSays:
    """A server's answer to ``srvr``: its mode and last transaction id."""

    mode: str | None
    zxid: int | None

    @property
    def serving(self) -> bool:
        """Whether it said it serves clients, with a transaction id."""
        return self.mode in SERVING_MODES and self.zxid is not None


def parse_srvr(answer: bytes) -> ServerSays:
    """The mode and zxid in a ``srvr`` answer (None for what it lacks)."""
    mode = zxid = None
    for line in answer.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Mode":
            mode = value
        elif key == "Zxid":
            try:
                zxid = int(value, 16)
            except ValueError:
                zxid = None
    return ServerSays(mode, zxid)


class _SrvrProtocol(Protocol):
    """Sends ``srvr`` and keeps the answer until the server closes."""

    def __init__(self, done: Deferred[bytes]) -> None:
        self._done = done
        self._answer = bytearray()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(b"srvr")

    def dataReceived(self, data: bytes) -> None:
        self._answer += data
        if len(self._answer) > SRVR_MAX_BYTES:
            assert self.transport is not None
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._done.called:
            return
        if len(self._answer) > SRVR_MAX_BYTES:
            self._done.errback(ValueError("srvr answer too long"))
        else:
            self._done.callback(bytes(self._answer))


def ask_srvr(reactor: Any, host: str, port: int) -> Deferred[ServerSays]:
    """
    Ask the server at `host` (an address) and `port` ``srvr``; fails if it
    cannot be reached or has not answered within `SRVR_TIMEOUT`.
    """
    endpoint_type = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
    endpoint = endpoint_type(reactor, host, port, timeout=SRVR_TIMEOUT)
    answered: Deferred[bytes] = Deferred()
    protocols: list[Protocol] = []

    def build() -> Protocol:
        protocol = _SrvrProtocol(answered)
        protocols.append(protocol)
        return protocol

    connecting = endpoint.connect(Factory.forProtocol(build))

    def not_connected(failure: Failure) -> None:
        if not answered.called:
            answered.errback(failure)

    connecting.addErrback(not_connected)

    def cancelled(result: object) -> object:
        # Timed out: nothing of the exchange is left behind.
        connecting.cancel()
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
        return result

    answered.addTimeout(SRVR_TIMEOUT, reactor)
    answered.addErrback(cancelled)
    return answered.addCallback(parse_srvr)
