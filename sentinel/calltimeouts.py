"""
A ZooKeeper call's timeout, judged after the answers already handed over.

kazoo hands a call's answer to the reactor thread with ``callFromThread``,
and Twisted runs those at the start of a turn, then the timers due. An
agent that stalls itself (SIGSTOP, a long collection, a starved CPU) past
a call's timeout wakes with the timer due and the answer unread:
ZooKeeper answered meanwhile, but kazoo's threads, stalled too, read it
and hand it over only while the reactor thread runs its timers. With
``Deferred.addTimeout`` every such call failed (`benchmarks/lostanswers.py
--mode calls`: every call in flight at the stall, each of its sets then
retried, refused at the version it had already moved, read back and set
again, and a warning logged), the same trap the check path judges its
deadlines around (`sentinel.deadlines`).

So a call's timer does not fail the call itself; the call is judged:

- one reactor turn later (a timer of 0 s runs after the next turn's
  hand-overs), when the timer ran on time: what kazoo handed over while
  the reactor ran this turn's timers is delivered first;
- `JUDGED_LATE` later, once, when the timer ran more than that late (the
  agent stalled): kazoo's threads have had that long to read what came
  while they slept. However late that judgement runs, it fails the call.

A ZooKeeper that does not answer still fails every call: an agent on
time fails it one turn after the call timeout, as before; one that
stalled fails it `JUDGED_LATE` after the timer ran, which is at most
that much after the agent woke.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

# Seconds late a call's timer may run before its judgement waits as long
# again for kazoo's hand-overs (module docstring).
JUDGED_LATE = 1.0

T = TypeVar("T")


def time_out(
    d: Deferred[T],
    timeout: float,
    clock: IReactorTime,
    timed_out: Callable[[], object] | None = None,
) -> Deferred[T]:
    """
    Fail `d` with ``TimeoutError`` once `timeout` seconds have passed and
    it was judged (module docstring) without having fired, by cancelling
    it, as ``Deferred.addTimeout`` does; `timed_out` is told first.
    """
    CallTimeout(d, timeout, clock, timed_out)
    return d


class CallTimeout:
    """
    `time_out`'s timer on one Deferred, which can be started again: a call
    that waited for room under one bound gets its call timeout when it is
    sent (`sentinel.zk`).
    """

    def __init__(
        self,
        d: Deferred[Any],
        timeout: float,
        clock: IReactorTime,
        timed_out: Callable[[], object] | None = None,
    ) -> None:
        self._d = d
        self._clock = clock
        self._timed_out = timed_out
        self._expired = False
        self.timeout = timeout
        self._call: IDelayedCall | None = clock.callLater(timeout, self._due)
        d.addBoth(self._converted).addBoth(self._ended)

    def restart(self, timeout: float) -> None:
        """Fail `d` `timeout` seconds from now instead, unless it has fired."""
        if self._d.called:
            return
        self._cancel()
        self.timeout = timeout
        self._call = self._clock.callLater(timeout, self._due)

    def _due(self) -> None:
        assert self._call is not None
        late = self._clock.seconds() - self._call.getTime()
        self._call = self._clock.callLater(
            JUDGED_LATE if late > JUDGED_LATE else 0.0, self._judge
        )

    def _judge(self) -> None:
        self._call = None
        self._expired = True
        if self._timed_out is not None:
            self._timed_out()
        self._d.cancel()

    def _converted(self, result: Any) -> Any:
        if self._expired and isinstance(result, Failure):
            result.trap(CancelledError)
            raise TimeoutError(self.timeout, "Deferred")
        return result

    def _ended(self, result: Any) -> Any:
        self._cancel()
        return result

    def _cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
