"""
One watched instance: its config, its probe, its health, and its check in
flight.

The state is what every part of the agent hands around: the monitor
launches checks on it, `PendingTracker` lists it while a check is in
flight, the publisher and listeners read it after each check. The check in
flight is kept on it rather than in an object of its own: thousands start
every second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred

from sentinel.config import RedisInstance
from sentinel.health import InstanceHealth
from sentinel.observation import Observation

if TYPE_CHECKING:
    from sentinel.flapping import PublishedChanges


class Probe(Protocol):
    """What the monitor needs of a probe (see `sentinel.probe.RedisProbe`)."""

    stage: str
    # The address (an IP literal) of the instance's host that its last
    # connection attempt connected to, or tried last (a name's addresses
    # are tried in turn, `sentinel.addresses`), or None before the first.
    address: str | None

    @property
    def connected(self) -> bool:
        """Whether a usable connection is kept (to `address`)."""

    @property
    def hello_off_until(self) -> float | None:
        """While HELLO is switched off, when it is tried again; else None."""

    @property
    def why_unjudged(self) -> str:
        """Why its checks say nothing now, for an operator (never per check)."""

    def check(
        self, want_info: bool, scheduled: float | None = None
    ) -> Deferred[Observation | None]: ...

    def retime(self, timeout: float) -> None:
        """Take a new check timeout (a reload changed it)."""

    def close(self) -> None: ...


class InstanceState:
    """
    One watched instance: its config, probe and health, and its check in
    flight (what `PendingTracker` lists).
    """

    __slots__ = (
        "name",
        "instance",
        "probe",
        "health",
        "checks_since_info",
        "master",
        "check",
        "started_at",
        "ended_at",
        "callback_args",
        "published_changes",
        "watched_since",
        "silent_since",
        "starved_reason",
        "starved_timeouts",
    )

    def __init__(
        self,
        instance: RedisInstance,
        probe: Probe,
        health: InstanceHealth,
        watched_since: float = 0.0,
    ):
        # The instance's unique name, read on every check.
        self.name = instance.name
        self.instance = instance
        self.probe = probe
        self.health = health
        self.checks_since_info = 0
        # A replica's master, when the agent watches it too: INFO on every
        # check while it is down (sentinel.monitor).
        self.master: InstanceState | None = None
        # The check in flight (None between checks), when it started, and
        # when the last one ended (negative before any has).
        self.check: Deferred[Observation | None] | None = None
        self.started_at = 0.0
        self.ended_at = -1.0
        # The arguments of every check's callbacks, made once.
        self.callback_args = (self,)
        # Its changes published lately (`sentinel.flapping`), from its first.
        self.published_changes: PublishedChanges | None = None
        # When the agent started watching it, and when the first of its
        # checks that said nothing since the last recorded one ended
        # (None before any did): see `unjudged_since`.
        self.watched_since = watched_since
        self.silent_since: float | None = None
        # Why its last check said nothing, if the monitor ruled so (a
        # timeout while the agent was short of CPU, `sentinel.runqueue`);
        # None if the probe did (it says why, `Probe.why_unjudged`).
        self.starved_reason: str | None = None
        # The timeouts put off so since its last recorded check: the
        # monitor puts off fewer than `fall` in a row.
        self.starved_timeouts = 0

    @property
    def discovered(self) -> bool:
        """Whether replica discovery found it (rather than the config)."""
        return self.instance.discovered_by is not None

    @property
    def unjudged_since(self) -> float | None:
        """
        Since when the agent has not judged the instance, if it has not
        lately: since it was watched, if no check of it was ever recorded
        (a status inherited in a group is not this agent's judgement);
        since the first check that said nothing after the last recorded
        one (the agent too late to look, its connect in line or held back),
        if the latest said nothing; else None. ``checked_at`` stays the
        time of the last judgement: this says why it is getting old.
        """
        checked_at = self.health.checked_at
        if checked_at is None:
            return self.watched_since
        silent_since = self.silent_since
        if silent_since is not None and silent_since > checked_at:
            return silent_since
        return None

    @property
    def why_unjudged(self) -> str:
        """Why its checks say nothing now, for an operator (never per check)."""
        return self.starved_reason or self.probe.why_unjudged

    @property
    def stage(self) -> str:
        """Where the check in flight is (connect, tls, auth, ping, info)."""
        return self.probe.stage
