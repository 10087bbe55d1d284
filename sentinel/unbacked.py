"""
The instances whose checks since the last one that found what their
status says all found the contrary, fewer than ``fall`` failures of one
``up`` or ``rise`` successes of one ``down`` (`InstanceHealth.unbacked_since`),
and since when: the state file's ``checked_at`` says no later than the
oldest of those last checks (`sentinel.handoff`).

A failure is no evidence that an instance is up, nor a success that it
is down. A process that reattached to its predecessor's session goes on
from the status a node says (a restart is no news of an instance), so
its failures of a Redis killed meanwhile, fewer than ``fall``, left it
``up``; since they completed the process's round, the file said the
session's nodes were checked, and the next process reattached and did
the same. In a crash loop whose processes each died 0.3 s after their
first check, a killed Redis stayed published up for as long as the loop
went on (50--84 s in 3 of 4 runs, every process reattaching); the
mirror, a Redis started again while the loop went on stayed published
down as long, freshly checked, each process's one success fewer than
``rise`` (`benchmarks/crashloop.py --revive`). Held back to its last
check that bore the status out, the file says the session unchecked for
1.5 session timeouts 15 s after it, and the next process closes the
session and decides anew, as for a crash loop whose processes never
checked (`sentinel.handoff`).

One map for both: what the file needs is the oldest check that still
backs a published status, whichever status it is.

Sparse and exact: only the instances in such a spell are kept (a spell
lasts at most ``max(rise, fall)`` checks in one process), so that a
fleet of 19,000 pays a dictionary write per check that changes it and
one walk of the few contrary ones per write of the state file (at most
every quarter of the session timeout).
"""

from __future__ import annotations


class Unbacked:
    """Instances whose status their latest checks contradict: since when."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def note(self, name: str, since: float | None) -> None:
        """Instance `name` was checked: `since` is its `unbacked_since`."""
        if since is not None:
            self._since[name] = since
        elif self._since:
            # Empty on a healthy fleet: the common check costs a test.
            self._since.pop(name, None)

    def forget(self, name: str) -> None:
        """Instance `name` is no longer watched."""
        self._since.pop(name, None)

    def oldest(self) -> float | None:
        """The oldest last check backing a contradicted status, or None."""
        return min(self._since.values(), default=None)

    def __contains__(self, name: object) -> bool:
        return name in self._since

    def __len__(self) -> int:
        return len(self._since)
