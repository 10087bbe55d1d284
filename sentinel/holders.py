"""
Nodes of ours that another session holds: parked, watched, asked about
again, and judged (`sentinel.ownership` has the rules).

A write that finds a node held by another session (`writes.HeldElsewhere`)
parks it rather than retrying it with the others: a watch says at once
when the node goes (it is then written, so taken over), and a re-check
backs off from `RECHECK_FIRST` to `RECHECK_MAX` in case a watch is lost,
or comes sooner when the rules may change their verdict; after the holder
writes, at most one question per `RECHECK_MIN` (a watch fires once:
asking again re-arms it). What a watch says while a call about the node is
in flight is kept for its answer to take into account.

An instance node that a new session of this agent finds held names the
status and ``since`` an earlier process of it published (crashed, its
session not expired yet): it is read once, and what it says is kept
(`Node.kept`) for the node this process makes once that session is gone,
so that an instance whose status the crash did not change keeps its
``since``. Only a node that says this agent wrote it, on an ephemeral
node, is taken at its word, and only as far as `InstanceHealth.keep_since`
takes any.

A holder the rules call a conflict is logged once at error and reported
(`conflicts`: /healthz fails until it ends, and its end is logged at
info). A live session holding this agent's own node is a twin: `on_twin`
hears why, once, and the publisher stops writing; it must not fight it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kazoo.protocol.states import EventType, WatchedEvent
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from sentinel.documents import said_since, stored_document
from sentinel.nodes import LOG_NAMESPACE, Node, Nodes
from sentinel.ownership import LIVE, Holding, OwnershipRules, held_by
from sentinel.writes import Lifecycle, WriteQueue, acting
from sentinel.zk import ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# Re-checks of a node held by another session: the first after 1 s, then
# twice as long each time up to RECHECK_MAX; after the holder writes, at
# most one per RECHECK_MIN (a watch fires once: asking again re-arms it).
RECHECK_FIRST = 1.0
RECHECK_MAX = 30.0
RECHECK_MIN = 1.0


class Holders:
    """The nodes of `nodes` that other sessions hold (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        nodes: Nodes,
        queue: WriteQueue,
        life: Lifecycle,
        agent_id: str,
        on_twin: Callable[[str], None],
    ) -> None:
        self._reactor = reactor
        self._zk = zk
        self._nodes = nodes
        self._queue = queue
        self._life = life
        self._agent_id = agent_id
        self._on_twin = on_twin
        # Conflicts declared so far, and exists calls made to learn who
        # holds a node (for /metrics).
        self.conflicts_started = 0
        self.ownership_checks = 0

    @property
    def rules(self) -> OwnershipRules:
        """
        The rules for the session timeout ZooKeeper granted us (the one
        asked for until it has): a predecessor of this agent was most
        likely granted the same.
        """
        return OwnershipRules(self._zk.session_timeout)

    @property
    def conflicts(self) -> Mapping[str, str]:
        """Each node in conflict now (this agent's first), and why."""
        return {
            node.path: self.rules.describe(node.holding)
            for node in self._nodes
            if node.holding is not None and node.holding.conflict is not None
        }

    @property
    def waiting(self) -> Mapping[str, str]:
        """
        Each node another session holds, in conflict or not yet, and who;
        but those this agent would make only in place of an absent member
        (`Node.standing_in`), held by a live session of the new ZooKeeper:
        nothing of ours waits for them.
        """
        return {
            node.path: self.rules.describe(node.holding)
            for node in self._nodes
            if node.holding is not None and not node.standing_in
        }

    def ask(self, node: Node) -> Deferred[Any]:
        """The node's stat, watching it while another session holds it."""
        self.ownership_checks += 1
        node.asked_at = self._reactor.seconds()
        return self._zk.exists(node.path, watch=node.watcher)

    def held(self, node: Node, stat: Any) -> None:
        """Another session holds `node` (`stat` says which): park it."""
        now = self._reactor.seconds()
        before = node.holding
        holding = held_by(before, stat, now)
        if before is not None and holding is not before:
            self.release(node, f"now held by session {holding.session:#x}")
        node.holding = holding
        if not holding.said_asked:
            self._read_said(node, holding)
        # A watch that fired while we asked: its news may postdate the answer.
        event, node.event = node.event, None
        if event == EventType.CHANGED:
            holding.written = True
        node.parked = True
        node.backoff = min(max(node.backoff * 2, RECHECK_FIRST), RECHECK_MAX)
        if self._life.halted is None:
            self._judge(node)
        if self._life.halted is not None:
            return
        if holding is not before and holding.conflict is None and not node.standing_in:
            log.info(
                "{path} is {holder}",
                path=node.path,
                holder=self.rules.describe(holding),
            )
        if event in (EventType.DELETED, EventType.CREATED):
            self.recheck_soon(node)
        else:
            decision = self.rules.next_decision(holding, now)
            self._recheck_in(node, min(node.backoff, decision or node.backoff))

    def _read_said(self, node: Node, holding: Holding) -> None:
        """
        Keep the status and ``since`` an instance node held by another
        session of this agent says (module docstring). Without, a crash
        and a start without a state_dir dated every instance node the
        new process made from its own first check (3.5 s later than
        published, with 8 instances that stayed up).
        """
        holding.said_asked = True
        if self._nodes.instances.get(node.name) is not node or holding.session == 0:
            return

        def answered(result: tuple[bytes, Any]) -> None:
            data, stat = result
            document = stored_document(data) or {}
            if (
                stat.ephemeralOwner == holding.session
                and node.holding is holding
                and document.get("agent") == self._agent_id
            ):
                node.kept = said_since(document)

        def unread(_: object) -> None:
            # Not read (gone meanwhile, the connection lost): asked again
            # at the node's next re-check while the same session holds it;
            # the node is made as this process finds the instance if it
            # never is.
            holding.said_asked = False

        d = self._zk.get(node.path)
        d.addCallbacks(answered, unread)
        d.addErrback(lambda f: log.failure("reading {path} failed", f, path=node.path))

    def watched(self, node: Node, event: WatchedEvent) -> None:
        """A watch on a node held elsewhere fired (on the reactor thread)."""
        holding = node.holding
        life = self._life
        if (
            event.type == EventType.NONE
            or holding is None
            or not life.running
            or life.halted is not None
        ):
            # NONE: kazoo dropped its watches with the connection; the
            # reconnection asks about every node again.
            return
        if not node.parked:
            # A call about the node is in flight: its answer decides.
            if node.event != EventType.DELETED:
                node.event = event.type
            return
        if event.type == EventType.CHANGED:
            holding.written = True
            self._judge(node)
        if life.halted is None:
            # Changed: watch it again. Gone (or replaced): take it over if
            # it is free.
            self.recheck_soon(node)

    def recheck_soon(self, node: Node) -> None:
        """
        Ask about `node` now, or RECHECK_MIN after the last time: however
        busy its holder, a watch costs at most a call per RECHECK_MIN.
        """
        since = self._reactor.seconds() - node.asked_at
        self._recheck_in(node, max(0.0, RECHECK_MIN - since), sooner=True)

    def release(self, node: Node, why: str) -> None:
        """Forget another session's hold on `node`; say so if it was a conflict."""
        holding, node.holding = node.holding, None
        node.parked = False
        node.event = None
        node.backoff = 0.0
        node.cancel_recheck()
        if holding is None:
            return
        if holding.conflict is not None:
            log.info(
                "ZooKeeper conflict over: {path} was {holder}; {why}",
                path=node.path,
                holder=self.rules.describe(holding),
                why=why,
            )
        elif node.owned:
            log.info(
                "took {path} over from session {session}",
                path=node.path,
                session=f"{holding.session:#x}",
            )

    def _recheck_in(self, node: Node, delay: float, sooner: bool = False) -> None:
        if not acting(self._life):
            return
        call = node.recheck
        if call is not None and call.active():
            if sooner and call.getTime() <= self._reactor.seconds() + delay:
                return
            call.cancel()
        node.recheck = self._reactor.callLater(delay, self._recheck_now, node)

    def _recheck_now(self, node: Node) -> None:
        node.cancel_recheck()
        if node.parked:
            node.parked = False
            self._queue.enqueue(node)

    def _judge(self, node: Node) -> None:
        """
        Declare a conflict, once, when the rules say the holder is one;
        never for a node made only if missing, in place of a member waited
        for (`Node.standing_in`): its holder, that member most likely,
        back and writing it, is none.
        """
        holding = node.holding
        assert holding is not None
        if node.standing_in:
            return
        verdict = self.rules.verdict(holding, self._reactor.seconds())
        if verdict is None or verdict == holding.conflict:
            return
        first = holding.conflict is None
        holding.conflict = verdict
        agent = self._nodes.agent.holding
        if verdict == LIVE and agent is not None and agent.session == holding.session:
            # A live session holds this agent's own node: a twin.
            agent.conflict = LIVE
            self._stop_for_twin(agent)
            return
        if first:
            self.conflicts_started += 1
            log.error(
                "ZooKeeper conflict: {path} {holder}; not overwriting it, and "
                "/healthz fails until it goes",
                path=node.path,
                holder=self.rules.describe(holding),
            )

    def _stop_for_twin(self, holding: Holding) -> None:
        self.conflicts_started += 1
        line = (
            f"agent id {self._agent_id!r} is in use by another live agent: "
            f"{self._nodes.agent.path} {self.rules.describe(holding)}"
        )
        log.error("ZooKeeper conflict: {why}; stopping", why=line)
        self._on_twin(line)
