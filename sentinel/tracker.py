"""
Every check in flight, with its instance, stage and start time.

This is the agent's answer to the original leak, which only an endpoint
reporting the number of live goroutines found: what is pending is listed,
with its age, at all times.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import attr
from twisted.internet.defer import Deferred


class HasStage(Protocol):
    """Whatever can say which stage its check is in (a probe)."""

    stage: str


@attr.define(slots=True)
class Pending:
    """One check in flight; `source.stage` says where it is."""

    instance: str
    deferred: Deferred[Any]
    started_at: float
    source: HasStage
    # When the check ended (the monitor's clock); negative while in flight.
    ended_at: float = -1.0


class PendingTracker:
    """The set of checks in flight, at most one per instance."""

    def __init__(self) -> None:
        self._pending: dict[str, Pending] = {}

    def add(self, pending: Pending) -> None:
        """Start tracking a check; an instance has one check at a time."""
        if pending.instance in self._pending:
            raise ValueError(f"{pending.instance} already has a check in flight")
        self._pending[pending.instance] = pending

    def remove(self, instance: str) -> None:
        """Stop tracking the instance's check (it ended)."""
        self._pending.pop(instance, None)

    def get(self, instance: str) -> Pending | None:
        """The instance's check in flight, if any."""
        return self._pending.get(instance)

    def __contains__(self, instance: object) -> bool:
        return instance in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[Pending]:
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
                    "instance": p.instance,
                    "stage": p.source.stage,
                    "age_seconds": now - p.started_at,
                }
                for p in checks
            ],
        }
