"""
How often one instance may change what its node says (DESIGN.md sections
2.5 and 7): a Redis, or a proxy in front of many, must not turn the agent
into a ZooKeeper write flood.

A node is written when the instance's status, ``ready`` or role changes,
and only the status has hysteresis. A server answering ``+PONG`` and
``-LOADING`` in turn, or naming another role or master at every INFO
(asked at every check while a replica's link is down), changed its node
at every check: 1,000 instances behind one such server made an agent
write 1,000 times a second to ZooKeeper, against 33 in steady state
(instances / refresh), and log a line at each change.

So, as nerve damps a flapping service with a token bucket, each instance
may publish `LIMIT` changes of ``ready`` or role (its status unchanged)
within `WINDOW` seconds. A change beyond them waits, and only the newest
state is kept: it is written at the first check with room again (or by
the refresh, which writes the newest state anyway). A change of status
never waits and takes no place: rise and fall already damp it (at most
one change every `rise` or `fall` checks, as the operator chose), and
detection, down and back up, is the agent's first promise. A first
status and one decided anew after a gap are written at once too. So a
flapping instance costs at most `LIMIT` writes a `WINDOW` beyond its
status changes, a steady one nothing more, and one that changes now and
then (a restart: down, up not ready, ready, its role: two places; a
failover: one to three) never waits.

What waits is what an operator must see: the first change held back is
logged (once per flapping spell, a spell ending `WINDOW` seconds after
its last change held back), and ``/debug/stats`` (``flapping``) and
``GET /instances/<name>`` (``changes_held_since``) name the instances.
``/healthz`` stays 200: a node at most `WINDOW` seconds behind on
``ready`` or role is the instance's doing, not the agent's, and its
status is never behind.

A status that flaps is written at every change all the same (rise and
fall bound it: at most one change every `rise` or `fall` checks), but it
is named: a server whose PING replies come around the timeout (late
one check in two, say) went down and up every 10--20 s for as long as it
lasted, a warning line at each fall and nothing in /debug/stats, so an
operator could not tell it from a fleet in trouble. An instance whose
status changed `STATUS_LIMIT` times within `WINDOW` seconds (three falls
and three rises: a restart or a failover is one of each) is *status
flapping*: one warning line says so for the spell, its changes are then
logged at debug, and ``/debug/stats`` (``flapping``'s ``status``) and
``GET /instances/<name>`` (``status_flapping_since``) name it until its
status has held for `WINDOW` seconds. Its record is made at its second
change within `WINDOW` (an instance that only went down keeps none).
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from twisted.logger import Logger

from sentinel.health import Transition
from sentinel.instance import InstanceState

log = Logger()

# Changes of one instance's ready flag or role published within WINDOW
# seconds, beyond which they wait: a restart takes 2 (ready, its role), a
# failover 1--3, so five such a minute pass; 1,000 instances flapping at
# every check write about 170 times a second, not 1,000.
LIMIT = 10
WINDOW = 60.0
# Changes of one instance's status within WINDOW seconds that make it
# status flapping (named, never held back): a restart or a failover is two.
STATUS_LIMIT = 6
# Names listed in /debug/stats: the count says how many there are.
NAMES_LISTED = 20


class PublishedChanges:
    """One instance's changes published lately, and what waits."""

    __slots__ = ("times", "held_since", "held_at", "status_times", "status_since")

    def __init__(self) -> None:
        # When its last LIMIT changes were published (the oldest first).
        self.times: deque[float] = deque(maxlen=LIMIT)
        # Since when a change waits (None: nothing does), and when the
        # last one was held back.
        self.held_since: float | None = None
        self.held_at = -WINDOW
        # When its last STATUS_LIMIT status changes were decided (the oldest
        # first), and since when its status flaps (None: it does not).
        self.status_times: deque[float] = deque(maxlen=STATUS_LIMIT)
        self.status_since: float | None = None


