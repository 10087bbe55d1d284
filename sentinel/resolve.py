"""
Host names resolved once and cached, so that no check waits on a lookup.

Lookups go through the reactor's resolver (a thread pool): a check must
never do one, and a host shared by many instances is looked up once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver
from zope.interface import implementer

CACHE_SECONDS = 60.0


@implementer(IResolutionReceiver)
class _Collector:
    def __init__(self) -> None:
        self.addresses: list[str] = []

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        pass


class Resolver:
    """Resolves a host to one address, caching answers for `CACHE_SECONDS`."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._cache: dict[str, tuple[str, float]] = {}
        self._waiting: dict[str, list[Deferred[str]]] = {}

    def resolve(self, host: str) -> Deferred[str]:
        """An address for `host`; literal addresses are returned as they are."""
        if isIPAddress(host) or isIPv6Address(host):
            return succeed(host)
        cached = self._cache.get(host)
        if cached is not None and cached[1] > self._reactor.seconds():
            return succeed(cached[0])
        d: Deferred[str] = Deferred(lambda d: self._waiting[host].remove(d))
        waiters = self._waiting.setdefault(host, [])
        waiters.append(d)
        if len(waiters) == 1:
            self._lookup(host)
        return d

    def _lookup(self, host: str) -> None:
        collector = _Collector()

        def complete() -> None:
            waiters = self._waiting.pop(host, [])
            if not collector.addresses:
                for d in waiters:
                    d.errback(DNSLookupError(f"cannot resolve {host}"))
                return
            # Prefer IPv4, as most Redis deployments listen there.
            address = sorted(collector.addresses, key=lambda a: ":" in a)[0]
            self._cache[host] = (address, self._reactor.seconds() + CACHE_SECONDS)
            for d in waiters:
                d.callback(address)

        collector.resolutionComplete = complete  # type: ignore[method-assign]
        self._reactor.nameResolver.resolveHostName(collector, host)
