"""
Each instance's recent checks, for the status page's sparklines.

A monitor listener runs for every check (thousands per second at scale), so
recording is one dictionary lookup and one store into a fixed-size ring. The
ring is an array of floats (the latency in milliseconds, NaN for a failed
check): about 300 bytes an instance, where a deque of tuples took 5 KB.
The ring of an instance no longer watched is dropped by `forget`, which the
monitor calls as it stops watching it: pruned only when the page was
rendered, the rings of replicas a flapping master listed and the agent
dropped again grew for good on an agent whose page nobody opened (2,394
rings in 4 minutes). The page still `prune`s before it draws.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Collection, Sequence

from sentinel.health import Transition
from sentinel.instance import InstanceState
from sentinel.observation import Observation

# One check: its latency in milliseconds (None when it failed) and whether
# it succeeded.
Point = tuple["float | None", bool]

SIZE = 60

_NAN = math.nan
# A place in a ring no check has filled yet (no latency is infinite).
_EMPTY = math.inf


class _Ring:
    """
    The last `size` latencies of one instance, NaN for a failed check, the
    places not filled yet `_EMPTY`: so that a check stores its latency and
    moves `next` on, and keeps no count.
    """

    __slots__ = ("values", "next")

    def __init__(self, size: int) -> None:
        self.values = array("f", [_EMPTY]) * size
        self.next = 0

    def points(self) -> tuple[Point, ...]:
        values, start = self.values, self.next
        ordered = [v for v in values[start:] + values[:start] if v != _EMPTY]
        return tuple((None, False) if v != v else (v, True) for v in ordered)


class _Rings(dict[str, _Ring]):
    """Creates an instance's ring on its first check."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __missing__(self, name: str) -> _Ring:
        ring = _Ring(self.size)
        self[name] = ring
        return ring


class CheckHistory:
    """The last `size` checks of every instance, oldest first."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self._rings = _Rings(size)

    def record(
        self,
        state: InstanceState,
        observation: Observation,
        transition: Transition | None,
        duration_s: float,
    ) -> None:
        """The monitor listener: remember one check's outcome."""
        # Stored here rather than by a method of the ring: one call less,
        # thousands of times a second.
        latency = observation.latency_ms
        ring = self._rings[state.instance.name]
        place = ring.next
        ring.values[place] = latency if observation.ok and latency is not None else _NAN
        ring.next = (place + 1) % self.size

    def points(self, name: str) -> Sequence[Point]:
        """The instance's recent checks, oldest first (empty if none)."""
        ring = self._rings.get(name)
        return () if ring is None else ring.points()

    def forget(self, name: str) -> None:
        """Drop an instance's ring (it is no longer watched)."""
        self._rings.pop(name, None)

    def prune(self, names: Collection[str]) -> None:
        """Drop the rings of every instance not in `names`."""
        for name in [n for n in self._rings if n not in names]:
            del self._rings[name]

    def __len__(self) -> int:
        return len(self._rings)
