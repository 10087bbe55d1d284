"""
Statuses decided by one check, summed up in one line a second.

A check decides an instance's status directly, not through rise/fall,
when it is the instance's first, or its first after a gap in the agent's
own checks (`sentinel.health`). Every start decides every instance that
way, and each was once a line of its own (``rN is up (was unknown)``, or
``... decided anew``): 1,700-3,000 lines in the first seconds of a start
at 3,000 instances, 19,000 at 19,000, written while the agent is at its
busiest, and the few instances found down were lost among them.

So such decisions are no longer a line each (a down one still is, at
debug, with its error: twistd's own log observer shows debug, the
agent's filtered ones do not), and `FirstChecks` says what they
came to once `WINDOW` seconds after the first of them: how many up and
how many down, first checks and decisions anew apart, naming the down
ones (the first `NAMED`; the others are in ``/instances?status=down``)
and, when there are few, the rest too. A summary with any instance down
is a warning (going down is trouble, whichever check decided it), one
with none is info. A change decided by rise/fall is still a line of its
own (`sentinel.monitor`): that is news of the instance, not of the
agent's start. At the stop the decisions not summed up yet are said at
once: none goes unsaid.

Checks that would have decided so but timed out while the agent waited
for a CPU decide nothing (`sentinel.runqueue`): they are summed up in
the same window, a warning (the agent is short of CPU), naming the first
`NAMED`.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

from sentinel.health import DOWN

log = Logger()

# Seconds from the first decision not summed up yet to the summary: a start
# at 3,000 instances decides them over 2 to 10 s, so a few lines in all.
WINDOW = 1.0

# How many instances a summary names at most: the down ones first, and the
# up ones too when no more than this were decided in all.
NAMED = 10


class _Decided:
    """The decisions of one kind (first checks, or anew) in one window."""

    def __init__(self) -> None:
        self.up = 0
        self.down: list[str] = []
        self.down_count = 0
        self.up_names: list[str] = []

    def note(self, name: str, status: str) -> None:
        if status == DOWN:
            self.down_count += 1
            if len(self.down) < NAMED:
                self.down.append(name)
        else:
            self.up += 1
            if len(self.up_names) < NAMED:
                self.up_names.append(name)

    @property
    def count(self) -> int:
        return self.up + self.down_count

    def names(self) -> str:
        """The names to give, down ones first; '' when there are none to give."""
        parts = []
        if self.down:
            more = self.down_count - len(self.down)
            tail = f" and {more} more" if more else ""
            parts.append(f"down: {', '.join(self.down)}{tail}")
        if self.up and self.count <= NAMED:
            parts.append(f"up: {', '.join(self.up_names)}")
        return f" ({'; '.join(parts)})" if parts else ""


class FirstChecks:
    """Statuses decided by one check, summed up (module docstring)."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._first = _Decided()
        self._anew = _Decided()
        # First checks (or anew) put off: timed out while the agent was
        # short of CPU.
        self._starved: list[str] = []
        self._starved_count = 0
        # The gap after which a history is stale, as the last decided anew
        # said (the same for every instance but across a reload).
        self._gap = 0.0
        self._call: IDelayedCall | None = None

    def decided(self, name: str, status: str, anew: bool, gap: float) -> None:
        """
        `name`'s status was decided `status` by one check: its first, or,
        if `anew`, its first after a gap of `gap` seconds or more.
        """
        if anew:
            self._anew.note(name, status)
            self._gap = gap
        else:
            self._first.note(name, status)
        if self._call is None:
            self._call = self._clock.callLater(WINDOW, self._say)

    def starved(self, name: str) -> None:
        """
        `name`'s check would have decided its status but timed out while
        the agent waited for a CPU, or after the agent's own stall left its
        history stale: it decided nothing.
        """
        self._starved_count += 1
        if len(self._starved) < NAMED:
            self._starved.append(name)
        if self._call is None:
            self._call = self._clock.callLater(WINDOW, self._say)

    def stop(self) -> None:
        """Say now what is not said yet, and schedule nothing more."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._say()

    def _say(self) -> None:
        self._call = None
        first, anew = self._first, self._anew
        self._first, self._anew = _Decided(), _Decided()
        starved, starved_count = self._starved, self._starved_count
        self._starved, self._starved_count = [], 0
        if starved_count:
            more = starved_count - len(starved)
            log.warn(
                "{count} check(s) that would have decided a status timed out"
                " while the agent waited for a CPU or after its own stall: not"
                " decided, checked again ({names}{more})",
                count=starved_count,
                names=", ".join(starved),
                more=f" and {more} more" if more else "",
            )
        if first.count:
            log.emit(
                LogLevel.warn if first.down_count else LogLevel.info,
                "{count} instance(s) decided by their first check: {up} up, "
                "{down} down{names}",
                count=first.count,
                up=first.up,
                down=first.down_count,
                names=first.names(),
            )
        if anew.count:
            log.emit(
                LogLevel.warn if anew.down_count else LogLevel.info,
                "{count} instance(s) decided anew by their first check after a "
                "gap (the agent did not check them for {gap:.1f} s or more): "
                "{up} up, {down} down{names}",
                count=anew.count,
                gap=self._gap,
                up=anew.up,
                down=anew.down_count,
                names=anew.names(),
            )
