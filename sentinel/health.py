"""
Per-instance rise/fall hysteresis and the instance's last known state.

The first observation sets the status directly; after that, `rise`
successes or `fall` failures in a row change it (as nerve and Kubernetes
probes do). Role fields come from the last INFO replication and are cleared
when the instance goes down, so that nobody reads a stale role.
"""

from __future__ import annotations

import attr

from sentinel.observation import Observation, Replication

UP = "up"
DOWN = "down"


@attr.frozen
class Transition:
    """A change of status, ready flag or role worth publishing at once."""

    status_changed: bool
    old_status: str | None
    new_status: str


_UNKNOWN_ROLE = Replication(role=None)


class InstanceHealth:
    """Everything observed about one instance, and its decided status."""

    def __init__(self, rise: int, fall: int) -> None:
        self.rise = rise
        self.fall = fall
        self.status: str | None = None
        self.ready = False
        self.replication = _UNKNOWN_ROLE
        self.latency_ms: float | None = None
        self.error: str | None = None
        self.since: float | None = None
        self.checked_at: float | None = None
        self.consecutive_successes = 0
        self.consecutive_failures = 0
        self.checks = 0
        self.failures = 0

    def observe(self, observation: Observation, now: float) -> Transition | None:
        """
        Take one check's outcome; return a `Transition` when the status,
        the ready flag or the role changed, else None.
        """
        if (
            observation.ok
            and self.status == UP
            and observation.ready == self.ready
            and observation.replication is None
        ):
            # The common case, thousands a second: up, and still up.
            self.checks += 1
            self.checked_at = now
            self.latency_ms = observation.latency_ms
            self.error = observation.error
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            return None
        self.checks += 1
        self.checked_at = now
        self.latency_ms = observation.latency_ms
        self.error = observation.error
        if observation.ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        else:
            self.failures += 1
            self.consecutive_failures += 1
            self.consecutive_successes = 0

        old_status = self.status
        old_ready, old_replication = self.ready, self.replication
        if old_status is None:
            new_status = UP if observation.ok else DOWN
        elif old_status == DOWN and self.consecutive_successes >= self.rise:
            new_status = UP
        elif old_status == UP and self.consecutive_failures >= self.fall:
            new_status = DOWN
        else:
            new_status = old_status

        if new_status != old_status:
            self.status = new_status
            self.since = now
        if new_status == UP:
            if observation.ok:
                self.ready = observation.ready
                if observation.replication is not None:
                    self.replication = observation.replication
        else:
            self.ready = False
            self.replication = _UNKNOWN_ROLE

        if (
            new_status != old_status
            or self.ready != old_ready
            or self.replication != old_replication
        ):
            return Transition(
                status_changed=new_status != old_status,
                old_status=old_status,
                new_status=new_status,
            )
        return None
