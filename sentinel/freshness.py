"""
Published status the agent no longer keeps fresh: instances whose last
recorded check is older than the detection bound allows.

A check the agent could not serve in time (start-up pacing, an agent
running late on its own CPU: see `sentinel.probe`) records nothing, so that
a healthy Redis is never published down for the agent's own trouble. An
agent that stays that late, though, would leave each instance it cannot
get to as it was last published, for as long as that lasts: silently
stale. So, once a second, the instances that have a status and whose last
recorded check is older than twice the detection bound (``interval *
fall + timeout``) are counted, and while there are any, ``/healthz`` fails
and says how many, since when, and which (the `NAMED` oldest: in a group,
the operator looks for them in the verdicts this agent writes).
Instances never decided yet (at start, while connections are paced) are
unknown, not stale: nothing of theirs was published by this process.

The scan reads every instance's state: about 1 ms per 10,000 instances,
once a second.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime

from sentinel.instance import InstanceState
from sentinel.monitor import Settings
from sentinel.timer import RestartingTimer

# Seconds between scans.
STEP = 1.0
# Stale instances named in /healthz, the oldest first.
NAMED = 5


def stale_after(settings: Settings) -> float:
    """Seconds without a recorded check after which a status is stale."""
    return 2 * (settings.interval * settings.fall + settings.timeout)


class Freshness:
    """
    Counts the stale instances once a second (`timer`, a service to run
    with the agent) and reports them (`unhealthy_reason`, `stats`).
    """

    def __init__(
        self,
        clock: IReactorTime,
        states: Callable[[], Mapping[str, InstanceState]],
        settings: Callable[[], Settings],
    ) -> None:
        self._clock = clock
        self._states = states
        self._settings = settings
        self.stale = 0
        self.oldest_seconds: float | None = None
        self.names: list[str] = []
        self.timer = RestartingTimer("freshness", STEP, clock, self.scan)

    def scan(self) -> None:
        """Count the instances whose published status is stale now."""
        now = self._clock.seconds()
        limit = now - stale_after(self._settings())
        found: list[tuple[float, str]] = []
        for state in self._states().values():
            checked_at = state.health.checked_at
            if checked_at is not None and checked_at < limit:
                found.append((checked_at, state.name))
        oldest = heapq.nsmallest(NAMED, found)
        self.stale = len(found)
        self.oldest_seconds = now - oldest[0][0] if oldest else None
        self.names = [name for _, name in oldest]

    def unhealthy_reason(self) -> str | None:
        """Why /healthz fails on this account, or None."""
        if not self.stale:
            return None
        more = self.stale - len(self.names)
        return (
            f"{self.stale} instance(s) not checked for over "
            f"{stale_after(self._settings()):g} s (the oldest "
            f"{self.oldest_seconds or 0.0:.1f} s: {', '.join(self.names)}"
            + (f" and {more} more" if more else "")
            + "): the agent cannot keep up, and what it published of them "
            "may be stale"
        )

    def stats(self) -> dict[str, Any]:
        """For /debug/stats."""
        return {
            "stale_instances": self.stale,
            "oldest_stale_seconds": self.oldest_seconds,
            "stale_after_seconds": stale_after(self._settings()),
        }
