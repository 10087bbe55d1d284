"""
Where the bridge's calls spend their time, by kind (`sentinel.zk`): how
long each waited here for room, how long ZooKeeper took to answer it once
handed to kazoo, and how long its answer then waited for the reactor
thread.

A view change's reads were slow, and the sampled oldest wait
(``calls_waiting_oldest``) told that a read waited, not whether the time
went to the bridge's own bounds (a kind's room in kazoo's hands, which
the bridge decides), to ZooKeeper and the link (the calls ahead of it in
the session's one queue there), or to the agent's CPU (an answer heard
by kazoo's thread, not yet taken by the reactor's). Each is summed here
per kind, with the number of calls, so that a reader of two
``/debug/stats`` takes the mean over the time between them. Counting
costs a few additions a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TimeSpent:
    """Sums per kind of call (module docstring), cumulative."""

    def __init__(self, kinds: Sequence[str]) -> None:
        self._kinds = tuple(kinds)
        count = len(self._kinds)
        # Handed to kazoo, and the seconds they waited here first.
        self._sent = [0] * count
        self._waited = [0.0] * count
        # Answered, the seconds ZooKeeper took (hand-over to kazoo's
        # thread hearing it), and those the reactor took to get to them.
        self._answered = [0] * count
        self._zookeeper = [0.0] * count
        self._reactor = [0.0] * count

    def sent(self, rank: int, waited: float) -> None:
        """A call of kind `rank` handed to kazoo after `waited` seconds here."""
        self._sent[rank] += 1
        self._waited[rank] += waited

    def answered(self, rank: int, zookeeper: float, reactor: float) -> None:
        """
        A call of kind `rank` answered: `zookeeper` seconds from its
        hand-over to kazoo's thread hearing it, `reactor` more to the
        reactor thread taking it.
        """
        self._answered[rank] += 1
        self._zookeeper[rank] += zookeeper
        self._reactor[rank] += reactor

    def stats(self) -> dict[str, dict[str, Any]]:
        """The sums, by kind, for /debug/stats (kinds never used left out)."""
        return {
            kind: {
                "sent": self._sent[rank],
                "waited_seconds": round(self._waited[rank], 3),
                "answered": self._answered[rank],
                "zookeeper_seconds": round(self._zookeeper[rank], 3),
                "reactor_seconds": round(self._reactor[rank], 3),
            }
            for rank, kind in enumerate(self._kinds)
            if self._sent[rank]
        }
