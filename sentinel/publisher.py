"""
The ZooKeeper layout (DESIGN.md section 5), written on change, refreshed,
re-created after every reconnect, deleted on removal, and on a stop either
deleted or left to the next process; what each node holds is built by
`sentinel.documents`, discovery members are written by `sentinel.discovery`.

Each node has a dirty flag rather than a queue of writes: its data is built
from the instance's current state when the write starts, so however many
changes come in, at most one write per node is queued, and it carries the
newest state. A failed write leaves the node dirty; it is retried, never
forgotten. After every (re)connection all nodes are marked unknown and
written again: the publisher asks ZooKeeper who owns each node instead of
trusting its memory (`ownership.ours`). An instance's node is written only
once the instance has been checked (never from a status it does not have).

A node held by another session is parked, not retried with the others: a
watch says at once when it goes (then it is taken over), and a re-check
backs off from 1 s to `RECHECK_MAX` in case a watch is lost, sooner after
the holder writes. `sentinel.ownership` decides when a holder is a
conflict rather than a predecessor on its way out; a conflict is logged
once at error and fails /healthz until it ends, and a live twin holding
this agent's own node stops the agent (`on_twin`): it must not fight it.

With a state_dir (`sentinel.handoff`) the session outlives the process: a
stop leaves it open, nodes and all, for the next process; a process that
reattached to it keeps every node, rewrites each at its instance's first
check, and deletes at once those of instances no longer configured
(`_sweep`). A stop after `leave()`, or without a state_dir, deletes the
nodes and closes the session. A newer process that took the session over
stops this one (`on_superseded`) without touching the nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any

from kazoo.protocol.states import EventType, WatchedEvent
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from sentinel.config import RedisInstance
from sentinel.discovery import Discovery
from sentinel.documents import (
    Catalog,
    instance_document,
)
from sentinel.handoff import SessionHandoff
from sentinel.health import Transition
from sentinel.holders import Holders
from sentinel.instance import InstanceState
from sentinel.members import Members
from sentinel.nodes import Node, Nodes, encode
from sentinel.opinions import Opinions
from sentinel.ownership import OwnershipRules
from sentinel.resync import Resync
from sentinel.roles import Following, GroupRoles
from sentinel.stopping import Stopping
from sentinel.sweep import Sweep, Watched
from sentinel.takeover import Takeovers
from sentinel.timer import RestartingTimer
from sentinel.verdict import Verdict
from sentinel.writer import NodeWriter
from sentinel.writes import WriteQueue
from sentinel.zk import ZooKeeper
from sentinel.zkreport import ZooKeeperReport

log = Logger()


class ZooKeeperPublisher(Service):
    """
    Publishes instance states, their discovery members and this agent's
    node to ZooKeeper.

    `on_twin(line)` is called once if another live process holds this
    agent's own node (same agent id), `on_superseded(line)` once if a newer
    process took the session over (same state_dir): the publisher has
    stopped writing, `line` says why, and the agent is expected to stop.
    """

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        root: str,
        agent_id: str,
        refresh: float,
        heartbeat: float,
        agent_document: Callable[[], dict[str, Any]],
        on_twin: Callable[[str], None] | None = None,
        *,
        watched: Watched = dict,
        discovery: tuple[str, str] | None = None,
        handoff: SessionHandoff | None = None,
        on_superseded: Callable[[str], None] | None = None,
    ) -> None:
        """
        @param watched: the instances the agent watches (after a reattach,
            nodes of any other instance are deleted).
        @param discovery: (form, discovery root) when members are published.
        @param handoff: the state file's side of the session, with a
            state_dir.
        """
        self._reactor = reactor
        self.zk = zk
        self.root = root
        self.agent_id = agent_id
        self.refresh = refresh
        self.heartbeat = heartbeat
        self.on_twin = on_twin
        self.on_superseded = on_superseded
        self.handoff = handoff
        self.rules = OwnershipRules(zk.session_timeout)
        self._nodes = Nodes(
            self._watched_node,
            f"{root}/agents/{agent_id}",
            lambda: encode(agent_document()),
        )
        self._queue = WriteQueue(
            reactor,
            zk,
            self._nodes,
            self,
            write=self._write,
            held=self._held,
            owned=self._owned,
            retrying=self._retrying,
        )
        self._holders = Holders(
            reactor,
            zk,
            self.rules,
            self._nodes,
            self._queue,
            self,
            agent_id,
            self._twin,
        )
        self.discovery: Discovery | None = None
        if discovery is not None:
            form, discovery_root = discovery
            self.discovery = Discovery(
                zk, form, discovery_root, self._queue.counted, self._record_parent
            )
        # Why this agent stopped publishing (a live twin, or a newer
        # process on its session), or None.
        self.halted: str | None = None
        self.superseded = False
        self._opinions = Opinions(
            reactor,
            zk,
            root,
            agent_id,
            self._nodes,
            self._queue,
            self,
            self._reconsider,
        )
        self._takeovers = Takeovers(
            reactor,
            zk,
            self._nodes,
            self._queue,
            self._holders,
            self,
            agent_id,
            self.remove,
        )
        self._roles = GroupRoles(
            root,
            agent_id,
            self._nodes,
            self._queue,
            self._holders,
            self._opinions,
            self._takeovers,
            self._instance_node,
        )
        self._sweep = Sweep(
            zk,
            root,
            agent_id,
            self._nodes,
            self._queue,
            self,
            watched,
            self._roles,
            self.discovery,
            handoff,
        )
        self._members = Members(
            self.discovery, self._nodes, self._queue, self._sweep, self._roles
        )
        self._writer = NodeWriter(
            zk,
            self._queue,
            self._holders,
            self._takeovers,
            self._members,
            self._sweep,
        )
        self._stopping = Stopping(
            reactor,
            zk,
            self._nodes,
            self._queue,
            self._writer,
            self._roles,
            self._takeovers,
            handoff,
        )
        self._resync = Resync(
            zk,
            self._nodes,
            self._queue,
            self,
            self._sweep,
            self._takeovers,
            self._opinions,
            self.discovery,
            handoff,
        )
        self._report = ZooKeeperReport(
            reactor,
            zk,
            self._nodes,
            self._queue,
            self._holders,
            self._roles,
            self._takeovers,
            self._members,
            handoff,
            self,
        )
        self.heartbeat_timer = RestartingTimer(
            "agent heartbeat", heartbeat, reactor, lambda: self._mark(self._nodes.agent)
        )
        zk.add_listener(self._resync.state_changed)
        if handoff is not None:
            handoff.on_superseded = self._superseded

    # Service

    def startService(self) -> None:
        super().startService()
        self.heartbeat_timer.startService()
        if self._roles.following is not None:
            self._roles.following[0]()
        handoff = self.handoff
        if handoff is None or handoff.left is None:
            self.zk.start()
            return
        left = handoff.left

        def connect(claimed: bool) -> None:
            if self.running:
                self.zk.start(left.client_id if claimed else None)

        handoff.claim().addCallback(connect).addErrback(
            lambda f: log.failure("starting ZooKeeper", f)
        )

    def leave(self) -> None:
        """
        Make the next stop deregister at once, even with a state_dir: the
        nodes are deleted, the session closed and the state file removed.
        """
        self._stopping.leaving = True

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.heartbeat_timer.stopService()
        if self._roles.following is not None:
            self._roles.following[1]()
        self._queue.cancel_retry()
        for node in self._nodes:
            node.cancel_recheck()
        return self._stopping.stop(self.halted is not None, self.superseded)

    # The monitor's side

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        """Write the instance's node now if it changed, or if a refresh is due."""
        if state.health.status is None:
            # Never looked: nothing true to write yet.
            return
        roles = self._roles
        if roles.joined and not roles.primary_of(state, transition):
            return
        node = self._nodes.instances.get(state.name)
        if roles.joined and roles.replicas > 1 and node is not None:
            # The verdict, not our own view, is what the node says.
            node.state = state
            transition = None
            changed = self._roles.verdict_changed(node)
            if changed:
                self._mark(node)
                self._members.update(state)
                return
        if node is None or node.removed:
            node = self._instance_node(state.name)
            node.state = state
            self._nodes.instances[state.name] = node
            self._mark(node)
            self._mark(self._nodes.agent)
            self._members.update(state)
            return
        if node.state is not state:
            # The instance was replaced (a reload changed it): write the new
            # state, now, to the same node.
            node.state = state
            self._mark(node)
            self._members.update(state)
            return
        if transition is not None:
            self._mark(node)
            self._members.update(state)
            return
        written_at = node.written_at
        if written_at is not None and not node.dirty:
            if self._reactor.seconds() - written_at >= self.refresh:
                self._mark(node)

    def _instance_node(self, name: str) -> Node:
        agent_id = self.agent_id
        node = self._nodes.new(f"{self.root}/instances/{name}", lambda: b"")

        def data() -> bytes | None:
            if self._roles.joined:
                document = self._roles.document(node)
                return None if document is None else encode(document)
            assert node.state is not None
            return encode(
                instance_document(node.state.instance, node.state.health, agent_id)
            )

        node.data = data
        return node

    def remove(self, name: str) -> None:
        """Delete the instance's node (the instance is no longer watched)."""
        node = self._nodes.instances.get(name)
        if node is not None and node.released:
            # Handed to its next primary: `_handed_off` ends it.
            return
        if node is None and self._sweep.inherited:
            # Not checked yet by this process: its node may be the previous
            # process's, on the session this one inherited.
            node = self._nodes.instances[name] = self._instance_node(name)
        if node is not None:
            node.removed = True
            self._holders.release(node, "the instance is no longer watched")
            self._mark(node)
            self._mark(self._nodes.agent)
        self._members.remove(name)

    # A group (sentinel.group)

    def join_group(
        self,
        catalog: Catalog,
        replicas: int,
        successor: Callable[[str], bool],
        following: Following,
    ) -> None:
        """
        Publish as a member of a group: this agent's `catalog`, and only
        what `assign` gives it; `successor(name)` says whether another
        member will take an instance's node over when it moves away;
        `following` starts and stops following the membership, as this
        service starts, and first thing when it stops.
        """
        self._roles.join(catalog, replicas, successor, following)

    def set_catalog(self, catalog: Catalog) -> None:
        """Publish `catalog` as this agent's, in place of the previous one."""
        self._roles.set_catalog(catalog)

    def listed_instances(self, names: Collection[str]) -> list[str] | dict[str, Any]:
        """
        The agent node's ``instances``: the names this agent can check, or,
        when they are too many for a node rewritten every heartbeat, where
        its catalog lists them (`documents.catalog_reference`).
        """
        return self._roles.listed_instances(names)

    @property
    def primaries(self) -> int:
        """The instances this agent is the primary of, in a group."""
        return self._roles.primaries

    def view_changed(self) -> None:
        """
        The group's view changed: a node we let another primary have is
        asked about again (we may be its primary in this view).
        """
        self._takeovers.view_changed()

    def assign(
        self, name: str, observers: tuple[str, ...], instance: RedisInstance | None
    ) -> None:
        """
        The observers of `name` (primary first) are now `observers`: write
        its opinion if this agent is one of them, its verdict (or, with
        one replica, its node as section 5 has it) if it is the primary,
        and hand its node to the next primary if it no longer is.
        """
        self._roles.assign(name, observers, instance)

    def verdict_of(self, name: str) -> Verdict | None:
        """The verdict of an instance this agent is the primary of, if any."""
        return self._roles.verdict_of(name)

    def _reconsider(self, name: str) -> None:
        """An opinion changed: write the verdict if it changed too."""
        node = self._nodes.instances.get(name)
        if node is not None and node.takeover and self._roles.verdict_changed(node):
            self._mark(node)
            self._members.verdict_changed(name, node.state)

    # Observability

    @property
    def writes(self) -> dict[str, int]:
        """Node writes done ("ok") and failed ("error")."""
        return self._queue.writes

    @property
    def write_calls(self) -> Mapping[tuple[str, str], int]:
        """Each create/set/delete call by (op, "ok" or "error")."""
        return self._queue.write_calls

    @property
    def last_error(self) -> str | None:
        """The last write that failed, and why."""
        return self._queue.last_error

    @property
    def writes_queued(self) -> int:
        """Nodes whose newest state is not yet written."""
        return self._queue.queued

    @property
    def conflicts(self) -> Mapping[str, str]:
        """Each node in conflict now (this agent's first), and why."""
        return self._holders.conflicts

    @property
    def conflicts_started(self) -> int:
        """Conflicts declared so far."""
        return self._holders.conflicts_started

    @property
    def ownership_checks(self) -> int:
        """Calls made to learn who holds a node."""
        return self._holders.ownership_checks

    @property
    def waiting_takeover(self) -> list[str]:
        """The nodes another session holds, in conflict or not yet."""
        return sorted(self._holders.waiting)

    @property
    def discovery_members(self) -> list[str]:
        """The discovery members this agent holds now."""
        return self._members.held

    @property
    def swept(self) -> int:
        """Nodes of instances no longer watched deleted after a reattach."""
        return self._sweep.swept

    def stats(self) -> dict[str, Any]:
        """ZooKeeper's part of /debug/stats."""
        return self._report.stats()

    def unhealthy_reason(self) -> str | None:
        """
        Why /healthz should fail on ZooKeeper's account, or None: not
        connected, a conflict, a node still held by an earlier session
        (its published status is stale until it is taken over), or the
        session taken over by a newer process.
        """
        return self._report.unhealthy_reason()

    # Writing

    def _mark(self, node: Node) -> None:
        self._queue.mark(node)

    def _owned(self, node: Node) -> None:
        """A write of a node of ours succeeded."""
        self._holders.release(node, "it is ours now")
        if node.takeover and not node.removed:
            self._takeovers.check_still_ours(node)

    def _retrying(self) -> None:
        self._sweep.start()

    def _write(self, node: Node) -> Coroutine[Any, Any, None]:
        return self._writer.write(node)

    def _record_parent(self, parent: str) -> Deferred[None]:
        if self.handoff is None:
            return succeed(None)
        return self.handoff.record_parent(parent)

    # A newer process on our session

    def _superseded(self, line: str) -> None:
        """A newer process reattached to our session: stop, touching nothing."""
        self.superseded = True
        self.halted = line
        self.zk.leave_open()
        log.warn("{why}; stopping without touching its nodes", why=line)
        for node in self._nodes:
            node.cancel_recheck()
        if self.on_superseded is not None:
            self.on_superseded(line)

    # Each write's outcome, and each watch, to whom it concerns

    def _held(self, node: Node, stat: Any) -> None:
        self._holders.held(node, stat)

    def _watched_node(self, node: Node, event: WatchedEvent) -> None:
        """
        A watch on a node held elsewhere fired (on the reactor thread), or,
        in a group, on a node we are the primary of and hold.
        """
        if node.holding is None and node.takeover and event.type != EventType.NONE:
            self._takeovers.check_still_ours(node)
        else:
            self._holders.watched(node, event)

    def _twin(self, line: str) -> None:
        """A live twin holds this agent's own node: stop writing."""
        self.halted = line
        self._nodes.cancel_rechecks()
        if self.on_twin is not None:
            self.on_twin(line)
