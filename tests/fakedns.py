"""
A tiny name server for tests: twisted.names' server on a free loopback UDP
port, answering from memory, and counting what it is asked.

Names in `addresses` are answered (A and AAAA records from the addresses
given, ``ttl`` seconds), names in `aliases` with a CNAME, names in
`black_hole` never (the query is dropped), names in `refused` with REFUSED;
any other name is NXDOMAIN. Everything can change while it runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.names import common, dns, error, server


class _Zone(common.ResolverBase):
    """The in-memory authority behind `FakeNameServer`."""

    def __init__(self, names: FakeNameServer) -> None:
        super().__init__()
        self._names = names

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> Deferred[Any]:
        text = name.decode("ascii").lower()
        records = []
        alias = self._names.aliases.get(text)
        if alias is not None:
            records.append(
                dns.RRHeader(
                    name, dns.CNAME, dns.IN, self._names.ttl,
                    dns.Record_CNAME(alias, self._names.ttl),
                )
            )  # fmt: skip
            text = alias
        elif text not in self._names.addresses:
            return fail(error.DomainError(name))
        for address in self._names.addresses.get(text, []):
            ipv6 = ":" in address
            if type != (dns.AAAA if ipv6 else dns.A):
                continue
            record = (dns.Record_AAAA if ipv6 else dns.Record_A)(
                address, self._names.ttl
            )
            records.append(dns.RRHeader(text, type, dns.IN, self._names.ttl, record))
        return succeed((records, [], []))


class _Factory(server.DNSServerFactory):
    def __init__(self, names: FakeNameServer) -> None:
        super().__init__(authorities=[_Zone(names)])
        self._names = names

    def messageReceived(
        self, message: dns.Message, proto: Any, address: Any = None
    ) -> None:
        if not message.queries:
            return
        name = message.queries[0].name.name.decode("ascii").lower()
        self._names.queries[name] += 1
        if name in self._names.black_hole:
            return
        super().messageReceived(message, proto, address)

    def allowQuery(self, message: dns.Message, protocol: Any, address: Any) -> bool:
        # Refused queries are answered REFUSED by the factory itself.
        name = message.queries[0].name.name.decode("ascii").lower()
        return name not in self._names.refused


class FakeNameServer:
    """See the module docstring; `start` before use, `stop` after."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.addresses: dict[str, list[str]] = {}
        self.aliases: dict[str, str] = {}
        self.black_hole: set[str] = set()
        self.refused: set[str] = set()
        self.ttl = 60
        self.queries: Counter[str] = Counter()
        self._port: IListeningPort | None = None

    def start(self) -> FakeNameServer:
        """Listen on a free loopback UDP port."""
        protocol = dns.DNSDatagramProtocol(_Factory(self), reactor=self._reactor)
        self._port = self._reactor.listenUDP(0, protocol, interface="127.0.0.1")
        return self

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens, as ``[dns] nameservers`` takes it."""
        assert self._port is not None
        return "127.0.0.1", self._port.getHost().port

    def stop(self) -> Deferred[None] | None:
        """Stop listening."""
        port, self._port = self._port, None
        return None if port is None else port.stopListening()
