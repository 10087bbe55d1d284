"""
Addresses whose connection attempts time out: one attempt at a time to
each.

A server that stops answering (SIGSTOP, a hung host) with thousands of
instances fills its listen backlog, and from then on every connection
attempt to it runs its whole bound. Each instance connects again once a
second after a failure (`sentinel.reconnects`), so its attempts took all of
the pacer's places (`sentinel.pacing`) and queued thousands more: measured
with 3,000 instances on one stopped server, 200 attempts in flight and
about 2,800 queued, and any other instance that needed a connection
meanwhile (its server restarted, a renewal, an instance added) waited for
a place, more than 15 s.

So once an attempt to an address (IP address and port, and whether over
TLS) timed out, at most one attempt to it is in flight (or in line for
the pacer) at a time, until one ends otherwise: connected, or failed in
any other way (refused, say), which shows that the address answers
again. The other instances on it start none meanwhile, and take no
place: their checks are those of an instance whose attempt waits in line
(`sentinel.probe`). A timeout while the agent ran late counts as well:
the attempt ran its whole bound all the same, and holding an instance
back says nothing of it. If the address's last timeout came while the
agent kept up (`failing`), what a new connection to it meets is that:
a kept connection due for renewal meanwhile fails as its renewal would
have (what new clients meet is the instance's state, `sentinel.probe`),
and so does a held-back check of an instance with no failure of its own
to repeat (never judged, or answered since), which otherwise waited for
its own turn, one attempt's bound per instance before it; if the agent
ran late, a kept connection serves on and such a check says nothing. A
server whose new connections time out while its old ones answer is
still found, each of its instances at its renewal.

An address is kept here from its first timed-out attempt until one answers
or no instance that met it here is left (each is counted until it closes or
its host resolves to another address): at most one entry per address in
use.
"""

from __future__ import annotations

from typing import Any

# Where attempts go: the IP address a host resolved to, the port, and
# over TLS the server name the handshake asks for (SNI), else None. A name
# given ``tls`` on a plain port (a mistake in its config) times out in its
# handshake for good, which says nothing of plain connections there: keyed
# apart, they are not held back by it. Nor are the names one TLS port
# routes to different servers by SNI (a proxy passing TLS through, as
# Kubernetes ingresses for Redis do): a hung or hostile one behind it held
# the others back, its timeouts failing their renewals, and the others'
# handshakes and answers excused its own timeouts.
Address = tuple[str, int, str | None]


class _Stall:
    """One address whose last attempt timed out."""

    __slots__ = ("attempting", "failing", "users")

    def __init__(self) -> None:
        # The error of the last timeout, if the agent kept up meanwhile.
        self.failing: str | None = None
        # The instance (its probe) whose attempt to it is in flight, if any.
        self.attempting: object | None = None
        # The instances that met it: it is forgotten once none is left.
        self.users: set[object] = set()


class StalledAddresses:
    """The addresses whose attempts time out (module docstring), by probe."""

    def __init__(self) -> None:
        self._stalls: dict[Address, _Stall] = {}
        # Attempts not started, or given up before connecting, for
        # /debug/stats.
        self.spared = 0

    def __len__(self) -> int:
        return len(self._stalls)

    def admit(self, address: Address, probe: object) -> bool:
        """
        Whether `probe` may have an attempt to `address` in flight now: if
        the address is stalled, only the first to ask once the last attempt
        ended may, until its attempt ends (`ended`, `timed_out` or
        `answered`).
        """
        stall = self._stalls.get(address)
        if stall is None:
            return True
        stall.users.add(probe)
        if stall.attempting is None or stall.attempting is probe:
            stall.attempting = probe
            return True
        self.spared += 1
        return False

    def timed_out(self, address: Address, probe: object, error: str | None) -> None:
        """
        `probe`'s attempt to `address` timed out: the address is stalled.
        `error` is the failure, if the agent kept up meanwhile (None if it
        ran late: the timeout says nothing of the server).
        """
        stall = self._stalls.get(address)
        if stall is None:
            stall = self._stalls[address] = _Stall()
        stall.failing = error
        stall.users.add(probe)
        if stall.attempting is probe:
            stall.attempting = None

    def failing(self, address: Address) -> str | None:
        """
        The error of `address`'s last timeout if it is stalled and the agent
        kept up meanwhile: what a new connection to it meets now.
        """
        stall = self._stalls.get(address)
        return None if stall is None else stall.failing

    def holds_back(self, address: Address, probe: object) -> bool:
        """
        Whether `probe` would be held back now, another instance's attempt
        to `address` in flight (`admit`'s answer, taking no turn): why its
        checks say nothing, for an operator.
        """
        stall = self._stalls.get(address)
        return stall is not None and stall.attempting not in (None, probe)

    def answered(self, address: Address) -> None:
        """An attempt to `address` connected, or failed other than by a timeout."""
        if self._stalls:
            self._stalls.pop(address, None)

    def ended(self, address: Address, probe: object) -> None:
        """
        `probe`'s attempt ended saying nothing of `address` (given up, or
        ended before it connected): another may start.
        """
        stall = self._stalls.get(address)
        if stall is not None and stall.attempting is probe:
            stall.attempting = None

    def left(self, address: Address, probe: object) -> None:
        """`probe` no longer connects to `address` (closed, or moved)."""
        stall = self._stalls.get(address)
        if stall is None:
            return
        stall.users.discard(probe)
        if stall.attempting is probe:
            stall.attempting = None
        if not stall.users:
            del self._stalls[address]

    def stats(self) -> dict[str, Any]:
        """For /debug/stats (``startup``)."""
        return {"stalled_addresses": len(self._stalls), "connects_spared": self.spared}
