"""
Descriptors to spare for a connection's renewal (`sentinel.probe`).

The open-file limit is checked for one connection per instance, with
`sentinel.process.FD_RESERVE` beyond them for HTTP clients, ZooKeeper and
name lookups. A renewal holds a second connection for a while: from its
connect until the new connection answers PING, about a round, and for
longer when it failed (the old one is held unused). Instances connected
together at start-up renew within the same quarter of `reconnect_every`:
at 3,000 instances with the open-file limit at the least the agent
accepts, the first wave of renewals took every descriptor left (1,614
checks found no socket and were inconclusive, ``/healthz`` failed), with no
HTTP client at all; at 1,000, 64 idle HTTP clients were enough.

So a renewal starts only while a descriptor is to spare beyond `keep` (what
HTTP clients, lookups and ZooKeeper may still take): the descriptors open
are counted (a stat of ``/proc/self/fd``, about 1 µs; a listing before
Linux 6.2) at most every `RECOUNT` seconds, and each renewal started takes
one of those left until the next count, which sees what the renewals hold.
A renewal refused waits for a later check, the kept connection serving
meanwhile, as when the pacer has no room. Where the descriptors cannot be
counted, nothing is refused.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

# Seconds a count of the open descriptors is used for.
RECOUNT = 0.25


def soft_limit() -> float:
    """The open-file soft limit (infinite when there is none)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return math.inf if soft == resource.RLIM_INFINITY else float(soft)


class SpareDescriptors:
    """
    Whether a renewal may take a descriptor now (the module docstring):
    `count` gives the descriptors open (None when it cannot tell), `limit`
    the open-file limit, and `keep` how many must stay free for others.
    """

    def __init__(
        self,
        clock: IReactorTime,
        count: Callable[[], int | None] = lambda: None,
        keep: int = 0,
        limit: Callable[[], float] = soft_limit,
    ) -> None:
        self._clock = clock
        self._count = count
        self._keep = keep
        self._limit = limit
        self._spare = math.inf
        self._counted_at = -math.inf
        # Renewals put off for want of a descriptor, for /debug/stats.
        self.refused = 0

    def take(self) -> bool:
        """Whether a renewal may start now; if so, one descriptor is taken."""
        now = self._clock.seconds()
        # A count from the future: the wall clock stepped back.
        if not 0.0 <= now - self._counted_at < RECOUNT:
            self._counted_at = now
            used = self._count()
            if used is None:
                self._spare = math.inf
            else:
                self._spare = self._limit() - self._keep - used
        if self._spare < 1:
            self.refused += 1
            return False
        self._spare -= 1
        return True
