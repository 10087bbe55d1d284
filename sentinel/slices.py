"""
Each interval cut into slices, launched evenly apart within it.

Thousands of checks launched at once would wait on the agent's own CPU,
and their measured latency would count that wait. So every instance
belongs to one slice, and each slice is launched once per interval,
``interval / count`` seconds after the one before. Instances are assigned
round robin, so that slices stay even as instances come and go.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

# Launches per interval are about this far apart, and at most this many.
SLICE_SECONDS = 0.05
MAX_SLICES = 20

_T = TypeVar("_T", bound=Hashable)


def slices_for(interval: float) -> int:
    """How many slices an interval of `interval` seconds is cut into."""
    return max(1, min(MAX_SLICES, round(interval / SLICE_SECONDS)))


class Slices(Generic[_T]):
    """The instances of each slice, and which slice is launched next."""

    def __init__(self, count: int) -> None:
        self._slices: list[list[_T]] = []
        # Each member's slice, in the order members were added.
        self._slot: dict[_T, int] = {}
        self._next_slot = 0
        self._next_slice = 0
        self._cut(count)

    def __len__(self) -> int:
        return len(self._slices)

    def add(self, member: _T) -> None:
        """Put `member` in the next slice round robin."""
        slot = self._next_slot % len(self._slices)
        self._next_slot += 1
        self._slot[member] = slot
        self._slices[slot].append(member)

    def remove(self, member: _T) -> None:
        """Take `member` out of its slice."""
        self._slices[self._slot.pop(member)].remove(member)

    def slot_of(self, member: _T) -> int:
        """The index of the slice `member` belongs to."""
        return self._slot[member]

    def resize(self, count: int) -> None:
        """Cut into `count` slices, every member assigned again from the first."""
        members = list(self._slot)
        self._cut(count)
        for member in members:
            self.add(member)

    def next(self) -> tuple[int, list[_T]]:
        """The index and the members of the slice to launch now; 0 starts a round."""
        index = self._next_slice
        self._next_slice = (index + 1) % len(self._slices)
        return index, self._slices[index]

    def _cut(self, count: int) -> None:
        self._slices = [[] for _ in range(count)]
        self._slot = {}
        self._next_slot = self._next_slice = 0
