"""
Every check in flight, with its instance, stage and start time.

This is the agent's answer to the original leak, which only an endpoint
reporting the number of live goroutines found: what is pending is listed,
with its age, at all times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from twisted.internet.defer import Deferred

# GET /pending names only the stages DESIGN.md section 5 lists: connect,
# auth, ping and info. A TLS handshake is part of connecting (its time
# counts in the connect's, within the check's timeout), so a check in its
# handshake is listed as connect; a timeout there still says so in the
# instance's error ("timeout (tls)").
_LISTED_STAGES = {"tls": "connect"}


def listed_stage(stage: str) -> str:
    """The stage GET /pending names for a check at `stage` (`InFlight.stage`)."""
    return _LISTED_STAGES.get(stage, stage)


class InFlight(Protocol):
    """
    What is tracked: an instance's state while its check is in flight (see
    `sentinel.instance.InstanceState`). The check is kept on the state itself
    rather than in an object of its own: thousands start every second.
    """

    @property
    def name(self) -> str:
        """The instance's unique name."""

    @property
    def check(self) -> Deferred[Any] | None:
        """The check in flight, or None once it has ended."""

    @property
    def started_at(self) -> float:
        """When the check started (the monitor's clock)."""

    @property
    def stage(self) -> str:
        """Where the check is: connect, tls, auth, ping or info."""


class PendingTracker:
    """
    The set of checks in flight: the states that hold them, each once, told
    apart by identity. A state is its instance's for as long as the
    instance is watched, and holds one check at a time (the monitor
    launches none while one is in flight), so there is at most one per
    instance.
    """

    def __init__(self) -> None:
        self._pending: set[InFlight] = set()
        # The set's own methods, with no Python call around them: they run
        # as every check starts and ends, thousands a second; as two Python
        # methods they were 2.6 % of a check's instructions (counted with
        # the calls removed).
        # Start tracking the state's check (again: no change).
        self.add: Callable[[InFlight], None] = self._pending.add
        # Stop tracking the state's check (it ended), if it is tracked.
        self.discard: Callable[[InFlight], None] = self._pending.discard

    def __contains__(self, state: object) -> bool:
        return state in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[InFlight]:
        return iter(list(self._pending))

    def oldest_age(self, now: float) -> float | None:
        """Seconds since the oldest pending check started, or None."""
        if not self._pending:
            return None
        return now - min(p.started_at for p in self._pending)

    def report(self, now: float) -> dict[str, Any]:
        """The JSON body of GET /pending, oldest first, then by name."""
        checks = sorted(self._pending, key=lambda p: (p.started_at, p.name))
        return {
            "count": len(checks),
            "oldest_seconds": self.oldest_age(now),
            "checks": [
                {
                    "instance": p.name,
                    "stage": listed_stage(p.stage),
                    "age_seconds": now - p.started_at,
                }
                for p in checks
            ],
        }
