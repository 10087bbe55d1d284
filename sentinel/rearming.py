"""
Watches whose arming call failed, armed again on a timer.

A watch is set by the call that reads its node (an ``exists``); a call
that fails (the bridge's call timeout, a refusal, a connection lost)
sets none, and a lost watch is never told of: nothing fires. A
reconnection arms again what it knows of (`sentinel.resync`), but a call
that timed out while the connection stayed up (ZooKeeper slow, or the
call waiting behind thousands of others at a view change) left a node
kept for its new primary unwatched until the keeper's next write of it,
a refresh later: the keeper went on checking an instance that was no
longer its own, /healthz named the node as not taken over, and a node
its taker's session took with it stayed missing as long.

So each failed call is asked again, alone (never two in flight for one
watch), after `RETRY_FIRST`, doubling to `RETRY_MAX`: a ZooKeeper that
answers nothing gets one call per watch per `RETRY_MAX`, not one a tick.
The failures are counted (/debug/stats), and a watch left unarmed for
`UNARMED_LIMIT` (two call timeouts) is named in /healthz until a call
arms it: what it stands for may be wrong meanwhile. The retry is
forgotten when its purpose goes (`forget`), and every timer is cancelled
at a stop (`cancel`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import attr
from twisted.internet.defer import TimeoutError
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

# Seconds before a failed call is made again, doubling each time up to
# the most (module docstring).
RETRY_FIRST = 1.0
RETRY_MAX = 8.0
# Seconds a watch may stay unarmed before /healthz names it.
UNARMED_LIMIT = 10.0

Key = TypeVar("Key", bound=Hashable)


@attr.define
class Unarmed:
    """A watch whose last call failed: since when, how often, why, and its retry."""

    path: str
    since: float
    tries: int
    error: str
    retry: IDelayedCall | None = None


class Rearming(Generic[Key]):
    """The watches, one per key, whose arming calls failed."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._unarmed: dict[Key, Unarmed] = {}
        # Calls that failed to arm a watch, and watches armed after failing.
        self.failed_calls = 0
        self.armed_again = 0

    def failed(
        self, key: Key, path: str, failure: Failure, again: Callable[[], None]
    ) -> None:
        """The call arming the watch `key` (on `path`) failed: `again` later."""
        self.failed_calls += 1
        now = self._reactor.seconds()
        error = _described(failure)
        unarmed = self._unarmed.get(key)
        if unarmed is None:
            unarmed = self._unarmed[key] = Unarmed(path, now, 0, error)
        _cancel(unarmed)
        unarmed.tries += 1
        unarmed.error = error
        delay = min(RETRY_FIRST * 2 ** (unarmed.tries - 1), RETRY_MAX)
        unarmed.retry = self._reactor.callLater(delay, again)

    def asking(self, key: Key) -> None:
        """A call arming `key` is made now: a retry due later is not needed."""
        unarmed = self._unarmed.get(key)
        if unarmed is not None:
            _cancel(unarmed)

    def armed(self, key: Key) -> None:
        """The call arming `key` succeeded."""
        if self._unarmed.pop(key, None) is not None:
            self.armed_again += 1

    def forget(self, key: Key) -> None:
        """The watch `key` is no longer wanted: no retry."""
        unarmed = self._unarmed.pop(key, None)
        if unarmed is not None:
            _cancel(unarmed)

    def cancel(self) -> None:
        """Stopping: every retry is cancelled, and forgotten."""
        for unarmed in self._unarmed.values():
            _cancel(unarmed)
        self._unarmed.clear()

    @property
    def unarmed(self) -> int:
        """How many watches wait for a call that arms them."""
        return len(self._unarmed)

    def unresolved(self, wanted: Callable[[Key], bool]) -> dict[str, str]:
        """
        Each watch still `wanted` and unarmed for `UNARMED_LIMIT` or more,
        by path: why.
        """
        now = self._reactor.seconds()
        return {
            unarmed.path: f"watch not armed for {now - unarmed.since:.1f} s, "
            f"{unarmed.tries} calls failed (last: {unarmed.error})"
            for key, unarmed in self._unarmed.items()
            if now - unarmed.since >= UNARMED_LIMIT and wanted(key)
        }

    def stats(self) -> dict[str, int]:
        """For /debug/stats."""
        return {
            "failed_calls": self.failed_calls,
            "armed_again": self.armed_again,
            "unarmed": self.unarmed,
        }


def _described(failure: Failure) -> str:
    """A failed call's error, for /healthz: its kind, and what it says."""
    if failure.check(TimeoutError):
        return "timed out"
    kind = type(failure.value).__name__
    message = failure.getErrorMessage()
    return f"{kind}: {message}" if message else kind


def _cancel(unarmed: Unarmed) -> None:
    if unarmed.retry is not None and unarmed.retry.active():
        unarmed.retry.cancel()
    unarmed.retry = None
