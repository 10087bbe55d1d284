"""
Instance nodes that went with the session of the process before: not made
again yet, for ``/healthz`` and the log.

A process whose state file named a session to reattach to, and that got a
new one instead (the old one had expired, or was closed as unchecked for
too long: `sentinel.handoff`), knows its instance nodes went with the old
session: readers find them missing until this process writes each again.
This process never wrote them, so `sentinel.unconfirmed` (nodes written
before a new session) does not count them, and `sentinel.lateness` names
one only once due for ``UNWRITTEN_AFTER`` (5 s); the gap is shorter, and
``/healthz`` said 200 through most of it (0.2 and 1.0 s of a 0.8 and
1.8 s gap with ZooKeeper frozen across a restart: BENCHMARKS.rst). Now it
fails, naming them, until this process's session holds each (or it is
found held by another session, which the holders name, or failing long,
which its own reason names). A running agent whose own session expires
needs none of this: the nodes it wrote before are `sentinel.unconfirmed`'s.

The names are this agent's configured instances, sorted once when the new
session connects; each look keeps that order as it drops the instances
made again since, removed from the config, or, in a group whose view is
known, published by another member (the first `NAMED` are a slice, as in
`sentinel.unconfirmed`). Nothing is listed in ZooKeeper (anyone may add
children under ``{root}/instances``), and a check costs nothing: the
looks are ``/healthz``'s and the agent node's heartbeat's. One line is
logged when the state starts and one when it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from twisted.logger import Logger

from sentinel.nodes import Node, Nodes
from sentinel.sample import sample

log = Logger()


class Unremade:
    """The instance nodes gone with the previous process's session, by name."""

    def __init__(
        self,
        reactor: Any,
        nodes: Nodes,
        watched: Callable[[], Mapping[str, object]],
        view_known: Callable[[], bool],
    ) -> None:
        """
        @param watched: the instances this agent is configured to watch.
        @param view_known: whether the group's view says which instances
            this agent publishes (those it does have a node in `nodes`).
        """
        self._reactor = reactor
        self._nodes = nodes
        self._watched = watched
        self._view_known = view_known
        self._since = 0.0
        # The session gone, and why it was not reattached to.
        self._gone: tuple[int, str] | None = None
        # Sorted by name when the new session connected; each look keeps
        # the order.
        self._names_left: list[str] = []

    @property
    def waiting(self) -> bool:
        """Whether any node was still not made again at the last look."""
        return bool(self._names_left)

    def session_gone(self, session_id: int, why: str) -> None:
        """
        The first session of this process is not `session_id`, which the
        previous process left (`why`): its instance nodes went with it.
        """
        self._since = self._reactor.seconds()
        self._gone = (session_id, why)
        self._names_left = sorted(self._watched())
        if self._names_left:
            log.warn(
                "zookeeper: session {session} of the process before is gone"
                " ({why}): its {count} instance node(s) went with it, and"
                " /healthz fails until each is made again ({names})",
                session=f"{session_id:#x}",
                why=why,
                count=len(self._names_left),
                names=_names_said(self._names_left),
            )

    def look(self, failing: Collection[Node]) -> list[str]:
        """
        The names whose node is not made again yet: still watched, not
        held by this process's session, not found held by
        another session nor `failing` (named on those accounts), and, once
        the group's view is known, published by this agent.
        """
        if not self._names_left:
            return []
        watched = self._watched()
        instances = self._nodes.instances
        view_known = self._view_known()
        since = self._since
        left = []
        for name in self._names_left:
            if name not in watched:
                continue
            node = instances.get(name)
            if node is None:
                if not view_known:
                    left.append(name)
                continue
            if (
                node.removed
                or node.parked
                or node.holding is not None
                or node in failing
                # Made, or taken over, in this process's session. Not
                # `written_at`: a write with nothing to say yet (no check)
                # ends as if it wrote, and the nodes were still missing.
                or node.owned
            ):
                continue
            left.append(name)
        self._names_left = left
        if not left:
            log.info(
                "zookeeper: no instance node gone with the session of the"
                " process before is left for this agent to make again,"
                " {seconds:.1f} s after connecting",
                seconds=self._reactor.seconds() - since,
            )
        return left

    def reason(self, left: list[str]) -> str | None:
        """/healthz's line for the names `look` left, or None."""
        if not left or self._gone is None:
            return None
        session, why = self._gone
        return (
            f"zookeeper: not reattached to the session of the process before"
            f" ({session:#x}: {why}): {len(left)} instance node(s) went with it"
            f" and are not made again yet ({_names_said(left)}): readers find"
            " them missing"
        )


def _names_said(names: list[str]) -> str:
    """The first names, and how many more (`sample.sample`)."""
    return sample(names, len(names))
