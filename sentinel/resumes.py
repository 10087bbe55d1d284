"""
The agent back from a pause of its own, its ZooKeeper session not yet
heard from since.

A pause of the whole process (SIGSTOP, a virtual machine paused or
migrated, a swap storm) stops kazoo's threads with the reactor's. Back,
the agent's idea of its session is as old as the pause: ZooKeeper may
have expired it meanwhile and deleted every ephemeral node, and kazoo
learns so only once its own thread has read the closed connection (or,
over a path that lost the close, once its ping goes unanswered) and
handed that over. Twisted runs its overdue timers (the tick) before it
reads a socket, so ``/healthz`` answered right after the pause could
find the loop ticked and the state connected: measured, paused 6 s on a
4 s session, 50 instances, the first answer after the SIGCONT was 200
with every node missing in one run of three (BENCHMARKS.rst, the
agent's own pause and /healthz). A stall past the freshness bound
(`sentinel.freshness`) already failed ``/healthz``; a session timeout
below that bound (4 s, or an interval of 2 s and more against the
default 10 s) left the gap.

So once the loop finds it stalled for more than `PAUSE_AT` intervals
(`sentinel.ownstalls`: what the contract allows between two ticks; a
collection or a late turn is shorter, and says nothing), ``/healthz``
fails, naming the pause, until the session is confirmed: a read sent
after the pause answered by ZooKeeper (one is sent at once, again at
each ``/healthz`` while none is in flight, and again at once when one sent
before a later pause is answered), or a connection made since. If the session
ended, the publisher's own reasons take over (lost, then its nodes not
written again since connecting: `sentinel.zkreport`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sentinel.zk import CONNECTED, ZooKeeper

log = Logger()

# Intervals the loop may stall before its session needs confirming.
PAUSE_AT = 2.0


class Resumes:
    """
    The last pause of the agent not yet followed by word from ZooKeeper
    (module docstring), for ``/healthz``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        zk: ZooKeeper,
        path: str,
        interval: Callable[[], float],
    ) -> None:
        """
        @param path: a node to read (its existence) to hear from ZooKeeper.
        @param interval: the loop's interval now.
        """
        self._clock = clock
        self._zk = zk
        self._path = path
        self._interval = interval
        # (began, ended) of the last pause not confirmed since, if any.
        self._paused: tuple[float, float] | None = None
        self._asking = False
        self.pauses = 0

    def stalled(self, began: float, ended: float) -> None:
        """The loop stalled from `began` to `ended` (`OwnStalls.noticed`)."""
        if ended - began <= PAUSE_AT * self._interval():
            return
        self.pauses += 1
        self._paused = (began, ended)
        try:
            self._ask()
        except Exception:
            # Within the loop's tick: asked again at the next /healthz.
            self._asking = False
            log.failure("asking ZooKeeper after the agent's pause")

    def _ask(self) -> None:
        # A read sent now, answered, says the session lives; none sent while
        # not connected (it would fail at once): a connection confirms.
        if self._asking or self._paused is None or self._zk.state != CONNECTED:
            return
        self._asking = True
        sent_after = self._paused[1]

        def answered(_: Any) -> None:
            self._asking = False
            if self._paused is not None and self._paused[1] <= sent_after:
                self._paused = None
            else:
                # A later pause's (it came while this read was out): a read
                # of its own now, not at the next /healthz, whose answer
                # would otherwise be 503 with the session heard from.
                self._ask()

        def failed(failure: Any) -> None:
            # The connection's, which the publisher reports; asked again
            # at the next /healthz.
            self._asking = False

        d = self._zk.exists(self._path)
        d.addCallbacks(answered, failed)
        d.addErrback(
            lambda failure: log.failure("asking ZooKeeper after the agent's pause")
        )

    def unhealthy_reason(self) -> str | None:
        """Why /healthz fails on this account, or None."""
        paused = self._paused
        if paused is None:
            return None
        began, ended = paused
        zk = self._zk
        if zk.state == CONNECTED and zk.state_since > ended:
            # Connected since the pause: the handshake was the answer.
            self._paused = None
            return None
        self._ask()
        return (
            f"the agent was paused {ended - began:.1f} s, until "
            f"{self._clock.seconds() - ended:.1f} s ago: its ZooKeeper session "
            "not heard from since, and ZooKeeper may have ended it and deleted "
            "its nodes"
        )

    def stats(self) -> dict[str, Any]:
        """For /debug/stats."""
        return {"pauses": self.pauses, "unconfirmed": self._paused is not None}
