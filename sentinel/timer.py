"""
Periodic tasks that never stop for good.

A `LoopingCall` (and so a `TimerService`) stops for good the first time its
function raises or returns a failed Deferred: the seed's failure, a silent
stop, in a smaller place. Every periodic task of the agent (the check loop,
the agent node's heartbeat, the gc housekeeping) runs on a
`RestartingTimer` instead: a failure is counted, logged at critical level
with the task's name, and the task starts again one step later.

`/healthz` fails while a task is down, and for a bounded time after each
restart (`RESTART_REPORT_SECONDS`, or two steps of the task if longer), not
for good: a task that failed once and runs again publishes nothing wrong,
and an agent restarted by a liveness probe drops its published nodes
(DESIGN.md section 8). A task that fails at every run keeps `/healthz`
failing without a gap, and the counts stay in `stats()` and the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

log = Logger()

# How long /healthz reports a restarted task: long enough for pollers at
# usual intervals (15-60 s) to see it several times.
RESTART_REPORT_SECONDS = 300.0


class RestartingTimer(Service):
    """
    Calls a function every `step` seconds while running, the first call at
    start, as `TimerService` does; restarts it one step after any failure.
    The service's `name` names the task in logs and `/healthz`.
    """

    def __init__(
        self,
        name: str,
        step: float,
        clock: IReactorTime,
        function: Callable[[], object],
    ) -> None:
        self.name = name
        self.step = step
        self._clock = clock
        self._make_loop: Callable[[], LoopingCall] = lambda: LoopingCall(function)
        self._loop: LoopingCall | None = None
        self._finished: Deferred[Any] = succeed(None)
        self.restarts = 0
        self.last_error: str | None = None
        self.last_restart_at: float | None = None
        # A counting timer's schedule (`due`): its loop's start, and the
        # steps from it to the last call.
        self.due: float | None = None
        self._started_at = 0.0
        self._steps = 0

    @classmethod
    def with_count(
        cls,
        name: str,
        step: float,
        clock: IReactorTime,
        function: Callable[[int], object],
    ) -> RestartingTimer:
        """
        A timer whose function is told how many steps went by since its last
        call (more than 1 after a stall), as `LoopingCall.withCount` does.
        While its function runs, `due` is the time the call was scheduled
        for (the reactor runs it at that time or later); None otherwise.
        """
        timer = cls(name, step, clock, lambda: None)

        def counted(count: int) -> object:
            # The loop's calls fall on its start plus whole steps, `count`
            # more than the last call's. Multiplied, not summed: a sum of
            # twenty 0.05 s steps falls short of the 1 s between two rounds.
            timer._steps += count
            timer.due = timer._started_at + timer._steps * timer.step
            try:
                return function(count)
            finally:
                timer.due = None

        timer._make_loop = lambda: LoopingCall.withCount(counted)
        return timer

    def startService(self) -> None:
        super().startService()
        self._start(now=True)

    def stopService(self) -> Deferred[None]:
        """Stop; the Deferred fires once a call in progress has ended."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        done: Deferred[None] = Deferred()
        self._finished.addBoth(lambda _: done.callback(None))
        return done

    def change_step(self, step: float) -> None:
        """Call every `step` seconds from now on, the next call one step away."""
        self.step = step
        if self.running:
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            self._start(now=False)

    def rebase(self) -> None:
        """
        Start again from now, the next call one step away: after the clock
        the loop schedules by stepped (`sentinel.clocksteps`), whose count
        of intervals would be wrong, or after a pause the agent made itself
        (`sentinel.monitor`), whose intervals are not to be caught up at
        once. May be called from the task's own function.
        """
        self.change_step(self.step)

    def _start(self, now: bool) -> None:
        loop = self._make_loop()
        loop.clock = self._clock
        self._loop = loop
        # The loop counts its steps from its start, now.
        self._started_at = self._clock.seconds()
        self._steps = -1 if now else 0
        # Kept before the errback is added: a first call that fails at once
        # restarts (and replaces it) within addErrback.
        self._finished = finished = loop.start(self.step, now=now)
        finished.addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        self.restarts += 1
        self.last_error = failure.getErrorMessage() or repr(failure.value)
        self.last_restart_at = self._clock.seconds()
        log.failure(
            "{task} stopped; restarting it (restart {restarts})",
            failure,
            level=LogLevel.critical,
            task=self.name,
            restarts=self.restarts,
        )
        # Once stopService has run, a call that was in progress may still
        # fail: nothing restarts then.
        if not self.running:
            return
        try:
            self._start(now=False)
        except Exception:
            self._loop = None  # Shown by unhealthy_reason() as not running.
            log.failure("{task} could not be restarted", task=self.name)

    def unhealthy_reason(self) -> str | None:
        """Why `/healthz` should fail on this task's account, or None."""
        if self.running and (self._loop is None or not self._loop.running):
            return f"the {self.name} task is not running"
        if self.last_restart_at is None:
            return None
        ago = self._clock.seconds() - self.last_restart_at
        if ago > max(RESTART_REPORT_SECONDS, 2 * self.step):
            return None
        return (
            f"the {self.name} task failed and was restarted "
            f"({self.restarts} time(s), the last {ago:.0f} s ago): {self.last_error}"
        )

    def stats(self) -> dict[str, Any]:
        """Restarts since start and the last error, for `/debug/stats`."""
        return {"restarts": self.restarts, "last_error": self.last_error}
