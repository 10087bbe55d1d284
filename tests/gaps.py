"""
A ZooKeeper reader that polls every 20 ms on a thread of its own, as a proxy
that treats a missing node as gone would see the agent's nodes: for each
node, the longest time it was missing, when it was first rewritten after
a mark, and whether it ever said ``"status": "down"``; for each discovery
parent, the longest time it held fewer members than expected, and the most
it held. Used by the restart and group tests and by ``benchmarks/restart.py``.

Each poll sends every read at once (kazoo pipelines them) and waits for
the answers, so that a poll of 50 nodes costs a few milliseconds; a gap is
measured from the first poll that found a node missing to the first that
found it again.
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

POLL_STEP = 0.02
READ_TIMEOUT = 2.0


@attr.define
class _Seen:
    """What the polls saw of one node, or of one parent's members."""

    missing_since: float | None = None
    longest_gap: float = 0.0
    gaps: int = 0
    mzxid: int | None = None
    marked: bool = False
    marked_mzxid: int | None = None
    rewritten_at: float | None = None
    most_members: int = 0
    # When a poll first found it saying down, if one did, and what it said.
    down_at: float | None = None
    down_document: Any = None

    def present(self, now: float, present: bool) -> None:
        if present and self.missing_since is not None:
            self.longest_gap = max(self.longest_gap, now - self.missing_since)
            self.missing_since = None
        elif not present and self.missing_since is None:
            self.missing_since = now
            self.gaps += 1


class NodeWatch:
    """Polls `nodes` and the members under `parents` (how many each should hold)."""

    def __init__(
        self,
        hosts: str,
        nodes: Sequence[str],
        parents: dict[str, int] | None = None,
        step: float = POLL_STEP,
    ) -> None:
        self.nodes = list(nodes)
        self.parents = dict(parents or {})
        self.step = step
        self.polls = 0
        self.errors = 0
        self._seen = {key: _Seen() for key in [*self.nodes, *self.parents]}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._client = KazooClient(hosts=hosts, timeout=10.0)
        self._client.start(timeout=10.0)
        self._thread = threading.Thread(
            target=self._run, name="node-watch", daemon=True
        )

    def start(self) -> NodeWatch:
        """Start polling; the first poll is done when this returns."""
        self._poll()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling and close the reader's session (bounded)."""
        self._stopping.set()
        self._thread.join(10.0)
        self._client.stop()
        self._client.close()

    def mark(self) -> float:
        """From now on, a node whose data changes counts as rewritten."""
        with self._lock:
            for seen in self._seen.values():
                seen.marked, seen.marked_mzxid = True, seen.mzxid
                seen.rewritten_at = None
        return time.monotonic()

    def longest_gap(self, key: str) -> float:
        """The longest time `key` was missing so far (ongoing gaps included)."""
        with self._lock:
            seen = self._seen[key]
            ongoing = 0.0
            if seen.missing_since is not None:
                ongoing = time.monotonic() - seen.missing_since
            return max(seen.longest_gap, ongoing)

    def gaps(self) -> dict[str, float]:
        """The longest gap of each watched key that ever went missing."""
        with self._lock:
            missed = [key for key, seen in self._seen.items() if seen.gaps]
        return {key: self.longest_gap(key) for key in missed}

    def rewritten_at(self, node: str) -> float | None:
        """When the node was first seen rewritten after `mark` (monotonic)."""
        with self._lock:
            return self._seen[node].rewritten_at

    def seen_down(self) -> dict[str, Any]:
        """The nodes a poll found saying down, and what they first said."""
        with self._lock:
            return {
                key: seen.down_document
                for key, seen in self._seen.items()
                if seen.down_at is not None
            }

    def most_members(self, parent: str) -> int:
        """The most members `parent` held at any poll."""
        with self._lock:
            return self._seen[parent].most_members

    def _run(self) -> None:
        while not self._stopping.wait(self.step):
            try:
                self._poll()
            except Exception:
                # A read that failed (the reader reconnecting) proves
                # nothing either way: counted, not taken for a gap.
                self.errors += 1

    def _poll(self) -> None:
        client = self._client
        if not client.connected:
            # Reads made now would wait in kazoo, each a byte on a socket
            # pair nothing reads until it connects: a few hundred fill it
            # and block this thread, and its stop, for good.
            raise ConnectionError("the reader is not connected")
        reads = [(node, client.get_async(node)) for node in self.nodes]
        lists = [(parent, client.get_children_async(parent)) for parent in self.parents]
        answers: list[tuple[str, Any, Any]] = []
        for node, read in reads:
            try:
                data, stat = read.get(timeout=READ_TIMEOUT)
                answers.append((node, stat.mzxid, _down_document(data)))
            except NoNodeError:
                answers.append((node, None, None))
        counts = []
        for parent, listing in lists:
            try:
                counts.append((parent, len(listing.get(timeout=READ_TIMEOUT))))
            except NoNodeError:
                counts.append((parent, 0))
        now = time.monotonic()
        with self._lock:
            self.polls += 1
            for node, mzxid, down in answers:
                seen = self._seen[node]
                seen.present(now, mzxid is not None)
                if down is not None and seen.down_at is None:
                    seen.down_at, seen.down_document = now, down
                if mzxid is not None:
                    seen.mzxid = mzxid
                    if (
                        seen.marked
                        and seen.rewritten_at is None
                        and mzxid != seen.marked_mzxid
                    ):
                        seen.rewritten_at = now
            for parent, count in counts:
                seen = self._seen[parent]
                seen.present(now, count >= self.parents[parent])
                seen.most_members = max(seen.most_members, count)


def _down_document(data: bytes) -> Any:
    """The node's document if it says down, else None."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if isinstance(document, dict) and document.get("status") == "down":
        return document
    return None
