"""
The ZooKeeper layout (DESIGN.md section 5), written on change, refreshed,
re-created after every reconnect, and deleted on removal or clean stop.

Each node has a dirty flag rather than a queue of writes: its data is built
from the instance's current state when the write starts, so however many
changes come in, at most one write per node is queued, and it carries the
newest state. A failed write leaves the node dirty; it is retried, never
forgotten. After every (re)connection all nodes are marked unknown and
written again: the publisher asks ZooKeeper who owns each node instead of
trusting its memory, and takes over a node left by an earlier session of
ours once that session is gone.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, TypeVar

from kazoo.exceptions import NodeExistsError, NoNodeError
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel import __version__
from sentinel.health import Transition
from sentinel.monitor import InstanceState
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger()

# Writes in flight at once: ZooKeeper takes about 1,500 writes/s through the
# bridge when many are in flight; more only queues inside kazoo.
WRITES_IN_FLIGHT = 64
RETRY_DELAY = 1.0
# A clean stop deletes our nodes, then closes the session; bounded, so
# that SIGTERM ends the process within 5 s even with ZooKeeper unreachable.
STOP_DELETE_TIMEOUT = 1.5
STOP_CLOSE_TIMEOUT = 2.0
# The ZooKeeper calls counted in `write_calls` (for /metrics).
WRITE_OPS = ("create", "set", "delete")

_T = TypeVar("_T")


class OwnedElsewhere(Exception):
    """The node exists and belongs to another live session."""


class _Node:
    """
    One node we own (or want to): its path and what to write. `data` builds
    the bytes when a write starts; an instance node reads its `state`, which
    each publish replaces (a reload may give a name a new state).
    """

    __slots__ = (
        "path",
        "data",
        "state",
        "dirty",
        "queued",
        "writing",
        "owned",
        "removed",
        "written_at",
        "waiting_takeover",
    )

    def __init__(self, path: str, data: Callable[[], bytes]) -> None:
        self.path = path
        self.data = data
        self.state: InstanceState | None = None
        self.dirty = False
        self.queued = False
        self.writing = False
        self.owned = False
        self.removed = False
        self.written_at: float | None = None
        self.waiting_takeover = False


class ZooKeeperPublisher(Service):
    """Publishes instance states and this agent's node to ZooKeeper."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        root: str,
        agent_id: str,
        refresh: float,
        heartbeat: float,
        agent_document: Callable[[], dict[str, Any]],
    ) -> None:
        self._reactor = reactor
        self.zk = zk
        self.root = root
        self.agent_id = agent_id
        self.refresh = refresh
        self.heartbeat = heartbeat
        self._nodes: dict[str, _Node] = {}
        self._waiting: deque[_Node] = deque()
        self._in_flight = 0
        self._retry_call: IDelayedCall | None = None
        self._heartbeat: LoopingCall | None = None
        self.writes = {"ok": 0, "error": 0}
        # Each create/set/delete call by (op, "ok" or "error").
        self.write_calls: Counter[tuple[str, str]] = Counter()
        self.last_error: str | None = None
        self._agent = _Node(
            f"{root}/agents/{agent_id}",
            lambda: _encode(agent_document()),
        )
        zk.add_listener(self._zk_state)

    # Service

    def startService(self) -> None:
        super().startService()
        self.zk.start()
        heartbeat = LoopingCall(self._mark, self._agent)
        heartbeat.clock = self._reactor
        heartbeat.start(self.heartbeat, now=True).addErrback(
            lambda f: log.failure("agent heartbeat stopped", f)
        )
        self._heartbeat = heartbeat

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        deletes = [
            Deferred.fromCoroutine(self._delete_owned(node))
            for node in [*self._nodes.values(), self._agent]
            if node.owned and not node.removed
        ]
        d: Deferred[Any] = DeferredList(deletes, consumeErrors=True)
        d.addTimeout(STOP_DELETE_TIMEOUT, self._reactor)
        d.addBoth(lambda _: self.zk.stop(STOP_CLOSE_TIMEOUT))
        return d

    # The monitor's side

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        """Write the instance's node now if it changed, or if a refresh is due."""
        node = self._nodes.get(state.name)
        if node is None or node.removed:
            node = self._instance_node(state.name)
            node.state = state
            self._nodes[state.name] = node
            self._mark(node)
            self._mark(self._agent)
            return
        if node.state is not state:
            # The instance was replaced (a reload changed it): write the new
            # state, now, to the same node.
            node.state = state
            self._mark(node)
            return
        if transition is not None:
            self._mark(node)
            return
        written_at = node.written_at
        if written_at is not None and not node.dirty:
            if self._reactor.seconds() - written_at >= self.refresh:
                self._mark(node)

    def _instance_node(self, name: str) -> _Node:
        agent_id = self.agent_id
        node = _Node(f"{self.root}/instances/{name}", lambda: b"")

        def data() -> bytes:
            assert node.state is not None
            return _encode(node.state.document(agent_id))

        node.data = data
        return node

    def remove(self, name: str) -> None:
        """Delete the instance's node (the instance is no longer watched)."""
        node = self._nodes.get(name)
        if node is not None:
            node.removed = True
            self._mark(node)
            self._mark(self._agent)

    # Observability

    @property
    def writes_queued(self) -> int:
        """Nodes whose newest state is not yet written."""
        nodes = [*self._nodes.values(), self._agent]
        return sum(1 for n in nodes if n.dirty or n.writing)

    def stats(self) -> dict[str, Any]:
        """ZooKeeper's part of /debug/stats."""
        zk = self.zk
        return {
            "state": zk.state,
            "state_seconds": self._reactor.seconds() - zk.state_since,
            "session_id": None if zk.session_id is None else f"{zk.session_id:#x}",
            "writes_queued": self.writes_queued,
            "writes_in_flight": self._in_flight,
            "writes_ok": self.writes["ok"],
            "writes_failed": self.writes["error"],
            "waiting_takeover": sorted(
                n.path
                for n in [*self._nodes.values(), self._agent]
                if n.waiting_takeover
            ),
            "client_replacements": zk.replacements,
            "last_error": self.last_error,
        }

    def unhealthy_reason(self) -> str | None:
        """Why /healthz should fail on ZooKeeper's account, or None."""
        zk = self.zk
        if zk.state == CONNECTED:
            return None
        since = self._reactor.seconds() - zk.state_since
        return (
            f"zookeeper {zk.state} for {since:.1f} s: "
            f"published status may be stale ({self.writes_queued} writes queued)"
        )

    # Writing

    def _zk_state(self, state: str) -> None:
        if state != CONNECTED:
            return
        # A new session, or the old one back: either way ask ZooKeeper again
        # who owns what, and write everything from current state.
        for node in [*self._nodes.values(), self._agent]:
            node.owned = False
            node.dirty = True
        self._flush()

    def _mark(self, node: _Node) -> None:
        node.dirty = True
        self._enqueue(node)

    def _enqueue(self, node: _Node) -> None:
        if node.writing or node.queued or not node.dirty:
            return
        # Once stopping, a write that completes starts no other: stopService
        # is deleting our nodes and would race with it.
        if not self.running or self.zk.state != CONNECTED:
            return
        if self._in_flight >= WRITES_IN_FLIGHT:
            node.queued = True
            self._waiting.append(node)
            return
        self._start_write(node)

    def _flush(self) -> None:
        for node in [self._agent, *self._nodes.values()]:
            self._enqueue(node)

    def _start_write(self, node: _Node) -> None:
        node.dirty = False
        node.writing = True
        node.waiting_takeover = False
        self._in_flight += 1
        d = Deferred.fromCoroutine(self._write(node))
        d.addBoth(self._written, node)

    async def _write(self, node: _Node) -> None:
        zk = self.zk
        if node.removed:
            await self._delete_owned(node)
            return
        data = node.data()
        if node.owned:
            try:
                await self._counted("set", zk.set(node.path, data))
                return
            except NoNodeError:
                node.owned = False
        try:
            await self._counted("create", zk.create(node.path, data, ephemeral=True))
            node.owned = True
            return
        except NodeExistsError:
            pass
        stat = await zk.exists(node.path)
        if stat is None:
            # Gone in between (its session just ended): try again at once.
            node.dirty = True
            return
        if stat.ephemeralOwner != zk.session_id:
            owner = stat.ephemeralOwner
            raise OwnedElsewhere(f"{node.path} (owned by session {owner:#x})")
        node.owned = True
        await self._counted("set", zk.set(node.path, data, stat.version))

    async def _counted(self, op: str, call: Deferred[_T]) -> _T:
        try:
            result = await call
        except Exception:
            self.write_calls[op, "error"] += 1
            raise
        self.write_calls[op, "ok"] += 1
        return result

    async def _delete_owned(self, node: _Node) -> None:
        zk = self.zk
        try:
            stat = await zk.exists(node.path)
            if stat is not None and stat.ephemeralOwner == zk.session_id:
                await self._counted("delete", zk.delete(node.path, stat.version))
        except NoNodeError:
            pass
        node.owned = False

    def _written(self, result: None | Failure, node: _Node) -> None:
        self._in_flight -= 1
        node.writing = False
        if isinstance(result, Failure):
            # Left dirty, and retried by the retry timer rather than at once,
            # so that a failing ZooKeeper is not hammered.
            node.dirty = True
            self._failed(result, node)
        else:
            self.writes["ok"] += 1
            node.written_at = self._reactor.seconds()
            # Forgotten only once the delete itself is done: a write that was
            # in flight when the instance was removed leaves the node dirty,
            # and the node must stay known until its delete succeeds, or a
            # failed delete would never be retried.
            name = _name(node.path)
            if node.removed and not node.dirty and self._nodes.get(name) is node:
                del self._nodes[name]
        # Nodes already waiting for a slot go first, and a node that changed
        # while being written queues behind them: otherwise nodes that keep
        # changing would keep every slot and starve the others.
        while self._waiting and self._in_flight < WRITES_IN_FLIGHT:
            waiting = self._waiting.popleft()
            waiting.queued = False
            self._enqueue(waiting)
        if not isinstance(result, Failure):
            self._enqueue(node)

    def _failed(self, failure: Failure, node: _Node) -> None:
        self.writes["error"] += 1
        if failure.check(OwnedElsewhere):
            node.waiting_takeover = True
            error = f"waiting to take over {failure.getErrorMessage()}"
        else:
            kind = failure.type.__name__ if failure.type is not None else "error"
            reason = failure.getErrorMessage()
            error = f"{node.path}: {kind}" + (f": {reason}" if reason else "")
        if error != self.last_error:
            log.warn("ZooKeeper write failed, will retry: {error}", error=error)
        self.last_error = error
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        if not self.running:
            return
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self._reactor.callLater(RETRY_DELAY, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        if self.running:
            self._flush()


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def agent_document(
    agent_id: str,
    started_at: float,
    interval: float,
    instances: Callable[[], list[str]],
    clock: Any,
) -> Callable[[], dict[str, Any]]:
    """The agent node's data (DESIGN.md section 5), built when written."""
    pid = os.getpid()

    def document() -> dict[str, Any]:
        return {
            "agent": agent_id,
            "pid": pid,
            "version": __version__,
            "started_at": started_at,
            "heartbeat_at": clock.seconds(),
            "interval": interval,
            "instances": instances(),
        }

    return document
