"""
Fired watches set again at a pace: the read that sets a node's watch
again is made `after` seconds after it fired, with every other fired
meanwhile, at most `in_flight` of them asked at once, the rest waiting
here in order.

Our own writes fire our data watches (`sentinel.guard`'s on opinions and
members, `sentinel.writewatch`'s on instance nodes): a rack going down
fires hundreds at once, and set again at once they would go ahead of a
verdict's reads; a client writing a node in a loop would cost a read for
each of its writes. Paced, a node is read at most once per `after`,
however often its watch fires, and a burst waits here, not in the
bridge's queues.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from sentinel.bugs import InternalErrors
from sentinel.nodes import Node


class PacedReads:
    """Nodes whose watch fired, read again when paced (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        after: float,
        in_flight: int,
        read: Callable[[Node], Deferred[Any] | None],
        acting: Callable[[], bool],
        bugs: InternalErrors,
    ) -> None:
        """
        @param read: sets the node's watch again: the read's Deferred, or
            None if none is asked (the node is no longer to be watched).
        @param acting: whether reads are made now (running, not halted).
        @param bugs: where a `read` that raises is counted and logged (at
            most one traceback a minute: it may meet every node).
        """
        self._reactor = reactor
        self._after = after
        self._in_flight = in_flight
        self._read = read
        self._acting = acting
        self._bugs = bugs
        self._fired: dict[Node, None] = {}
        self._call: IDelayedCall | None = None
        self._waiting: dict[Node, None] = {}
        self._reads = 0
        self._reading = False

    def __contains__(self, node: Node) -> bool:
        """Whether `node`'s watch fired and is to be set again here."""
        return node in self._fired or node in self._waiting

    def fired(self, node: Node) -> None:
        """`node`'s watch fired: read it again at the next pace."""
        if not self._acting():
            # Stopping or halted: what is read would not be acted on, and a
            # timer set now would outlive the stop's cancel.
            return
        self._fired[node] = None
        if self._call is None:
            self._call = self._reactor.callLater(self._after, self._due)

    def cancel(self) -> None:
        """Read nothing more (stopping, halted, or the connection changed)."""
        self._fired.clear()
        self._waiting.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _due(self) -> None:
        self._call = None
        fired, self._fired = self._fired, {}
        if not self._acting():
            return
        self._waiting.update(fired)
        self._next()

    def _next(self) -> None:
        # The reads in flight end on their own (answered, or the bridge's
        # timeout), whatever happened since: each makes room for the next.
        # One loop asks them all: a read failed at once (not connected)
        # asking the next from within its own end would nest a call per
        # node waiting.
        if self._reading:
            return
        self._reading = True
        try:
            while self._waiting and self._reads < self._in_flight:
                node = next(iter(self._waiting))
                del self._waiting[node]
                try:
                    d = self._read(node)
                except Exception:
                    # A bug reading one node: said, and the others still
                    # read (raised, it left every node behind it waiting
                    # for the next watch to fire, its watch not set again).
                    self._bugs.record("setting a watch again", node.path, Failure())
                    continue
                if d is not None:
                    self._reads += 1
                    d.addBoth(self._ended)
        finally:
            self._reading = False

    def _ended(self, _: object) -> None:
        self._reads -= 1
        if self._acting():
            self._next()
