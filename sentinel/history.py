"""
Each instance's recent checks, for the status page's sparklines.

A monitor listener runs for every check (thousands per second at scale), so
recording is one dictionary lookup and one append to a fixed-size ring; a
failed check appends a shared tuple rather than a new one. Rings of instances
no longer watched are dropped by `forget`, or by `prune` when the page is
rendered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence

from sentinel.health import Transition
from sentinel.monitor import InstanceState
from sentinel.probe import Observation

# One check: its latency in milliseconds (None when it failed) and whether
# it succeeded.
Point = tuple["float | None", bool]

SIZE = 60

_FAILED: Point = (None, False)


class _Rings(dict[str, "deque[Point]"]):
    """Creates an instance's ring on its first check."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __missing__(self, name: str) -> deque[Point]:
        ring: deque[Point] = deque(maxlen=self.size)
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
        self._rings[state.instance.name].append(
            (observation.latency_ms, True) if observation.ok else _FAILED
        )

    def points(self, name: str) -> Sequence[Point]:
        """The instance's recent checks, oldest first (empty if none)."""
        return tuple(self._rings.get(name, ()))

    def forget(self, name: str) -> None:
        """Drop an instance's ring (it is no longer watched)."""
        self._rings.pop(name, None)

    def prune(self, names: Collection[str]) -> None:
        """Drop the rings of every instance not in `names`."""
        for name in [n for n in self._rings if n not in names]:
            del self._rings[name]

    def __len__(self) -> int:
        return len(self._rings)
