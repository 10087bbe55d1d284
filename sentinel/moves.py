"""
What the log says when an instance's host name resolves elsewhere.

A connect whose lookup answers another address than the last one says so
(``cache-1: redis.example now resolves to 10.0.0.8 (was 10.0.0.7)``): the
errors that follow are the new address's. A name whose answer flips at
every lookup (a round-robin name, a name server that disagrees with
itself, a hostile one) moves at every connect, and a down instance
connects again once a second: 1,000 such instances on one name wrote
1,000 lines a second. So each instance says a move at once, then at most
one line every `QUIET` seconds: the moves in between are counted, and said
at its first connect past that time, with the address it is checked at
then.
"""

from __future__ import annotations

import math

from twisted.logger import Logger

log = Logger()

# Seconds between two lines about one instance's moves.
QUIET = 60.0


class MoveLog:
    """One instance's lines about its name moving, rate-limited."""

    __slots__ = ("_said_at", "_unsaid")

    def __init__(self) -> None:
        self._said_at = -math.inf
        self._unsaid = 0

    def resolved(
        self, instance: str, host: str, address: str, previous: str, now: float
    ) -> None:
        """
        A connect's lookup of C{host} answered C{address}, and the last one
        C{previous}. A move is said at once if no line was said within
        `QUIET` seconds, else counted; counted moves are said at the first
        lookup past that time, moved or not, so that the log ends on the
        address the instance is checked at.
        """
        moved = address != previous
        if now - self._said_at < QUIET:
            self._unsaid += moved
            return
        if self._unsaid:
            log.info(
                "{instance}: {host} now resolves to {address}, after {unsaid}"
                " more move(s) in the {ago:.0f} s since the last such line",
                instance=instance,
                host=host,
                address=address,
                unsaid=self._unsaid,
                ago=now - self._said_at,
            )
        elif moved:
            log.info(
                "{instance}: {host} now resolves to {address} (was {previous})",
                instance=instance,
                host=host,
                address=address,
                previous=previous,
            )
        else:
            return
        self._said_at = now
        self._unsaid = 0
