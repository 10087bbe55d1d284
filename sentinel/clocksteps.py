"""
Steps of the wall clock, which the reactor schedules by.

Twisted's reactor times every call by ``time.time``. When the wall clock
steps back by X seconds (an NTP step, ``date -s``, a virtual machine
restored from a snapshot), every scheduled call fires X seconds late: the
check loop stops, each check in flight waits for its deadline, the agent
node's heartbeat stops, and ``/healthz``, which judges by the same clock,
still says ok, all for X seconds, which may be hours. The check loop would
skip its ticks even after its timer fired, until the clock caught up with
its last tick (``LoopingCall.withCount`` counts no interval). A step
forward fires every scheduled call at once: each check in flight times out.

`ClockSteps.look` runs after every poll of the reactor, before it runs any
timer (`sentinel.dispatch`), and compares how far the wall clock moved with
how far the monotonic clock did. A difference of `STEP_THRESHOLD` or more
is a step: every scheduled call is moved by it, so that it fires when it
would have without the step, and every periodic task starts again from now
(`RestartingTimer.rebase`). The step is logged as a warning and counted in
``/debug/stats`` (``clock``). Published times (``since``, ``checked_at``)
stay wall-clock times, as readers expect. Deadlines kept in wall-clock
time by others (the health histories' `stale_at`) are moved by the
``moved`` hook.

A suspended machine looks like a step forward (its monotonic clock
stops), and its scheduled calls are moved the same way; but checks were
missed then, as in a freeze, and the health histories ARE stale. The boot
clock (``CLOCK_BOOTTIME``, Linux) runs on through a suspend: the part of a
step it also saw is a suspend, and only the rest is passed to ``moved``.
Without a boot clock, a suspend is taken for a step, and the histories
are kept as they were.

A poll waits at most `LOOK_INTERVAL`: a step that happens after a look and
before the reactor computes how long to wait (the wait would then be the
step's length) is seen within that time. The poll, select and asyncio
reactors (twistd's ``--reactor``) have no lean dispatch: the look runs
after each turn's reads there, or before the asyncio reactor's timers and
every `LOOK_INTERVAL` of the monotonic clock
(`sentinel.dispatch.after_each_poll`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from twisted.logger import Logger

from sentinel.timer import RestartingTimer

log = Logger()

# The reactor looks at least this often: a poll waits no longer, however
# far its next timer (after a step back, an hour away) seems.
LOOK_INTERVAL = 1.0
# Seconds of difference between the two clocks' moves that make a step:
# far above a slewing clock's drift (at most 0.5 ms a second) and the
# rounding of the two clocks, far below any step worth a warning.
STEP_THRESHOLD = 1.0


def _boot_clock() -> Callable[[], float]:
    """The boot clock where there is one, else the monotonic clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic
    return partial(time.clock_gettime, boottime)


def _nowhere(step: float) -> None:
    """Nothing to move with a step."""


class ClockSteps:
    """Steps of the wall clock, and the reactor's calls moved with them."""

    def __init__(
        self,
        reactor: Any,
        timers: Callable[[], Iterable[RestartingTimer]],
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        boot: Callable[[], float] | None = None,
    ) -> None:
        """
        @param reactor: whose scheduled calls are moved (``getDelayedCalls``).
        @param timers: the periodic tasks to restart after a step.
        @param wall: the clock `reactor` schedules by.
        @param monotonic: a clock that neither steps nor runs in a suspend.
        @param boot: a clock that does not step but runs in a suspend; by
            default the system's boot clock.
        """
        self._reactor = reactor
        self._timers = timers
        self._wall = wall
        self._monotonic = monotonic
        self._boot = _boot_clock() if boot is None else boot
        self._wall_at = wall()
        self._monotonic_at = monotonic()
        # How long the machine was suspended, as of the last step: read
        # only at a step, so each look costs what it did.
        self._suspended = self._boot() - self._monotonic()
        # Called with the part of each step that was no suspend (s, signed).
        self.moved: Callable[[float], None] = _nowhere
        self.steps = 0
        self.last_step: float | None = None
        self.last_step_at: float | None = None

    def look(self) -> None:
        """Compare the clocks' moves since the last look; handle a step."""
        wall, monotonic = self._wall(), self._monotonic()
        step = (wall - self._wall_at) - (monotonic - self._monotonic_at)
        self._wall_at, self._monotonic_at = wall, monotonic
        if abs(step) >= STEP_THRESHOLD:
            self._stepped(step, wall)

    def stats(self) -> dict[str, Any]:
        """For /debug/stats: steps seen, the last one (s, signed) and when."""
        return {
            "steps": self.steps,
            "last_step_seconds": self.last_step,
            "last_step_at": self.last_step_at,
        }

    def _stepped(self, step: float, now: float) -> None:
        self.steps += 1
        self.last_step, self.last_step_at = step, now
        moved = 0
        for call in self._reactor.getDelayedCalls():
            call.reset(max(0.0, call.getTime() + step - now))
            moved += 1
        timers = list(self._timers())
        for timer in timers:
            timer.rebase()
        # A suspend is a real gap: the histories are not moved for it.
        before, self._suspended = self._suspended, self._boot() - self._monotonic()
        suspended = min(max(0.0, self._suspended - before), step) if step > 0 else 0.0
        self.moved(step - suspended)
        log.warn(
            "the wall clock stepped {direction} {seconds:.1f} s ({suspended:.1f}"
            " s of it suspended): {moved} scheduled call(s) moved with it,"
            " {timers} periodic task(s) started again",
            direction="forward" if step > 0 else "back",
            seconds=abs(step),
            suspended=suspended,
            moved=moved,
            timers=len(timers),
        )
