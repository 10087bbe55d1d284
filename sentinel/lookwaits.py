"""
Discovery members that wait for a look at their service, logged one line
per burst with a count, not one line per member.

A member's write ends with `sentinel.discovery.Looking` while it waits for
a look at its parent: for the member a failed create may have made, or for
the previous primary's member, which it replaces. Nothing has failed: the
write is tried again once the look is done. But they come many at once:
after ``deleteall /sentinel`` under a group of three (60 instances,
``replicas = 2``), every member whose instance's node was taken over waited
so, and each said ``ZooKeeper write failed, will retry: ... Looking`` on a
line of its own (5 to 10 per agent; its parent in the message made each
error new to the write queue's once-per-error rule), thousands at a
fleet's size.

So the first member to wait starts a burst, logged `GATHER` seconds later
(a look's reads are answered within that, as a rule) as one line: how many
members waited, under how many services, and the first of them. Lines come
at most one a `LOG_EVERY`; the members that wait meanwhile go into the
next line. They still count as the write queue's failed writes
(``writes.error``) and, waiting long, as ``failing`` on ``/healthz``: only
the log changes.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from sentinel.nodes import LOG_NAMESPACE

log = Logger(namespace=LOG_NAMESPACE)

# Seconds from the first member of a burst to its line.
GATHER = 1.0

# Seconds between two lines, at least.
LOG_EVERY = 60.0


class LookWaits:
    """The members waiting for looks since the last line (module docstring)."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._members = 0
        self._services: set[str] = set()
        self._first: tuple[str, str] | None = None
        self._logged_at = float("-inf")
        self._line: IDelayedCall | None = None

    def waiting(self, parent: str, sought: str) -> None:
        """A member under `parent` waits for a look there, for `sought`."""
        self._members += 1
        self._services.add(parent)
        if self._first is None:
            self._first = (parent, sought)
        if self._line is None:
            now = self._clock.seconds()
            at = max(now + GATHER, self._logged_at + LOG_EVERY)
            self._line = self._clock.callLater(at - now, self._log)

    def stop(self) -> None:
        """No line from now on (stopping)."""
        if self._line is not None and self._line.active():
            self._line.cancel()
        self._line = None

    def _log(self) -> None:
        self._line = None
        first = self._first
        if first is None:
            return
        log.info(
            "{members} discovery member(s) under {services} service(s) waited"
            " for a look at their service (the first: {parent}, for {sought});"
            " each is written once its look is done",
            members=self._members,
            services=len(self._services),
            parent=first[0],
            sought=first[1],
        )
        self._logged_at = self._clock.seconds()
        self._members = 0
        self._services = set()
        self._first = None
