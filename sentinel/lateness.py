"""
Writes that succeed but come late: ZooKeeper's copy of a node older than
readers are promised, while its newer state waits for a write slot.

On a narrow or slow link to ZooKeeper every write may succeed while the
queue (`sentinel.writes`) falls further behind: at 24 kbit/s, 300
instances at ``refresh = 30`` want 10 writes a second where the link
carries about 6, and the instance nodes readers saw were up to 82 s old
while /healthz said ok. Readers are promised an instance node rewritten
at least every ``refresh`` seconds (they judge it by ``checked_at``). So
a node waiting for a slot is late when:

- an instance node: the data of its last write was built more than
  ``refresh`` ago, plus the instance's own staleness bound (`stale_after`
  of its health: ``(max(rise, fall) + 1) x interval``, 4 s at the
  defaults), the margin a co-observer gives a verdict before calling it
  late (`sentinel.opinions`), which also absorbs a burst of writes on a
  healthy link;
- any other node of an instance (its opinion, its discovery member, an
  instance node never written or being deleted): its newest change has
  waited as long.

An instance node this process never wrote is missing for readers, or
another session's (a previous primary's, a previous process's): it is
judged sooner, once due `UNWRITTEN_AFTER` (the bound of a discovery
member missing, `sentinel.zkreport`), and named apart: before, it waited
the 34 s of a stale node. (Instances not looked at yet have no node to
write: `sentinel.startup` judges them.)

Nodes of no instance (the agent's, its catalog) are not judged: they say
nothing readers take for an instance's status. Nodes whose writes fail,
or that another session holds, have reasons of their own
(`sentinel.zkreport`); a write in flight ends within the bridge's call
timeout. Only the nodes waiting for a slot are looked at, at most once a
`STEP`: none on a link that keeps up.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.interfaces import IReactorTime

from sentinel.nodes import Node, Nodes
from sentinel.sample import NAMED, others
from sentinel.writes import WriteQueue

# Seconds a look at the waiting nodes is reused for (/healthz, /metrics).
STEP = 1.0
# Seconds an instance node never written by this process may wait for a
# slot, from when it was first due (module docstring).
UNWRITTEN_AFTER = 5.0


class Lateness:
    """How late the waiting writes of `queue` are (module docstring)."""

    def __init__(
        self, clock: IReactorTime, nodes: Nodes, queue: WriteQueue, refresh: float
    ) -> None:
        self._clock = clock
        self._nodes = nodes
        self._queue = queue
        self._refresh = refresh
        self._looked_at = -math.inf
        # Of the last look: how many nodes are late, and the oldest's path
        # and age; the oldest age of any waiting node (late or not).
        self.late = 0
        self.oldest: tuple[str, float] | None = None
        self.behind: float | None = None
        # Of the same look: the instance nodes never written that waited
        # `UNWRITTEN_AFTER` or more, and the oldest's path and wait.
        self.unwritten = 0
        self.oldest_unwritten: tuple[str, float] | None = None
        # Of the same look, the first paths of each kind met, to name a
        # sample after the oldest (`sample.others`): one more than that
        # names, the oldest being among them or not.
        self.late_paths: list[str] = []
        self.unwritten_paths: list[str] = []

    def look(self) -> None:
        """Look at the waiting nodes, unless that was done within `STEP`."""
        now = self._clock.seconds()
        if now - self._looked_at < STEP:
            return
        self._looked_at = now
        late = unwritten = 0
        oldest: tuple[str, float] | None = None
        oldest_unwritten: tuple[str, float] | None = None
        behind: float | None = None
        late_paths: list[str] = []
        unwritten_paths: list[str] = []
        for node in self._queue.waiting():
            judged = self._age(node, now)
            if judged is None:
                continue
            age, limit = judged
            if self._never_written(node) and age >= UNWRITTEN_AFTER:
                unwritten += 1
                if len(unwritten_paths) <= NAMED:
                    unwritten_paths.append(node.path)
                if oldest_unwritten is None or age > oldest_unwritten[1]:
                    oldest_unwritten = (node.path, age)
            if behind is None or age > behind:
                behind = age
            if age > limit:
                late += 1
                if len(late_paths) <= NAMED:
                    late_paths.append(node.path)
                if oldest is None or age > oldest[1]:
                    oldest = (node.path, age)
        self.late, self.oldest, self.behind = late, oldest, behind
        self.unwritten, self.oldest_unwritten = unwritten, oldest_unwritten
        self.late_paths, self.unwritten_paths = late_paths, unwritten_paths

    def _never_written(self, node: Node) -> bool:
        """Whether `node` is an instance node this process has not written."""
        state = node.state
        return (
            node.published_at is None
            and not node.removed
            and node.member is None
            and state is not None
            and self._nodes.instances.get(state.name) is node
        )

    def _age(self, node: Node, now: float) -> tuple[float, float] | None:
        """How old `node`'s copy is, and how old it may be; None: not judged."""
        state = node.state
        if state is None:
            return None
        since = node.due_since
        if (
            node.published_at is not None
            and not node.removed
            and node.member is None
            and self._nodes.instances.get(state.name) is node
        ):
            since = node.published_at
        if since is None:
            return None
        return now - since, self._refresh + state.health.stale_after

    def unhealthy_reason(self) -> str | None:
        """Why /healthz fails on this account, or None."""
        self.look()
        if not self.late or self.oldest is None:
            return None
        path, age = self.oldest
        more = _others(path, self.late_paths, self.late)
        return (
            f"zookeeper: writes are late: {path} {age:.0f} s old and waiting to "
            f"be written{more}, over refresh ({self._refresh:g} s): readers see "
            f"stale data ({self._queue.queued} writes queued, "
            f"{self._queue.in_flight} in flight)"
        )

    def unwritten_reason(self) -> str | None:
        """
        Why /healthz fails for instance nodes never written that waited
        `UNWRITTEN_AFTER` for a slot, or None.
        """
        self.look()
        if not self.unwritten or self.oldest_unwritten is None:
            return None
        path, age = self.oldest_unwritten
        more = _others(path, self.unwritten_paths, self.unwritten)
        return (
            f"zookeeper: {path} not written by this agent yet, due {age:.0f} s"
            f" ago and waiting to be written{more}: readers find it missing, or"
            f" another session's ({self._queue.queued} writes queued,"
            f" {self._queue.in_flight} in flight)"
        )

    def stats(self) -> dict[str, Any]:
        """
        For /debug/stats: late nodes, the oldest waiting one's age, and
        the instance nodes never written that waited too long.
        """
        self.look()
        return {
            "writes_late": self.late,
            "writes_behind_seconds": self.behind,
            "instance_nodes_unwritten": self.unwritten,
        }


def _others(oldest: str, paths: list[str], count: int) -> str:
    """The nodes of `paths` but the `oldest` named (of `count` in all)."""
    return others((p for p in paths if p != oldest), count - 1)
