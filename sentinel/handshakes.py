"""
Addresses answering the agent's handshakes: when each last completed one.

At a start-up or a mass reconnect the agent opens hundreds of connections
at once, most of them to a few servers, and each one's TLS handshake (or
AUTH) is work for the server process, one after another. On a starved
machine the last in a server's queue waited past its check's deadline, and
its timeout, or that of the first PING on a connection just made (which
the server reads after the handshakes queued ahead of it), was published
as the instance down, at its first check, with no rise/fall (measured:
69-398 healthy instances at a start-up of 3,000 TLS instances, their
server given a sixth of a core, the agent on time).

A server that completed another of the agent's handshakes meanwhile was
answering: the wait was its queue of the agent's own connections, and
such a timeout is inconclusive (`sentinel.probe`). A dead, hung or
stopped server completes none, and is still found as before. A plain TCP
connect proves nothing of the process (the kernel completes it from the
listen backlog of a stopped server), so only what the server process
itself answers counts: a TLS handshake, AUTH.

Only the last completion per address is kept, and addresses without one
for `KEEP` seconds are forgotten (their evidence older than any check it
could excuse): at most one entry per address in use.
"""

from __future__ import annotations

import math

from twisted.internet.interfaces import IReactorTime

from sentinel.stalls import Address

# Seconds a completion is kept as evidence: more than an attempt's bound
# and a check's timeout together, at the default settings and well beyond.
KEEP = 30.0


class Handshakes:
    """When each address last completed a handshake with the agent."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._completed: dict[Address, float] = {}
        self._pruned_at = clock.seconds()

    def __len__(self) -> int:
        return len(self._completed)

    def completed(self, address: Address) -> None:
        """A handshake (TLS or AUTH) with `address` completed now."""
        now = self._clock.seconds()
        self._completed[address] = now
        if now - self._pruned_at > KEEP:
            self._pruned_at = now
            self._completed = {
                known: at for known, at in self._completed.items() if now - at <= KEEP
            }

    def since(self, address: Address, since: float) -> bool:
        """Whether `address` completed a handshake after `since`."""
        return self._completed.get(address, -math.inf) > since
