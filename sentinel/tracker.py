"""
Every check in flight, with its instance, stage and start time.

This is the agent's answer to the original leak, which only an endpoint
reporting the number of live goroutines found: what is pending is listed,
with its age, at all times.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from twisted.internet.defer import Deferred


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
    """The set of checks in flight, at most one per instance."""

    def __init__(self) -> None:
        self._pending: dict[str, InFlight] = {}

    def add(self, state: InFlight) -> None:
        """Start tracking a check; an instance has one check at a time."""
        if state.name in self._pending:
            raise ValueError(f"{state.name} already has a check in flight")
        self._pending[state.name] = state

    def discard(self, state: InFlight) -> None:
        """Stop tracking the state's check (it ended), if it is tracked."""
        if self._pending.get(state.name) is state:
            del self._pending[state.name]

    def __contains__(self, instance: object) -> bool:
        return instance in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[InFlight]:
        return iter(list(self._pending.values()))

    def oldest_age(self, now: float) -> float | None:
        """Seconds since the oldest pending check started, or None."""
        if not self._pending:
            return None
        return now - min(p.started_at for p in self._pending.values())

    def report(self, now: float) -> dict[str, Any]:
        """The JSON body of GET /pending, oldest first."""
        checks = sorted(self._pending.values(), key=lambda p: p.started_at)
        return {
            "count": len(checks),
            "oldest_seconds": self.oldest_age(now),
            "checks": [
                {
                    "instance": p.name,
                    "stage": p.stage,
                    "age_seconds": now - p.started_at,
                }
                for p in checks
            ],
        }
