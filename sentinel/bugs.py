"""
Bugs of ours met while checking: counted, shown, and logged without
flooding the log.

An exception raised by our own code while a check is launched, answered
or recorded is a bug. The check ends all the same (the loop never stops),
counted as failed with ``internal error: ...``, so the instance may be
published down while its Redis is fine: that must not be silent (DESIGN.md
section 2). Nor may it fill the disk: a bug that some reply triggers meets
every check of that instance, a traceback a second per instance. So the
first is logged with its traceback, then at most one a `LOG_INTERVAL`,
saying how many were not logged in between; ``/healthz`` fails while one
was met in the last `RECENT` seconds, naming the last; ``/debug/stats`` and
``/metrics`` count them all. So are a reload that fails while it is
applied (`sentinel.reload`) and a ZooKeeper state listener or watcher that
raises (`sentinel.zk`): one count for the agent (`sentinel.agent`).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.checks import printable

log = Logger()

# Seconds between two tracebacks logged.
LOG_INTERVAL = 60.0
# Seconds after the last bug during which /healthz fails.
RECENT = 60.0
# The most of a bug's message kept for /healthz and /debug/stats.
MAX_MESSAGE = 200


class InternalErrors:
    """The bugs met so far (module docstring)."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.count = 0
        self.last_at: float | None = None
        self.last: str | None = None
        self._logged_at: float | None = None
        self._unlogged = 0

    def record(self, what: str, instance: str | None, failure: Failure) -> None:
        """
        A bug met while doing `what` ("recording the check") for
        `instance` (None: for none in particular, as in applying a reload):
        counted, and logged with `failure` unless one was logged less than
        `LOG_INTERVAL` ago.
        """
        now = self._clock.seconds()
        self.count += 1
        self.last_at = now
        subject = what if instance is None else f"{what} of {instance}"
        message = printable(f"{subject}: {failure.getErrorMessage()}", MAX_MESSAGE)
        self.last = message
        if self._logged_at is not None and now - self._logged_at < LOG_INTERVAL:
            self._unlogged += 1
            return
        self._logged_at = now
        unlogged, self._unlogged = self._unlogged, 0
        log.failure(
            "{subject} failed (a bug of ours, logged at most once"
            " in {interval:g} s: {unlogged} not logged since the last)",
            failure,
            subject=subject,
            what=what,
            instance=instance,
            unlogged=unlogged,
            interval=LOG_INTERVAL,
        )

    def unhealthy_reason(self) -> str | None:
        """Why /healthz fails on this account, or None."""
        if self.last_at is None:
            return None
        age = self._clock.seconds() - self.last_at
        if age > RECENT:
            return None
        return (
            f"internal error {age:.0f} s ago ({self.count} since start), the"
            f" instance may be published wrong: {self.last}"
        )

    def stats(self) -> dict[str, Any]:
        """For /debug/stats."""
        return {
            "count": self.count,
            "last": self.last,
            "last_seconds_ago": (
                None if self.last_at is None else self._clock.seconds() - self.last_at
            ),
        }
