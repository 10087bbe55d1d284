"""
Long HTTP answers, rendered a slice per reactor turn and written only as
fast as the client reads them.

At 10,000 instances one render of the status page held the reactor for half
a second, and twenty clients looping over the big pages made healthy checks
time out. So every answer that grows with the instances is an iterator of
slices: each ``next()`` renders a bounded amount of work (a few
milliseconds at most, see the slice sizes of its module) and returns the
bytes to write. One `Cooperator` runs the slices of every answer in
progress, one slice per reactor turn whoever asked: between two slices the
reactor reads every socket that is ready, so a check waits for at most one
slice, however many clients there are.

Each answer is a push producer registered on its request. When the
client's socket buffer is full, the transport pauses it and nothing more is
rendered until the client reads (a client that never reads costs one
buffer, not the whole answer, however long it waits). A client that reads
too slowly over the answer's life is disconnected (Twisted resumes an
answer each time its buffer has gone out, so reading a little now and
then would hold a 4.7 MB answer, its connection and its place for hours):
once the client has left its answer waiting `STALL_TIMEOUT` seconds in
all, it must have taken `MIN_READ_RATE` bytes for each further second it
leaves it waiting. That budget alone bounds a pause: a client that reads
nothing more is dropped when it runs out (60 s, plus a second for every
4 KB it has taken). No single pause is bounded apart: a pause costs only
time, never memory, and a client that reads in bursts (a scraper paused
by its GC, a laptop asleep) is no slow reader; one dropped after 60 s
at a stretch lost its whole answer, where a trickle of a byte a minute
escaped that rule. Only the time its answer waits on it counts, never
the time the agent takes to render; bytes count once written to the
connection, whose buffers keep them within about 0.4 MB of what the
client has read (`sentinel.httpd.SEND_BUFFER`). A client that goes away stops the
rendering at once: no work for nobody. A bug while rendering is logged,
and the connection is aborted so that the client sees a truncated answer,
never a complete-looking one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.task import Cooperator, TaskStopped
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from zope.interface import implementer

log = Logger()

# Seconds in all an answer may wait for its client to read before the
# client must show `MIN_READ_RATE`: the idle timeout of a connection (see
# `sentinel.httpd.IDLE_TIMEOUT`), which Twisted suspends while an answer
# is being written.
STALL_TIMEOUT = 60.0
# Bytes a second a client must read, on average, of an answer it leaves
# waiting beyond `STALL_TIMEOUT` in all: 32 kbit/s, half of the slowest
# link worth serving (curl over 64 kbit/s reads /instances at 10,000
# instances, 4.7 MB, in about 10 minutes, its answer waiting on it all
# along); a client reading just this fast holds that answer for 20
# minutes at most, and a client reading less is dropped once its answer
# has waited on it 60 s plus a second for every 4 KB written to it.
MIN_READ_RATE = 4096.0

# One rendered slice of an answer: the bytes to write (empty when the slice
# only prepared work, such as a pass over the instances).
Slices = Iterator[bytes]
# Runs a function later, on another reactor turn.
Scheduler = Callable[[Callable[[], None]], IDelayedCall]


def _one_slice_per_turn() -> Callable[[], bool]:
    # The Cooperator asks after each slice whether this turn is over: always.
    return lambda: True


class Slicer:
    """
    Runs the slices of every long answer, one per reactor turn, and keeps
    figures for ``/debug/stats``: answers in progress, slices rendered, the
    slowest slice, answers dropped because their client stopped reading.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        stall_timeout: float = STALL_TIMEOUT,
        min_read_rate: float = MIN_READ_RATE,
        timer: Callable[[], float] = time.perf_counter,
        scheduler: Scheduler | None = None,
    ) -> None:
        """
        `timer` measures slices; `scheduler` runs the next slice (by
        default, on the reactor's next turn).
        """
        self._reactor = reactor
        self.stall_timeout = stall_timeout
        self.min_read_rate = min_read_rate
        self._timer = timer
        self._cooperator = Cooperator(
            terminationPredicateFactory=_one_slice_per_turn,
            scheduler=scheduler or (lambda work: reactor.callLater(0, work)),
        )
        self.streams = 0
        self.slices = 0
        self.slowest_slice = 0.0
        self.stalled = 0
        self.too_slow = 0

    def stream(self, request: IRequest, slices: Slices) -> Deferred[None]:
        """
        Write `slices` to `request` as they are rendered; the Deferred fires
        once all are written (Klein then finishes the request). Cancelling it
        (Klein does when the client goes away) stops the rendering. A HEAD
        request renders nothing.
        """
        if request.method == b"HEAD":
            return succeed(None)
        return _Stream(self, request, slices).done

    def stats(self) -> dict[str, Any]:
        """The figures above, for ``/debug/stats``."""
        return {
            "answers_in_progress": self.streams,
            "slices": self.slices,
            "slowest_slice_seconds": self.slowest_slice,
            "stalled_clients_dropped": self.stalled,
            "slow_clients_dropped": self.too_slow,
        }


