"""
When a probe may connect again, and when a connection's answers count
(`sentinel.probe`).

After a failure, a later check connects again at most once per
`RECONNECT_INTERVAL` (as Redis Sentinel does), judged on the times the
checks were due (their ticks' schedule), not on when the agent got to them:
ticks run a few ms late, by more under load, and a tick that connected
later than the next one runs would otherwise see that one refused, and
fail, at an interval of a second (a 1.8 s stall then made three failures
in a row). The schedule is what keeps the rate: checks due a second apart
connect at most once a second, however late each runs. A server that breaks the
protocol (a reply nobody asked for, one too long: see `sentinel.protocol`)
is answered harder, because a fresh connection's first PING often succeeds
before the flood or the second reply is seen: each violation backs off
reconnecting (`RECONNECT_INTERVAL`, doubling with each violation up to
`MAX_BACKOFF`), and answers on a new connection do not count until that
connection has stayed clean for `PROBATION`.

These times are the wall clock's, as the reactor's are, and a step of it
(`sentinel.clocksteps`) does not move them: after a step back of an hour,
the next attempt would wait an hour, while an instance that recovered
stays published down. A time further ahead than the rule ever sets one
can only come from a step back, and is ignored: a step back delays an
attempt by at most `MAX_BACKOFF`, and the end of a probation by at most
`PROBATION`. After a step forward they are past, as after a wait.
"""

from __future__ import annotations

import math

# Seconds from one connection attempt to the next.
RECONNECT_INTERVAL = 1.0
# Due times a whole interval apart may differ from it by a rounding of
# their floats (`sentinel.timer`): what a check may fall short by and
# still be a second later. Far below any spacing of checks.
ROUNDING = 0.001
# A server that keeps breaking the protocol costs both sides a connection (and
# a read of its flood) at most this often, and is back this soon once it
# behaves.
MAX_BACKOFF = 16.0
# Long enough for misbehaviour to show: a flood or a second reply shows on
# the first check, and one that only INFO triggers too, since an instance
# that is not up is asked INFO on every check.
PROBATION = 5.0


class Reconnects:
    """
    When the next connection attempt may start, and whether a connection's
    answers count (the module docstring's policy), for one instance, on the
    times its probe gives.
    """

    __slots__ = ("violation", "_next_attempt_at", "_backoff", "_trusted_at")

    def __init__(self) -> None:
        # The error of the last protocol violation, until answers count again.
        self.violation: str | None = None
        self._next_attempt_at = -math.inf
        self._backoff = 0.0
        self._trusted_at = math.inf

    def may_attempt(self, due: float, now: float) -> bool:
        """
        Whether a check due at `due`, launched `now`, may start a connection
        attempt.
        """
        next_at = self._next_attempt_at
        # No attempt is ever put off more than MAX_BACKOFF from when it was
        # (the module docstring): further ahead, the clock stepped back.
        return due >= next_at - ROUNDING or next_at - now > MAX_BACKOFF + ROUNDING

    def attempted(self, due: float) -> None:
        """
        A check due at `due` starts an attempt: the next one waits for a
        check due `RECONNECT_INTERVAL` later.
        """
        self._next_attempt_at = due + RECONNECT_INTERVAL

    def dropped_alive(self) -> None:
        """
        A connection to a server that answered was dropped by us (a reply
        it did not send in time would be read as the next check's), or by
        the server on commands it is known to close on, tried again
        (`sentinel.probe`): the next check connects again at once, unless
        a violation backs off.
        """
        if self.violation is None:
            self._next_attempt_at = -math.inf

    def connected(self, now: float) -> None:
        """A connection was opened now; after a violation, its probation starts."""
        if self.violation is not None:
            self._trusted_at = now + PROBATION

    def violated(self, now: float, error: str) -> None:
        """The server broke the protocol now: back off, and distrust."""
        if self.violation is None:
            self._backoff = RECONNECT_INTERVAL
        else:
            self._backoff = min(2 * self._backoff, MAX_BACKOFF)
        self.violation = error
        self._trusted_at = math.inf
        self._next_attempt_at = max(self._next_attempt_at, now + self._backoff)

    def distrust(self, now: float) -> str | None:
        """
        The violation that still discredits the connection's answers now, or
        None once it has stayed clean for `PROBATION` (the back-off then
        starts over).
        """
        # A probation ends at most PROBATION from now unless the clock
        # stepped back (the module docstring); inf: none has started.
        trusted_at = self._trusted_at
        if self.violation is not None and (
            now >= trusted_at or PROBATION < trusted_at - now < math.inf
        ):
            self.violation = None
        return self.violation
