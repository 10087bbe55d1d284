"""
Each interval cut into slices, launched evenly apart within it.

Thousands of checks launched at once would wait on the agent's own CPU,
and their measured latency would count that wait. So every instance
belongs to one slice, and each slice is launched once per interval,
``interval / count`` seconds after the one before. Instances are assigned
round robin, so that slices stay even as instances come and go.

A few instances need no spreading, and each launch wakes the agent: 20
launches a second for one instance were most of an idle agent's wake-ups
(``benchmarks/idle.py``). So an interval is cut into no more slices than
there are `INSTANCES_PER_SLICE` instances, at least one: an agent of one
host's tens of instances launches a few times a second, or once, and one
of 200 or more as before. Launching ten checks at once takes about 1 ms
of CPU (DESIGN.md section 4: 60-100 us a check), small beside any
check timeout. Cut again while running (an instance added or removed
across a multiple of it), each member keeps its place in the round as
near as its new slice allows, never later (`resize`'s ``keep_phase``,
between two rounds).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

# Launches per interval are about this far apart, and at most this many.
SLICE_SECONDS = 0.05
MAX_SLICES = 20
# The fewest instances per slice worth a launch of its own.
INSTANCES_PER_SLICE = 10

_T = TypeVar("_T", bound=Hashable)


def slices_for(interval: float) -> int:
    """How many slices an interval of `interval` seconds is cut into."""
    return max(1, min(MAX_SLICES, round(interval / SLICE_SECONDS)))


def slices_needed(most: int, members: int, per_slice: int) -> int:
    """
    How many of at most `most` slices `members` instances are spread over,
    at least `per_slice` to a slice where there are that few (0: `most`
    whatever their number).
    """
    if per_slice <= 0:
        return most
    return max(1, min(most, -(-members // per_slice)))


class Slices(Generic[_T]):
    """The instances of each slice, and which slice is launched next."""

    def __init__(self, count: int) -> None:
        self._slices: list[list[_T]] = []
        # Each member's slice, in the order members were added.
        self._slot: dict[_T, int] = {}
        self._next_slot = 0
        self._next_slice = 0
        # Members not launched since they were added: they have no place in
        # the round to keep (`resize`).
        self._fresh: set[_T] = set()
        self._cut(count)

    def __len__(self) -> int:
        return len(self._slices)

    def add(self, member: _T) -> None:
        """Put `member` in the next slice round robin."""
        slot = self._next_slot % len(self._slices)
        self._next_slot += 1
        self._put(member, slot)
        self._fresh.add(member)

    def remove(self, member: _T) -> None:
        """Take `member` out of its slice."""
        self._slices[self._slot.pop(member)].remove(member)
        self._fresh.discard(member)

    def slot_of(self, member: _T) -> int:
        """The index of the slice `member` belongs to."""
        return self._slot[member]

    def resize(self, count: int, keep_phase: bool = False) -> None:
        """
        Cut into `count` slices, every member assigned again from the first,
        the next launch the first slice's. With `keep_phase` (asked between
        two rounds), every member launched since it was added goes to a
        slice that falls where its own did in the round, or before it: none
        waits longer for its next check than its old slice would have had
        it wait. Within that, the slices are filled evenly, the earliest
        first, and the members not launched yet (no place to keep) fill the
        rest: kept each at its own place, the members of one old slice
        stayed in one new slice, and a cut from one slice to 20 left every
        instance in the first. Members added later fill the slices in turn.
        """
        fresh = self._fresh
        if not keep_phase:
            members = list(self._slot)
            self._cut(count)
            for member in members:
                self.add(member)
            self._fresh = fresh
            return
        old, slots = len(self._slices), self._slot
        self._slices = [[] for _ in range(count)]
        self._slot = {}
        # The latest slice each may take, tightest first; no slice past
        # `most` members but where a member has no earlier one left.
        latest = {
            member: count - 1 if member in fresh else slot * count // old
            for member, slot in slots.items()
        }
        most, free = -(-len(slots) // count), 0
        for member in sorted(slots, key=latest.__getitem__):
            while free < count - 1 and len(self._slices[free]) >= most:
                free += 1
            self._put(member, min(free, latest[member]))
        self._next_slice = 0

    def starts_round(self) -> bool:
        """Whether the next slice launched starts a round."""
        return self._next_slice == 0

    def next(self) -> tuple[int, list[_T]]:
        """The index and the members of the slice to launch now; 0 starts a round."""
        index = self._next_slice
        self._next_slice = (index + 1) % len(self._slices)
        members = self._slices[index]
        if self._fresh:
            self._fresh.difference_update(members)
        return index, members

    def _put(self, member: _T, slot: int) -> None:
        self._slot[member] = slot
        self._slices[slot].append(member)

    def _cut(self, count: int) -> None:
        self._slices = [[] for _ in range(count)]
        self._slot = {}
        self._fresh = set()
        self._next_slot = self._next_slice = 0