@implementer(IPushProducer)
class _Stream:
    """One answer in progress: a cooperative task and the request's producer."""

    def __init__(self, slicer: Slicer, request: IRequest, slices: Slices) -> None:
        self._slicer = slicer
        self._request = request
        self._slices = slices
        self._ended = False
        self._paused = False
        self._stall: IDelayedCall | None = None
        # Bytes written so far, and seconds the answer has waited on its
        # client in all, until the pause in progress (since `_paused_at`).
        self._written = 0
        self._waited = 0.0
        self._paused_at = 0.0
        self.done: Deferred[None] = Deferred(lambda _: self._stop())
        slicer.streams += 1
        self._task = slicer._cooperator.cooperate(self._steps())
        # twisted.web's requests are consumers: IRequest does not say so.
        self._consumer = IConsumer(request)
        self._consumer.registerProducer(self, True)
        self._task.whenDone().addCallbacks(self._finished, self._failed)

    def _steps(self) -> Iterator[None]:
        slicer, timer, write = self._slicer, self._slicer._timer, self._request.write
        while True:
            started = timer()
            chunk = next(self._slices, None)
            took = timer() - started
            slicer.slices += 1
            if took > slicer.slowest_slice:
                slicer.slowest_slice = took
            if chunk is None:
                return
            if chunk:
                # Counted first: the write can pause the answer at once.
                self._written += len(chunk)
                write(chunk)
            yield None

    # IPushProducer, driven by the connection

    def pauseProducing(self) -> None:
        if self._ended or self._paused:
            return
        self._paused = True
        self._task.pause()
        slicer = self._slicer
        self._paused_at = slicer._reactor.seconds()
        # The waiting this pause may add: what is left of what the bytes
        # written so far allow.
        allowed = slicer.stall_timeout + self._written / slicer.min_read_rate
        left = allowed - self._waited
        self._stall = slicer._reactor.callLater(max(left, 0.0), self._too_slow)

    def resumeProducing(self) -> None:
        if self._ended or not self._paused:
            return
        self._paused = False
        self._waited += self._slicer._reactor.seconds() - self._paused_at
        self._cancel_stall()
        self._task.resume()

    def stopProducing(self) -> None:
        self._stop()

    # The end, one way or another

    def _too_slow(self) -> None:
        # Counted as stalled if it read nothing for `stall_timeout` or more
        # at the end (it stopped reading, or never read), else as slow.
        slicer = self._slicer
        paused = slicer._reactor.seconds() - self._paused_at
        if paused >= slicer.stall_timeout:
            slicer.stalled += 1
        else:
            slicer.too_slow += 1
        log.info(
            "a client read {uri} slower than {rate:.0f} bytes/s ({written} bytes"
            " written, {waited:.0f} s waiting on it, the last {paused:.0f} s at"
            " a stretch): disconnected",
            uri=self._request.uri,
            rate=slicer.min_read_rate,
            written=self._written,
            waited=self._waited + paused,
            paused=paused,
        )
        self._drop()

    def _drop(self) -> None:
        self._stall = None
        self._stop()
        _abort(self._request)

    def _stop(self) -> None:
        if not self._ended:
            self._task.stop()

    def _end(self) -> None:
        self._ended = True
        self._slicer.streams -= 1
        self._cancel_stall()
        if getattr(self._request, "channel", None) is not None:
            # Not after the connection is lost: the request has let go of it.
            self._consumer.unregisterProducer()

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _finished(self, _: object) -> None:
        self._end()
        self.done.callback(None)

    def _failed(self, failure: Failure) -> None:
        self._end()
        if failure.check(TaskStopped):
            # Stopped because the client left or stalled, or cancelled by
            # Klein: the request is over already.
            return
        log.failure("rendering {uri} failed", failure, uri=self._request.uri)
        _abort(self._request)
        if not self.done.called:
            self.done.callback(None)


def _abort(request: IRequest) -> None:
    """Drop the request's connection at once, whatever is still buffered."""
    channel = getattr(request, "channel", None)
    transport = getattr(channel, "transport", None)
    if transport is not None:
        transport.abortConnection()
