"""
Deadlines for checks in flight: one per launch, judged after I/O.

Every check keeps its own Deferred and errback, but the checks launched
together share one deadline, so one timer per slice's launch enforces them
all: DESIGN.md section 4 measured a timer per check (``addTimeout``) about
15 µs a check dearer. A deadline cancels the check's Deferred, and its
errback turns that into a timeout.

Twisted runs expired timers before it reads sockets that are already
readable: after any stall of the agent (a gc pause, a burst), a deadline
would fire on replies that have already arrived, and a whole slice could
fail at once (seen: all 3,000 checks of one tick). So a deadline is judged
one reactor turn late, from a second timer of 0 s, after the ready sockets
have been read: a stall of the agent itself is not blamed on Redis.

A deadline whose own timer fires late by more than `STALL_LATE` of the
timeout is judged `STALL_GRACE` of the timeout later instead: after a stall
of the whole machine (a virtual machine paused, a shared host's cores taken,
seen here for seconds at a time), the agent wakes and would judge at once,
before the Redis servers, stalled as well, have answered what they received
meanwhile (seen at start-up: thousands of checks of healthy instances
failed 2-5 s after their launch). An agent on time judges as before, so the
detection bound is unchanged; one that was late gives its verdicts that
much later.

A pause the agent makes itself, a full collection of the garbage
collector (`sentinel.process`, at start-up once connections settle and
every 10 minutes), is known to the second: every deadline pending moves
that much later (`postpone`). Replies to checks sent just before it, or
held in a TLS connection's buffer until the next turn, are read after it,
and the servers answer what they received meanwhile; judged at once, with
3,000 TLS instances under load, 750-1,850 checks of healthy instances
failed after the collection at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from sentinel.instance import InstanceState

# Float slack when a deadline falls exactly on a tick.
_EPSILON = 1e-6
# Shares of the timeout: how late a deadline's timer may fire before its
# verdict waits, and how long it then waits (module docstring).
STALL_LATE = 0.25
STALL_GRACE = 0.25
# The fewest timers kept before ended ones are dropped (`_prune`).
_PRUNE_AT_LEAST = 16


class DeadlineSweep:
    """The deadlines of checks in flight, and each launch's completion time."""

    def __init__(self, clock: IReactorTime, completed: Callable[[float], object]):
        """
        @param completed: told, for each launch, the seconds from the launch
            to the end of its last check (0 when every check ended at once).
        """
        self._clock = clock
        self._completed = completed
        # Every timer made, ended ones included until the next prune.
        self._calls: list[IDelayedCall] = []
        self._prune_at = _PRUNE_AT_LEAST
        # Seconds given back for the agent's own pauses so far (`postpone`):
        # a deadline moved by them is not late by them.
        self._given_back = 0.0

    def __len__(self) -> int:
        """The timers pending (at most a few per slice in flight)."""
        return sum(1 for call in self._calls if call.active())

    def expire(
        self, in_flight: list[InstanceState], started_at: float, timeout: float
    ) -> None:
        """
        `timeout` after `started_at`, cancel the checks of `in_flight` still
        running from that launch, then report the launch's completion.
        """
        if not in_flight:
            self._completed(0.0)
            return
        self._after_io(timeout, timeout, self._expire, in_flight, started_at)

    def when_overdue(
        self,
        states: list[InstanceState],
        timeout: float,
        then: Callable[[list[InstanceState]], None],
    ) -> None:
        """
        Once the last deadline among the checks of `states` has been judged,
        cancel those still overdue and call `then` with every state whose
        check has ended (one checked again since keeps its own deadline).
        """
        now = self._clock.seconds()
        deadline = max(now, *(state.started_at + timeout for state in states))
        self._after_io(deadline - now, timeout, self._overdue, states, timeout, then)

    def postpone(self, seconds: float) -> None:
        """
        The agent itself held the reactor for `seconds` (a full collection):
        every deadline pending moves that much later, so that no check is
        judged on time the agent took from it.
        """
        if seconds <= 0:
            return
        self._given_back += seconds
        for call in self._calls:
            if call.active():
                call.delay(seconds)

    def stop(self) -> None:
        """Cancel every pending deadline."""
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        self._prune_at = _PRUNE_AT_LEAST

    def _after_io(
        self, delay: float, timeout: float, function: Callable[..., None], *args: Any
    ) -> None:
        due = self._clock.seconds() + delay - self._given_back
        self._calls.append(
            self._clock.callLater(delay, self._next_turn, due, timeout, function, *args)
        )

    def _next_turn(
        self, due: float, timeout: float, function: Callable[..., None], *args: Any
    ) -> None:
        self._prune()
        late = self._clock.seconds() - self._given_back - due > STALL_LATE * timeout
        delay = STALL_GRACE * timeout if late else 0
        self._calls.append(self._clock.callLater(delay, function, *args))

    def _prune(self) -> None:
        # Only once the list has doubled since the last prune: each
        # launch's two timers stay pending for about a timeout, and a prune
        # at every judgement asked each of them whether it was still active
        # (about 40 timers at 20 slices a second and a 0.9 s timeout), at
        # every slice; now about 4 a launch, whatever the timeout.
        if len(self._calls) >= self._prune_at:
            self._calls = [call for call in self._calls if call.active()]
            self._prune_at = max(_PRUNE_AT_LEAST, 2 * len(self._calls))

    def _expire(self, launched: list[InstanceState], started_at: float) -> None:
        # The last of the launch's checks to end gives its completion time.
        self._prune()
        last = -1.0
        for state in launched:
            if state.started_at != started_at:
                continue  # Checked again since (after an overrun).
            check = state.check
            if check is not None:
                check.cancel()
            if state.ended_at > last:
                last = state.ended_at
        if last >= 0.0:
            self._completed(last - started_at)

    def _overdue(
        self,
        states: list[InstanceState],
        timeout: float,
        then: Callable[[list[InstanceState]], None],
    ) -> None:
        self._prune()
        now = self._clock.seconds()
        ended = []
        for state in states:
            check = state.check
            if check is not None:
                if now - state.started_at < timeout - _EPSILON:
                    continue
                check.cancel()
            ended.append(state)
        then(ended)
