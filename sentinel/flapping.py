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
# Names listed in /debug/stats: the count says how many there are.
NAMES_LISTED = 20


class PublishedChanges:
    """One instance's changes published lately, and what waits."""

    __slots__ = ("times", "held_since", "held_at")

    def __init__(self) -> None:
        # When its last LIMIT changes were published (the oldest first).
        self.times: deque[float] = deque(maxlen=LIMIT)
        # Since when a change waits (None: nothing does), and when the
        # last one was held back.
        self.held_since: float | None = None
        self.held_at = -WINDOW


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

    def publishable(
        self, state: InstanceState, transition: Transition | None, now: float
    ) -> Transition | None:
        """
        What the check that made `transition` (None: no change) gives the
        publisher: the transition, None while it waits, or, at the first
        check with room after a change held back, a transition that makes
        the newest state written.
        """
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

    def forget(self, name: str) -> None:
        """The instance is no longer watched here."""
        self._flapping.pop(name, None)

    def flapping(self, now: float) -> list[InstanceState]:
        """The instances with a change held back within `WINDOW` seconds."""
        for name, state in list(self._flapping.items()):
            changes = state.published_changes
            if changes is None or now - changes.held_at >= WINDOW:
                del self._flapping[name]
        return list(self._flapping.values())

    def stats(self, now: float) -> dict[str, Any]:
        """``/debug/stats``: the instances flapping now, and changes held back."""
        flapping = self.flapping(now)
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
        }  # fmt: skip


def _room(changes: PublishedChanges, now: float) -> bool:
    """Whether another change may be published now."""
    times = changes.times
    return len(times) < LIMIT or now - times[0] >= WINDOW