class Flapping:
    """
    Which changes of the instances' states are published now
    (`publishable`), and the instances whose changes wait (module
    docstring).
    """

    def __init__(self) -> None:
        # The instances with a change held back within WINDOW seconds.
        self._flapping: dict[str, InstanceState] = {}
        # Changes held back since the start.
        self.held_back = 0
        # The instances whose status flapped within WINDOW seconds.
        self._status_flapping: dict[str, InstanceState] = {}

    def publishable(
        self,
        state: InstanceState,
        transition: Transition | None,
        now: float,
        status_since: float | None = None,
    ) -> Transition | None:
        """
        What the check that made `transition` (None: no change) gives the
        publisher: the transition, None while it waits, or, at the first
        check with room after a change held back, a transition that makes
        the newest state written. `status_since` is when the status it
        changes was decided.
        """
        if (
            transition is not None
            and transition.status_changed
            and transition.old_status is not None
            and not transition.anew
        ):
            self._status_changed(state, status_since, now)
        changes = state.published_changes
        if transition is None:
            if changes is None or changes.held_since is None:
                return None
            if not _room(changes, now):
                return None
            status = state.health.status
            assert status is not None
            transition = Transition(
                status_changed=False, old_status=status, new_status=status
            )
        elif (
            transition.status_changed
            or transition.old_status is None
            or transition.anew
        ):
            # A status (damped by rise and fall), a first one or one decided
            # anew: written at once, taking no place, and written with the
            # newest state, so nothing waits after it.
            if changes is not None:
                changes.held_since = None
            return transition
        elif changes is not None and not _room(changes, now):
            if now - changes.held_at >= WINDOW:
                log.warn(
                    "{instance} changed its state {limit} times within {window:g}"
                    " s: its further changes wait (only the newest kept) and are"
                    " written at most {limit} times a {window:g} s; a change of"
                    " status is written at once",
                    instance=state.name,
                    limit=LIMIT,
                    window=WINDOW,
                )
            if changes.held_since is None:
                changes.held_since = now
            changes.held_at = now
            self._flapping[state.name] = state
            self.held_back += 1
            return None
        if changes is None:
            changes = state.published_changes = PublishedChanges()
        changes.times.append(now)
        changes.held_since = None
        return transition

    def _status_changed(
        self, state: InstanceState, previous: float | None, now: float
    ) -> None:
        """
        Count a change of `state`'s status, from one decided at `previous`
        (module docstring); say once per spell that it flaps.
        """
        changes = state.published_changes
        if changes is None:
            # Its second change within WINDOW: the first was from a status
            # decided by a change too (not its first, nor one decided anew).
            if previous is None or now - previous >= WINDOW or state.health.changes < 3:
                return
            changes = state.published_changes = PublishedChanges()
            changes.status_times.append(previous)
        changes.status_times.append(now)
        if not _status_flaps(changes, now):
            changes.status_since = None
            return
        self._status_flapping[state.name] = state
        if changes.status_since is not None:
            return
        changes.status_since = changes.status_times[0]
        log.warn(
            "{instance} changed its status {limit} times within {window:g} s"
            " (rise {rise}, fall {fall}): flapping; each change is still"
            " written at once, and logged at debug while it flaps",
            instance=state.name,
            limit=STATUS_LIMIT,
            window=WINDOW,
            rise=state.health.rise,
            fall=state.health.fall,
        )

    def status_flapping_since(self, state: InstanceState, now: float) -> float | None:
        """Since when `state`'s status flaps, or None if it does not."""
        changes = state.published_changes
        if changes is None or changes.status_since is None:
            return None
        if now - changes.status_times[-1] >= WINDOW:
            changes.status_since = None
        return changes.status_since

    def forget(self, name: str) -> None:
        """The instance is no longer watched here."""
        self._flapping.pop(name, None)
        self._status_flapping.pop(name, None)

    def flapping(self, now: float) -> list[InstanceState]:
        """The instances with a change held back within `WINDOW` seconds."""
        for name, state in list(self._flapping.items()):
            changes = state.published_changes
            if changes is None or now - changes.held_at >= WINDOW:
                del self._flapping[name]
        return list(self._flapping.values())

    def status_flapping(self, now: float) -> list[InstanceState]:
        """The instances whose status flaps (`status_flapping_since`)."""
        for name, state in list(self._status_flapping.items()):
            if self.status_flapping_since(state, now) is None:
                del self._status_flapping[name]
        return list(self._status_flapping.values())

    def stats(self, now: float) -> dict[str, Any]:
        """
        ``/debug/stats``: the instances flapping now, changes held back,
        and the instances whose status flaps.
        """
        flapping = self.flapping(now)
        status = self.status_flapping(now)
        return {
            "instances": len(flapping),
            # The first names, not all sorted: thousands may flap at once.
            "names": heapq.nsmallest(NAMES_LISTED, (s.name for s in flapping)),
            "waiting": sum(state.published_changes is not None
                           and state.published_changes.held_since is not None
                           for state in flapping),
            "held_back": self.held_back,
            "limit": LIMIT,
            "window_seconds": WINDOW,
            "status": {
                "instances": len(status),
                "names": heapq.nsmallest(NAMES_LISTED, (s.name for s in status)),
                "limit": STATUS_LIMIT,
            },
        }  # fmt: skip


def _status_flaps(changes: PublishedChanges, now: float) -> bool:
    """Whether `STATUS_LIMIT` status changes came within `WINDOW` seconds."""
    times = changes.status_times
    return len(times) == STATUS_LIMIT and now - times[0] < WINDOW


def _room(changes: PublishedChanges, now: float) -> bool:
    """Whether another change may be published now."""
    times = changes.times
    return len(times) < LIMIT or now - times[0] >= WINDOW
