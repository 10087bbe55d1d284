"""
After every (re)connection to ZooKeeper, the publisher asks it again who
owns each node instead of trusting its memory (`ownership.ours`), and
writes every node again from current state: a reconnection to the same
session may have missed writes, a new session holds none of our nodes, and
a ZooKeeper that came back empty holds nothing at all. Back on the same
session, whose nodes readers still see, the writes go a few at a time
(`sentinel.writes.RESYNC_IN_FLIGHT`); for a new one, as fast as the
window allows.

What was learnt about other holders stays (the same holder's clock goes
on), but the watches went with the connection: a node kept for its new
primary is watched again, and the opinions heard are read again. A new
session is told to the state file (`sentinel.handoff`), which says
whether it is the previous process's, inherited: then the sweep runs
(`sentinel.sweep`). A new session after one of this process's own is
told to the group (`rejoined`) once every node is forgotten as ours,
and before any write: its last view went with the old session
(`Membership.rejoin`), and the view it applies marks nodes, whose writes
start at once: told first, a node still taken for ours was set at its
old session's version, and landed on the one another member had made
there since at the same version (small numbers after an expiry). A lost connection is
told to the state file too, which then learns whether a newer process
took the session. A bug in the state file's side, or in the group's, is
counted (`sentinel.bugs`), never a reason to skip the rest.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.python.failure import Failure

from sentinel.discovery import Discovery
from sentinel.handoff import SessionHandoff
from sentinel.nodes import Nodes
from sentinel.opinions import Opinions
from sentinel.sweep import Sweep
from sentinel.takeover import Takeovers
from sentinel.writes import Lifecycle, WriteQueue
from sentinel.zk import CONNECTED, LOST, SUSPENDED, ZooKeeper


class Resync:
    """Listens to the bridge's states (module docstring)."""

    def __init__(
        self,
        zk: ZooKeeper,
        nodes: Nodes,
        queue: WriteQueue,
        life: Lifecycle,
        sweep: Sweep,
        takeovers: Takeovers,
        opinions: Opinions,
        discovery: Discovery | None,
        handoff: SessionHandoff | None,
        rejoined: Callable[[], None] = lambda: None,
    ) -> None:
        """
        @param rejoined: told of a new session after one of this process's
            own, before the nodes are written again in it.
        """
        self._zk = zk
        self._rejoined = rejoined
        self._nodes = nodes
        self._queue = queue
        self._life = life
        self._sweep = sweep
        self._takeovers = takeovers
        self._opinions = opinions
        self._discovery = discovery
        self._handoff = handoff
        # The session last connected.
        self._session: int | None = None

    def state_changed(self, state: str) -> None:
        """The bridge's state changed (a `ZooKeeper` state listener)."""
        if state != CONNECTED:
            if state in (SUSPENDED, LOST) and self._handoff is not None:
                self._handoff.disconnected()
            return
        client_id = self._zk.client_id
        if client_id is None:
            return
        inherited = False
        if self._handoff is not None and not self._life.superseded:
            inherited = self._told_handoff(self._handoff, client_id)
        same_session = client_id[0] == self._session
        rejoined = not same_session and self._session is not None
        self._session = client_id[0]
        # Forgotten before the group is told (`rejoined`): the view it
        # applies marks nodes, and a write starts at once, which would set
        # one still taken for ours at its old session's version.
        for node in self._nodes:
            node.owned = False
            node.watching = False
            node.dirty = True
            node.parked = False
            node.event = None
            node.cancel_recheck()
            if node.member is not None:
                node.member.reconnected(same_session)
        if rejoined:
            try:
                self._rejoined()
            except Exception:
                self._zk.internal_errors.record(
                    "telling the group of a new session", None, Failure()
                )
        if not same_session:
            self._sweep.new_session(inherited)
            if self._discovery is not None:
                self._discovery.new_session()
        for node in [n for n in self._nodes.instances.values() if n.released]:
            self._takeovers.watch_handoff(node)
        self._opinions.ask_all()
        self._sweep.start()
        if same_session:
            # The nodes are still there, ours: a few at a time, so that
            # rewriting them all maps no memory for good (`RESYNC_IN_FLIGHT`).
            self._queue.resync()
        else:
            # Readers miss every node until it is written: the whole window.
            self._queue.flush()

    def _told_handoff(
        self, handoff: SessionHandoff, client_id: tuple[int, bytes]
    ) -> bool:
        """
        Whether the session is the one inherited (`SessionHandoff.connected`).
        A bug there is counted, and the resync goes on as for an inherited
        session, the safe guess: the sweep then deletes the nodes the
        session holds for instances no longer configured (a new session
        holds none), and each node is asked about before it is created.
        """
        try:
            return handoff.connected(
                client_id, self._zk.replacements > 0, self._zk.granted_timeout
            )
        except Exception:
            self._zk.internal_errors.record(
                "telling the state file of the session", None, Failure()
            )
            return True
