"""
A ZooKeeper reader for a central agent's thousands of instance nodes, on a
thread of its own, as a proxy watching the whole fleet would see them.

Reading 3,000 nodes through kazoo costs about 0.3 s of this process's CPU
(`tests.gaps` reads every node at each poll, which holds 50 nodes every
20 ms but not 3,000 every 100 ms). So presence and data are read apart:
every step (0.1 s) lists the children of ``{root}/instances`` (one
request: a node missing from the list is missing) and reads the agent node
and a third of the instance nodes' data, so that each node's data is read
every 0.3 s. For each node it keeps the longest time it was missing, when
its data first changed after `FleetWatch.mark`, how many times its status
changed and when it first said ``down`` after the mark, and for how long
its ``checked_at`` was older than `stale_after` seconds (the longest such
stretch, ongoing ones included), and the oldest ``checked_at`` it said.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import attr
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

STEP = 0.1
SLICES = 3
READ_TIMEOUT = 2.0


@attr.define
class NodeSeen:
    """What the reads saw of one node."""

    missing_since: float | None = None
    longest_gap: float = 0.0
    mzxid: int | None = None
    marked_mzxid: int | None = None
    rewritten_at: float | None = None
    status: str | None = None
    flips: int = 0
    down_at: float | None = None
    stale_since: float | None = None
    longest_stale: float = 0.0
    oldest_age: float = 0.0

    def present(self, now: float, present: bool) -> None:
        if present and self.missing_since is not None:
            self.longest_gap = max(self.longest_gap, now - self.missing_since)
            self.missing_since = None
        elif not present and self.missing_since is None:
            self.missing_since = now

    def gap(self, now: float) -> float:
        ongoing = 0.0 if self.missing_since is None else now - self.missing_since
        return max(self.longest_gap, ongoing)

    def stale(self, now: float) -> float:
        ongoing = 0.0 if self.stale_since is None else now - self.stale_since
        return max(self.longest_stale, ongoing)


class FleetWatch:
    """Reads `instances` (names under ``{root}/instances``) and `agent_node`."""

    def __init__(
        self,
        hosts: str,
        root: str,
        instances: Sequence[str],
        agent_node: str,
        stale_after: float,
    ) -> None:
        self.parent = f"{root}/instances"
        self.paths = {f"{self.parent}/{name}": name for name in instances}
        self.agent_node = agent_node
        self.stale_after = stale_after
        self.errors = 0
        self.steps = 0
        self.seen = {path: NodeSeen() for path in [agent_node, *self.paths]}
        self._marked = False
        self._slice = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._client = KazooClient(hosts=hosts, timeout=30.0)
        self._client.start(timeout=10.0)
        self._thread = threading.Thread(target=self._run, name="fleet", daemon=True)

    def start(self) -> FleetWatch:
        """Read everything once, then start the thread."""
        for number in range(SLICES):
            self._step(number)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading and close the reader's session (bounded)."""
        self._stopping.set()
        self._thread.join(10.0)
        self._client.stop()
        self._client.close()

    def mark(self) -> None:
        """From now on, changes of data and status count."""
        with self._lock:
            self._marked = True
            for seen in self.seen.values():
                seen.marked_mzxid, seen.rewritten_at = seen.mzxid, None
                seen.flips, seen.down_at = 0, None
                seen.longest_gap = seen.longest_stale = seen.oldest_age = 0.0

    def snapshot(self) -> dict[str, NodeSeen]:
        """A copy of what was seen of each node, ongoing stretches closed now."""
        now = time.monotonic()
        with self._lock:
            return {
                path: attr.evolve(
                    seen, longest_gap=seen.gap(now), longest_stale=seen.stale(now)
                )
                for path, seen in self.seen.items()
            }

    def _run(self) -> None:
        while not self._stopping.wait(STEP):
            try:
                self._step(self._slice)
            except Exception:
                # A read that failed (ZooKeeper frozen, the reader
                # reconnecting) proves nothing either way: counted, not
                # taken for a gap.
                self.errors += 1
            self._slice = (self._slice + 1) % SLICES

    def _step(self, number: int) -> None:
        client = self._client
        if not client.connected:
            raise ConnectionError("the reader is not connected")
        listing = client.get_children_async(self.parent)
        paths = [self.agent_node, *list(self.paths)[number::SLICES]]
        reads = [(path, client.get_async(path)) for path in paths]
        children = set(listing.get(timeout=READ_TIMEOUT))
        answers: list[tuple[str, Any, bytes | None]] = []
        for path, read in reads:
            try:
                data, stat = read.get(timeout=READ_TIMEOUT)
                answers.append((path, stat.mzxid, data))
            except NoNodeError:
                answers.append((path, None, None))
        now, wall = time.monotonic(), time.time()
        with self._lock:
            self.steps += 1
            for path, name in self.paths.items():
                self.seen[path].present(now, name in children)
            self.seen[self.agent_node].present(now, answers[0][1] is not None)
            for path, mzxid, data in answers:
                if mzxid is not None and data is not None:
                    self._saw(self.seen[path], now, wall, mzxid, data)

    def _saw(
        self, seen: NodeSeen, now: float, wall: float, mzxid: int, data: bytes
    ) -> None:
        seen.mzxid = mzxid
        if self._marked and seen.rewritten_at is None and mzxid != seen.marked_mzxid:
            seen.rewritten_at = now
        try:
            document = json.loads(data)
        except ValueError:
            return
        if not isinstance(document, dict):
            return
        status = document.get("status")
        if isinstance(status, str):
            if self._marked and seen.status is not None and status != seen.status:
                seen.flips += 1
            if self._marked and status == "down" and seen.down_at is None:
                seen.down_at = now
            seen.status = status
        checked_at = document.get("checked_at")
        if isinstance(checked_at, (int, float)):
            age = wall - checked_at
            seen.oldest_age = max(seen.oldest_age, age)
            if age > self.stale_after and seen.stale_since is None:
                seen.stale_since = now - (age - self.stale_after)
            elif age <= self.stale_after and seen.stale_since is not None:
                seen.longest_stale = max(seen.longest_stale, now - seen.stale_since)
                seen.stale_since = None
