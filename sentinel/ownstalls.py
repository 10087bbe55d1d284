"""
The agent's own stalls, as its check loop sees them.

The loop launches a slice every step (20 a second), whatever is being
connected: a gap between two launches much longer than a step is a stall
of the agent itself (SIGSTOP, a paused virtual machine, a host starved
of CPU in one long turn, a collection). The other measures of the agent's
lateness see only part of that: `sentinel.pacing` beats only while
something is being connected, and `sentinel.runqueue` counts a runnable
thread's wait for a CPU, not a process stopped or a machine paused.

A history with no check for `stale_after` (2 s at an interval of 0.5 s)
is stale, and the next check decides the status anew, on its own
(`sentinel.health`). A stall of about that long made every history stale,
and its first check after it, timed out for the stall (its server paused
with the agent's host and answering late, its PING still in the agent's
buffer, the reply owed counted over the stall), published a healthy
instance down. `OwnStalls` keeps the gaps longer than `STALL_AT`; the
monitor asks how much of an instance's time since its last check was
the agent's own (`sentinel.monitor`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

# Seconds beyond a step a launch may come late before it is a stall: above
# a busy reactor's ordinary late turns, well below any `stale_after`.
STALL_AT = 0.1
# Stalls kept: the newest (older ones end before any history they could
# excuse began: a check comes at least every `stale_after`).
KEPT = 64


class OwnStalls:
    """The gaps between the loop's launches, where longer than `STALL_AT`."""

    def __init__(self) -> None:
        self._last: float | None = None
        # (start, end) of each stall, oldest first.
        self._stalls: deque[tuple[float, float]] = deque(maxlen=KEPT)
        # Told of each stall, (start, end), as the loop finds it: in the
        # turn that ends it, before any socket is read (`sentinel.resumes`).
        self.noticed: Callable[[float, float], None] | None = None

    def launched(self, now: float, step: float) -> None:
        """The loop launched a slice at `now`, one `step` after the last."""
        last = self._last
        self._last = now
        if last is not None and now - last - step > STALL_AT:
            self._stalls.append((last + step, now))
            if self.noticed is not None:
                self.noticed(last + step, now)

    def restarted(self) -> None:
        """The loop starts again: the time it was stopped was no stall."""
        self._last = None

    def clock_stepped(self, step: float) -> None:
        """
        The wall clock, which these times are in, stepped by `step` s, no
        stall of the agent's (`sentinel.clocksteps`): every time kept moves
        with it, as the histories' deadlines do. Else a step forward was a
        stall as long (the loop's next launch moved with it), and after a
        step back every stall before it ended after any later check.
        """
        if self._last is not None:
            self._last += step
        self._stalls = deque(
            ((begun + step, ended + step) for begun, ended in self._stalls),
            maxlen=KEPT,
        )

    def since(self, start: float) -> float:
        """Seconds the agent stalled from `start` to now."""
        total = 0.0
        for begun, ended in reversed(self._stalls):
            if ended <= start:
                break
            total += ended - max(begun, start)
        return total
