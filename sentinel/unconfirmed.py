"""
Instance nodes written before a new ZooKeeper session and not yet again
since it: which, for ``/healthz`` and the log.

Until the new session's first write of a node is answered, an earlier
session may hold it, publishing what is no longer true (ZooKeeper restored
from an old snapshot), so ``/healthz`` fails meanwhile
(`sentinel.zkreport`). An operator paged by that 503 needs the names, not
only how many: the reason names the first `NAMED` by name and the total,
and ``/healthz`` has them as ``unconfirmed`` (``{"count", "names"}``).

The names cost nothing per answer: the nodes are sorted by name once, at
the connection, and each look keeps that order as it drops the nodes
written since, so the first `NAMED` are a slice (at 19,000 unconfirmed,
a look's filter costs some 7 ms, the naming nothing measurable:
BENCHMARKS.rst). One line is logged when such a state starts, at the
connection, and one when it ends: at the first look that finds none left
(a ``/healthz`` answer, a scrape, or the agent node's heartbeat, whichever
comes first), or when the connection is lost again, whose own reason takes
over; never a line per look.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted.logger import Logger

from sentinel.nodes import Node, Nodes
from sentinel.sample import NAMED, sample

log = Logger()


class Unconfirmed:
    """The instance nodes of a new session not confirmed yet, by name."""

    def __init__(self, reactor: Any, nodes: Nodes) -> None:
        self._reactor = reactor
        self._nodes = nodes
        self._connected_at = 0.0
        # Sorted by name at the connection; each look keeps the order.
        self._nodes_left: list[Node] = []
        # What the last look reported (None: nothing, or not reported).
        self._said: list[Node] | None = None

    @property
    def waiting(self) -> bool:
        """Whether any node was still unconfirmed at the last look."""
        return bool(self._nodes_left)

    def connected(self) -> None:
        """A new session connected: the nodes written before it are unconfirmed."""
        self._ended("the connection was made again")
        self._connected_at = self._reactor.seconds()
        self._nodes_left = sorted(
            (n for n in self._nodes.instances.values() if n.written_at is not None),
            key=lambda n: n.name,
        )
        if self._nodes_left:
            log.warn(
                "zookeeper: new session: {count} instance node(s) written before"
                " it are not confirmed until written again ({names}): /healthz"
                " fails meanwhile",
                count=len(self._nodes_left),
                names=_names_said(self._nodes_left),
            )

    def disconnected(self) -> None:
        """The connection is lost: its own reason takes over from this one."""
        self._ended("the connection was lost again")

    def look(self, failing: Collection[Node]) -> list[Node]:
        """
        The nodes still unconfirmed, by name: written before the
        connection and not since, nor known held elsewhere (the holders
        say those), nor `failing` for long (named as failing).
        """
        if not self._nodes_left:
            return []
        connected_at = self._connected_at
        instances = self._nodes.instances
        self._nodes_left = left = [
            node
            for node in self._nodes_left
            if node.written_at is not None
            and node.written_at < connected_at
            and instances.get(node.name) is node
            and not node.removed
            and not node.parked
            and node.holding is None
            and node not in failing
        ]
        if not left:
            self._ended(None)
        return left

    def reason(self, left: list[Node]) -> str | None:
        """
        /healthz's line for the nodes `look` left (none while not writing
        on purpose), or None; noted for `detail`.
        """
        self._said = left or None
        if not left:
            return None
        return (
            f"zookeeper: {len(left)} instance node(s) not written again since"
            f" connecting ({_names_said(left)}): their published status may be"
            " another session's"
        )

    def detail(self) -> dict[str, Any] | None:
        """
        ``unconfirmed`` in /healthz: how many the reason just said, and the
        first `NAMED` names; None when it said none.
        """
        said = self._said
        if not said:
            return None
        return {"count": len(said), "names": [n.name for n in said[:NAMED]]}

    def _ended(self, why: str | None) -> None:
        left = self._nodes_left
        if not left and why is not None:
            return
        seconds = self._reactor.seconds() - self._connected_at
        if why is None:
            log.info(
                "zookeeper: no instance node written before the new session is"
                " left unconfirmed, {seconds:.1f} s after connecting",
                seconds=seconds,
            )
        else:
            log.info(
                "zookeeper: {count} instance node(s) still unconfirmed after"
                " {seconds:.1f} s when {why} ({names})",
                count=len(left),
                seconds=seconds,
                why=why,
                names=_names_said(left),
            )
        self._nodes_left = []
        self._said = None


def _names_said(nodes: list[Node]) -> str:
    """The first names, and how many more (`sample.sample`)."""
    return sample((n.name for n in nodes), len(nodes))
