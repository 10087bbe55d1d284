"""
The ZooKeeper layout (DESIGN.md section 5): which nodes this agent writes,
and when, from the instances' states the monitor hands over; the parts
that do the writing are composed here.

The data path: `publish(state, transition)` runs after every check and
decides whether the instance's node must be written: at its first check
(never from a status it does not have), when its status, ``ready`` or role
changes, when a reload replaced the instance, at the check that ends a
blip whose error a write caught (`Node.blip_over`), and at least every
`refresh` seconds (so readers can tell a stale node); the agent node when the instances
change and every `heartbeat`. Unchanged, it writes and allocates nothing.
A node to write is marked (`sentinel.writes`: coalesced, bounded, retried)
and written by `sentinel.writer`; a node another session holds is parked
and judged by `sentinel.holders`; what each node holds is built by
`sentinel.documents` when its write starts.

Around that path: each instance's discovery member (`sentinel.members`,
written by `sentinel.discovery`); in a group, what this agent's role in it
says to write (`sentinel.roles`, `sentinel.opinions`,
`sentinel.takeover`); after every (re)connection, every node written again
(`sentinel.resync`), and a node deleted behind our back written again
(`sentinel.guard`), and on a session inherited from the previous process,
what it left swept (`sentinel.sweep`); the end of publishing, the session
left to the next process or the nodes deleted (`sentinel.stopping`); and
what /debug/stats and /healthz say of it all (`sentinel.zkreport`).

This agent stops writing for good (`halted`) when a live twin holds its own
node (`on_twin`) or a newer process took its session over
(`on_superseded`, `superseded`): it must not fight either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any

from kazoo.protocol.states import EventType, WatchedEvent
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.catalog import Catalog
from sentinel.chroot import Chroot
from sentinel.clockskew import ClockSkew
from sentinel.discovery import Discovery
from sentinel.documents import instance_document, said_checked_at
from sentinel.guard import Guard
from sentinel.handoff import SessionHandoff
from sentinel.health import Transition
from sentinel.holders import Holders
from sentinel.instance import InstanceState
from sentinel.lateness import Lateness
from sentinel.members import Members
from sentinel.nodes import Node, Nodes, encode
from sentinel.openacls import OpenAcls
from sentinel.opinions import Opinions
from sentinel.refusals import Refusals
from sentinel.resync import Resync
from sentinel.roles import Following, GroupRoles
from sentinel.sharing import SessionSharing
from sentinel.stopping import STOP_CLOSE_TIMEOUT, Stopping
from sentinel.sweep import Sweep, Watched
from sentinel.takeover import Takeovers
from sentinel.timer import RestartingTimer
from sentinel.unbacked import Unbacked
from sentinel.unremade import Unremade
from sentinel.writer import NodeWriter
from sentinel.writes import Unchanged, WriteQueue
from sentinel.writewatch import WriteWatch
from sentinel.zk import CONNECTED, ZooKeeper
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
        watch_writes: bool = True,
    ) -> None:
        """
        @param watched: the instances the agent watches (after a reattach,
            nodes of any other instance are deleted).
        @param discovery: (form, discovery root) when members are published.
        @param handoff: the state file's side of the session, with a
            state_dir.
        @param watch_writes: watch instance nodes for other clients' writes
            (`sentinel.writewatch`), at one read per write of ours.
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
        self._unbacked = Unbacked()
        # Why this agent stopped writing (a live twin, or a newer process
        # on its session), or None.
        self.halted: str | None = None
        self.superseded = False
        self.discovery: Discovery | None = None
        # With auth_file: the ACLs that let anyone add nodes beside ours.
        self._acls: OpenAcls | None = None

        # The write machinery, in the order of the data path. Each write's
        # outcome comes back through the methods at the end of this class.
        agent_node = f"{root}/agents/{agent_id}"
        nodes = Nodes(
            self._watched_node, agent_node, lambda: encode(self._agent_node_data())
        )
        self._agent_document = agent_document
        queue = WriteQueue(
            reactor,
            zk,
            nodes,
            self,
            write=self._write,
            held=self._held,
            owned=self._owned,
            retrying=self._retrying,
        )
        holders = Holders(reactor, zk, nodes, queue, self, agent_id, self._twin)
        if discovery is not None:
            form, discovery_root = discovery
            self.discovery = Discovery(
                zk, form, discovery_root, queue.counted, self._record_parent, reactor
            )

        # A group's roles, and what they say to write.
        opinions = Opinions(
            reactor, zk, root, agent_id, nodes, queue, self, self._reconsider,
            refresh, discovery,
            lambda now: None if handoff is None else handoff.unchecked_for(now),
        )  # fmt: skip
        takeovers = Takeovers(
            reactor, zk, nodes, queue, holders, self, agent_id, self.remove,
            lambda name: self._roles.contested(name),
            lambda name: self._roles.handed_over(name),
            self._previous_verdict, self.discovery, opinions.verdict_node,
            opinions.verdict_node_seen, opinions.named_before_missing,
        )  # fmt: skip
        roles = GroupRoles(
            reactor, root, agent_id, nodes, queue, holders, opinions, takeovers,
            self._instance_node,
        )  # fmt: skip
        takeovers.view_stale = lambda: roles.view_stale()

        # Members, the sweep after a reattach, and one write of one node.
        sweep = Sweep(
            zk, root, agent_id, nodes, queue, self, watched, roles,
            self.discovery, handoff,
        )  # fmt: skip
        guard = Guard(reactor, zk, nodes, queue, self)
        members = Members(
            self.discovery, nodes, queue, sweep, roles, reactor, guard.arm
        )
        if self.discovery is not None:
            takeovers.members = members
        # Is the session ours alone? (With a state_dir: it may be copied.)
        self._sharing: SessionSharing | None = None
        if handoff is not None:
            self._sharing = SessionSharing(
                reactor, zk, agent_node, handoff, self._refused,
                lambda: self._mark(nodes.agent), sweep.start,
                lambda: {node.name for node in nodes.catalog},
                self._agent_node_forged,
            )  # fmt: skip
            sweep.alone = lambda: self._sharing is None or self._sharing.alone
        # Instance nodes watched for other clients' writes, unless the
        # operator would rather not pay a read per write (`zookeeper.watch_writes`).
        write_watch = WriteWatch(reactor, zk, nodes, queue, self, guard)
        clock = ClockSkew(reactor, zk, agent_node)
        writer = NodeWriter(
            zk, nodes, queue, holders, takeovers, members, sweep, guard,
            write_watch if watch_writes else None, clock,
            self._previous_verdict,
            None if self._sharing is None else self._sharing.written_over,
            self._refresh_due,
        )  # fmt: skip

        # With auth_file: whether the root's ACLs let it protect anything.
        acls = (
            None
            if zk.acl is None
            else OpenAcls(zk, root, None if discovery is None else discovery[1])
        )
        self._acls = acls
        if acls is not None:
            zk.add_listener(acls.state_changed)
        # The chroot made if missing; why ZooKeeper refuses writes: a chroot
        # missing still, an ACL not ours.
        chroot = Chroot(reactor, zk)
        zk.add_listener(chroot.state_changed)
        refusals = Refusals(reactor, zk, chroot)
        queue.on_failed = refusals.write_failed

        # The session's events: reconnections, the end, and the report.
        self._resync = Resync(
            zk, nodes, queue, self, sweep, takeovers, opinions, self.discovery,
            handoff, lambda: roles.on_new_session(),
        )  # fmt: skip
        self._stopping = Stopping(
            reactor, zk, nodes, queue, writer, roles, takeovers, handoff
        )
        self._report = ZooKeeperReport(
            reactor, zk, nodes, queue, holders, roles, takeovers, members,
            handoff, self, opinions, acls, clock,
            Lateness(reactor, nodes, queue, refresh), guard, refusals,
            Unremade(
                reactor, nodes, watched,
                lambda: roles.joined and roles.view_known(),
            ),
        )  # fmt: skip

        self._nodes = nodes
        self._queue = queue
        self._holders = holders
        self._opinions = opinions
        self._takeovers = takeovers
        self._roles = roles
        self._sweep = sweep
        self._members = members
        self._writer = writer
        self._guard = guard
        self._write_watch = write_watch
        self._clock_skew = clock
        self.heartbeat_timer = RestartingTimer(
            "agent heartbeat", heartbeat, reactor, self._heartbeat
        )
        if self._sharing is not None:
            # First: its read goes out before the resync's writes.
            zk.add_listener(self._sharing.state_changed)
        zk.add_listener(self._report.state_changed)
        # Before the resync's: the watches it arms are new (`sentinel.guard`).
        zk.add_listener(guard.state_changed)
        zk.add_listener(write_watch.state_changed)
        zk.add_listener(self._resync.state_changed)
        if handoff is not None:
            handoff.on_superseded = self._superseded
            handoff.on_left_gone = self._report.unremade.session_gone
            handoff.holds_agent_node = self._holds_agent_node
            # The state file says checks back the nodes only as far as
            # ZooKeeper has them (`sentinel.handoff`).
            handoff.checked_through = queue.checked_through
            # Nor further than an instance whose latest checks contradict
            # its status was backed by a check (`sentinel.unbacked`).
            handoff.unbacked_since = self._unbacked.oldest
            # Only checks that back their node are carried to the next
            # process (`sentinel.coverage`).
            handoff.backs = self._backs
            queue.on_caught_up = self._caught_up

    # Service

    def startService(self) -> None:
        super().startService()
        self.heartbeat_timer.startService()
        if self._roles.following is not None:
            self._roles.following[0]()
        handoff = self.handoff
        if handoff is not None:
            handoff.started()
        if handoff is None or handoff.left is None:
            self.zk.start()
            return
        left = handoff.left

        def connect(claimed: bool) -> Deferred[None] | None:
            if not claimed and handoff.stale is not None and self.running:
                # A session not to keep (unchecked for too long, or left
                # under another agent id): its nodes go now, rather than
                # live on, unchecked, with it.
                closed = self.zk.close_session(
                    left.client_id, self.zk.requested_timeout
                )
                self._stopping.closing(closed)
                return closed.addCallback(lambda _: start(False))
            start(claimed)
            return None

        def start(claimed: bool) -> None:
            # Stopped meanwhile to leave (a SIGUSR2 during start-up): the
            # session is attached all the same, so that closing it deletes
            # the previous process's nodes (sentinel.stopping).
            if self.running or (claimed and self._stopping.leaving):
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

    def signalled(self, at: float) -> None:
        """
        A stop signal came at `at` (the reactor's time): the stop's bounds
        count from then (`sentinel.stopping`). Called from the signal
        handler: it stores a float, nothing else.
        """
        self._stopping.signalled(at)

    @property
    def leaving(self) -> bool:
        """Whether the next stop deregisters at once (`leave`)."""
        return self._stopping.leaving

    @property
    def signalled_at(self) -> float | None:
        """When the first stop signal came (the reactor's time), if one did."""
        return self._stopping.signalled_at

    def keeps_session(self, leaving: bool) -> bool:
        """
        Whether a stop now leaves the ZooKeeper session open: another
        process's since it took it over, or handed to the next process
        (a state_dir, no leave, no twin, the state file holding it). Read
        from the backstop's thread (`sentinel.backstop`).
        """
        handoff = self.handoff
        leaving = leaving or self._stopping.leaving
        return self.superseded or (
            handoff is not None
            and not leaving
            and self.halted is None
            and handoff.blocked is None
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.heartbeat_timer.stopService()
        if self._roles.following is not None:
            self._roles.following[1]()
        self._queue.cancel_retry()
        self._nodes.cancel_rechecks()
        self._takeovers.rearming.cancel()
        self._guard.cancel()
        self._write_watch.cancel()
        return self._stopping.stop(self.halted is not None, self.superseded)

    # The monitor's side

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        """Write the instance's node now if it changed, or if a refresh is due."""
        if state.health.status is None:
            # Never looked: nothing true to write yet.
            return
        self._publish(state, transition)
        if self.handoff is not None:
            self._unbacked.note(state.name, state.health.unbacked_since)
            # After the check's own writes are marked: the state file says
            # it backs the nodes only once ZooKeeper has them.
            self.handoff.checked(state.name)

    def _backs(self, name: str) -> bool:
        """
        Whether this process's last check of instance `name` backs its
        nodes: ZooKeeper holds what it found (its instance node, if ours,
        and in a group its opinion, wait for no write) and it contradicts
        no published status (`sentinel.unbacked`). An observer writes no
        instance node: asked alone, it carried a check whose opinion was
        not written, which the file's ``checked_at`` did not count.
        """
        if name in self._unbacked:
            return False
        nodes = self._nodes
        for node in (nodes.instances.get(name), nodes.opinions.get(name)):
            if node is not None and (node.dirty or node.writing):
                return False
        return True

    def _publish(self, state: InstanceState, transition: Transition | None) -> None:
        roles = self._roles
        if roles.joined and not roles.primary_of(state, transition):
            return
        node = self._nodes.instances.get(state.name)
        if roles.joined and roles.replicas > 1 and node is not None:
            # The verdict, not our own view, is what the node says; a reload
            # that changed the instance (its address...) is written at once.
            before = node.state
            node.state = state
            transition = None
            moved = (
                before is not state
                and before is not None
                and before.instance != state.instance
            )
            # The primary's own opinion in the verdict is its live state:
            # while a change of it waits (`sentinel.flapping`), so does the
            # verdict, or it was written at every check of a flapping
            # instance. A change of its opinion's status is never held
            # back, and ends the wait.
            changes = state.published_changes
            held = changes is not None and changes.held_since is not None
            if (
                (not held and roles.verdict_changed(node))
                or (moved and not node.removed)
                or (node.previous is not None and _saying_previous(node))
            ):
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
        # `previous` first: None on all but a node just taken over, and this
        # is every check's path.
        if transition is not None or (
            node.previous is not None and _saying_previous(node)
        ):
            self._mark(node)
            self._members.update(state)
            return
        # `built_contrary` first: False on all but a node whose last write
        # caught a blip, and this is every check's path.
        if node.built_contrary and not node.dirty and node.blip_over(state.health):
            # Its last write caught a blip, over now: the node said its
            # error (`Node.blip_over`). Members say no error.
            self._mark(node)
            return
        if node.written_at is not None and not node.dirty and self._refresh_due(node):
            self._mark(node)
            self._members.refresh(state.name)

    def _refresh_due(self, node: Node) -> bool:
        """
        Whether `node`, written before, is due its refresh: an instance
        node half an interval before the check that keeps its rewrites at
        most `refresh` apart (`_refresh_after`, `_refresh_from`), any other
        node `refresh` after its last write. A rewrite that would change
        nothing is made all the same then (`sentinel.unchanged`).
        """
        written_at = node.written_at
        if written_at is None:
            return True
        now: float = self._reactor.seconds()
        state = node.state
        if state is None or self._nodes.instances.get(node.name) is not node:
            return now - written_at >= self.refresh
        due_after = _refresh_after(self.refresh, state.health.interval)
        since = _refresh_from(node, written_at, state.health.published_checked_at)
        return now - since >= due_after

    def relabel(self, state: InstanceState) -> None:
        """
        The instance's discovery service or labels changed: its opinion,
        if it has one, says so, and its member, if
        it has one here, is rewritten, or moved to its new service. One
        handed to the instance's next primary is that primary's to write:
        only the state it would be written from follows.
        """
        self._opinions.relabelled(state)
        node = self._nodes.members.get(state.name)
        if node is None:
            return
        if node.released:
            node.state = state
            return
        self._members.update(state)

    def remove(self, name: str) -> None:
        """Delete the instance's node (the instance is no longer watched)."""
        self._unbacked.forget(name)
        node = self._nodes.instances.get(name)
        if node is None and self._sweep.inherited:
            # Not checked yet by this process: its node may be the previous
            # process's, on the session this one inherited.
            node = self._nodes.instances[name] = self._instance_node(name)
        if node is not None:
            node.removed = True
            # Kept for another primary no more: nothing true to write.
            node.released = False
            self._holders.release(node, "the instance is no longer watched")
            self._mark(node)
            self._mark(self._nodes.agent)
        self._members.remove(name)
        self._roles.unfollow(name)

    def let_go(self, name: str) -> None:
        """
        An instance checked here but never published by this process (a
        group member's, checked provisionally before the first view, and
        observed by others in it) is checked no more: what its checks noted
        goes, and the node and discovery member its previous process may
        have left on an inherited session stay, for the instance's primary
        to take over, as those of an instance this process never checked
        do. `remove` would delete them (missing until that primary made
        them again) and ask ZooKeeper about every other one.
        """
        self._unbacked.forget(name)
        self._roles.unfollow(name)

    def agent_node_changed(self) -> None:
        """
        What the agent node says may have changed (a reload applied, its
        ``interval`` with it): written now, not at the next heartbeat,
        which comes up to ``zookeeper.heartbeat`` later (a day at most).
        """
        self._mark(self._nodes.agent)

    def _heartbeat(self) -> None:
        """
        The agent node rewritten; in a group, its catalog written again if
        another client wrote over it (`Guard.overwritten`); with a
        state_dir, its file written again if its last write failed, else
        read again (another agent sharing the state_dir may have
        overwritten it).
        """
        self._mark(self._nodes.agent)
        # The end of an unconfirmed state is logged even if nobody asks
        # /healthz (`sentinel.unconfirmed`).
        self._report.look_unconfirmed()
        if self.handoff is not None:
            self.handoff.retry()
            self.handoff.verify()
        catalog = self._nodes.catalog
        if catalog and self.zk.state == CONNECTED:
            roles = self._roles
            d = Deferred.fromCoroutine(self._guard.overwritten(catalog))
            d.addCallback(
                lambda changed: roles.catalog_overwritten() if changed else None
            )
            d.addErrback(lambda f: log.failure("checking the catalog failed", f))

    def _agent_node_data(self) -> dict[str, Any]:
        """The agent node: this process, and with a state_dir its token."""
        document = self._agent_document()
        if self._sharing is not None:
            document.update(self._sharing.fields())
        return document

    def _instance_node(self, name: str) -> Node:
        """``{root}/instances/{name}``: its state's document, or its verdict's."""
        agent_id = self.agent_id
        roles = self._roles
        node = self._nodes.new(f"{self.root}/instances/{name}", lambda: b"")
        gone = self._nodes.instances.get(name)
        if gone is not None and gone.removed:
            # Watched again before its delete was made: a storm of reloads
            # otherwise queued a delete per removal, each made after the
            # node was written again.
            self._nodes.take_back(node, gone)

        def data() -> bytes | None:
            if roles.joined:
                # Set by the document of our own, if it takes a blip's error.
                node.built_contrary = False
                carried = node.previous is not None
                document = roles.document(node)
                if document is None:
                    return None
                if carried and node.previous is None:
                    self._members.own_verdict(name)
            else:
                state = node.state
                assert state is not None
                health = state.health
                if not health.current(self._reactor.seconds()):
                    # Stale (the agent frozen, say): written again after the
                    # next check, which decides the status anew.
                    return None
                node.keep_since()
                document = instance_document(state.instance, health, agent_id)
                node.built_contrary = health.unbacked_since is not None
            node.built_checked_at = said_checked_at(document)
            return encode(document)

        node.data = data
        return node

    def _mark(self, node: Node) -> None:
        self._queue.mark(node)

    def _previous_verdict(self, name: str, previous: dict[str, Any]) -> None:
        """
        An instance node taken over from another agent, or inherited from
        the previous process, says `previous`: the group may go on from it
        (`GroupRoles.on_previous_verdict`). A bug there is counted, never
        a reason for the write to fail.
        """
        try:
            self._roles.on_previous_verdict(name, previous)
        except Exception:
            self.zk.internal_errors.record(
                "going on from the previous verdict", name, Failure()
            )

    # A group (sentinel.group)

    def join_group(
        self,
        catalog: Catalog,
        replicas: int,
        successor: Callable[[str], bool],
        following: Following,
    ) -> GroupRoles:
        """
        Publish as a member of a group: this agent's `catalog`, and only
        what the returned roles are told to (`GroupRoles.assign`, as the
        group's view changes); `successor(name)` says whether another
        member will take an instance's node over when it moves away;
        `following` starts and stops following the membership, as this
        service starts, and first thing when it stops.
        """
        self._roles.join(catalog, replicas, successor, following)
        return self._roles

    def compare_clocks_with(self, members: Callable[[], Collection[str]]) -> None:
        """
        Compare this agent's clock only with the agents `members()` names
        (a group's view), not with whatever node is under {root}/agents.
        """
        self._clock_skew.members = members

    def listed_instances(self, names: Collection[str]) -> list[str] | dict[str, Any]:
        """
        The agent node's ``instances``: the names this agent can check, or,
        when they are too many for a node rewritten every heartbeat, where
        its catalog lists them (`documents.catalog_reference`).
        """
        return self._roles.listed_instances(names)

    # Observability

    def stats(self) -> dict[str, Any]:
        """ZooKeeper's part of /debug/stats."""
        return self._report.stats()

    def unhealthy_reason(self) -> str | None:
        """
        Why /healthz should fail on ZooKeeper's account, or None: not
        connected, a conflict, a node still held by an earlier session
        (its published status is stale until it is taken over), a node
        whose writes keep failing or come later than readers are promised,
        or the session taken over by a newer process.
        """
        return self._report.unhealthy_reason()

    def unconfirmed_detail(self) -> dict[str, Any] | None:
        """
        ``unconfirmed`` in /healthz: the instance nodes the last reason
        said are not written again since a new session, by name
        (`sentinel.unconfirmed`); None when it said none.
        """
        return self._report.unconfirmed.detail()

    @property
    def writes(self) -> dict[str, int]:
        """Node writes done ("ok") and failed ("error")."""
        return self._queue.writes

    @property
    def write_calls(self) -> Mapping[tuple[str, str], int]:
        """Each create/set/delete call by (op, "ok" or "error")."""
        return self._queue.write_calls

    @property
    def writes_queued(self) -> int:
        """Nodes whose newest state is not yet written."""
        return self._queue.queued

    @property
    def last_error(self) -> str | None:
        """The last write that failed, and why."""
        return self._queue.last_error

    @property
    def writes_failing(self) -> int:
        """Nodes whose writes have failed since their last success."""
        return len(self._queue.still_failing())

    @property
    def conflicts(self) -> Mapping[str, str]:
        """Each node in conflict now (this agent's first), and why."""
        return self._holders.conflicts

    @property
    def conflicts_started(self) -> int:
        """Conflicts declared so far."""
        return self._holders.conflicts_started

    @property
    def waiting_takeover(self) -> list[str]:
        """The nodes another session holds, in conflict or not yet."""
        return sorted(self._holders.waiting)

    @property
    def discovery_members(self) -> list[str]:
        """The discovery members this agent holds now."""
        return self._members.held

    @property
    def deleted_behind(self) -> int:
        """Our nodes deleted by someone else and written again (`sentinel.guard`)."""
        return self._guard.deleted

    @property
    def written_over(self) -> int:
        """
        Our instance nodes found written by another client and written
        again (`sentinel.guard`), each reported.
        """
        return self._guard.writes_over

    @property
    def late_sets(self) -> int:
        """
        Sets of a previous primary found on a node within
        `guard.TAKEN_OVER_GRACE` of our takeover of it and written over, not
        reported (`sentinel.guard`): many, long after a group's changes
        settled, would be a meddler this grace hides.
        """
        return self._guard.late_sets

    @property
    def swept(self) -> int:
        """Nodes of instances no longer watched deleted after a reattach."""
        return self._sweep.swept

    # Each write's outcome and each watch, to the part it concerns

    def _write(self, node: Node) -> Coroutine[Any, Any, Unchanged | None]:
        return self._writer.write(node)

    def _held(self, node: Node, stat: Any) -> None:
        self._holders.held(node, stat)
        if node.takeover and self._nodes.instances.get(node.name) is node:
            self._members.held_elsewhere(node)

    def _owned(self, node: Node) -> None:
        """A write of a node of ours succeeded."""
        if node is self._nodes.agent and self._sharing is not None:
            self._sharing.agent_node_written()
        self._holders.release(node, "it is ours now")
        if node.takeover and not node.removed:
            self._takeovers.check_still_ours(node)
            self._members.instance_owned(node)

    def _retrying(self) -> None:
        self._sweep.start()

    def _caught_up(self) -> None:
        """ZooKeeper has every node as checks found it."""
        # Not while stopping: the stop's own wait decides the file's last
        # write, and one started after it would cancel the handoff.
        if self.handoff is not None and self.running and self.halted is None:
            self.handoff.caught_up()

    def _watched_node(self, node: Node, event: WatchedEvent) -> None:
        """
        A watch on a node held elsewhere fired (on the reactor thread), or,
        in a group, on a node we are the primary of and hold, or keep for
        its new primary.
        """
        if event.type != EventType.NONE:
            # One watcher per node: whichever part armed it, it has fired.
            node.watching = False
        if node.released and node.member is None:
            self._takeovers.handoff_watched(node, event)
        elif node.holding is None and node.takeover and event.type != EventType.NONE:
            self._takeovers.check_still_ours(node)
        else:
            self._holders.watched(node, event)

    def _reconsider(self, name: str) -> None:
        """
        An opinion changed: write the verdict if it changed too, or if it
        no longer says the error its last write took from an opinion.
        """
        node = self._nodes.instances.get(name)
        if node is None or not (node.takeover or node.released):
            return
        if self._roles.verdict_changed(node):
            self._mark(node)
            self._members.verdict_changed(name, node.state)
        elif not node.dirty and self._roles.verdict_error_cleared(node):
            self._mark(node)

    def _record_parent(self, parent: str) -> Deferred[None]:
        # A member is about to be made there: whether anyone may add others.
        if self._acls is not None:
            self._acls.used(parent)
        if self.handoff is None:
            return succeed(None)
        return self.handoff.record_parent(parent, self._members.parents)

    # Halting

    def _twin(self, line: str) -> None:
        """A live twin holds this agent's own node: stop writing."""
        self.halted = line
        self._nodes.cancel_rechecks()
        self._guard.cancel()
        self._write_watch.cancel()
        if self.on_twin is not None:
            self.on_twin(line)

    def _superseded(self, line: str) -> None:
        """
        A newer process took our session over, or holds one of its own
        since ours was lost: stop, touching nothing of the newer one's. A
        session of our own (opened after the first was lost, the newer one
        on another) is closed at once: left open, it kept what we made in
        it (an instance node, a member) for the session timeout after the
        exit.
        """
        handoff = self.handoff
        own = None if handoff is None else handoff.own_session
        if own is None:
            log.warn("{why}; stopping without touching its nodes", why=line)
            self._leave_session(line)
        else:
            log.warn(
                "{why}; stopping without touching its nodes, and closing "
                "this process's own session {session}",
                why=line,
                session=f"{own[0]:#x}",
            )
            self._halt_superseded(line)
            self._stopping.closing(self.zk.stop(STOP_CLOSE_TIMEOUT))
        if self.on_superseded is not None:
            self.on_superseded(line)

    def _agent_node_forged(self) -> None:
        """
        Our agent node written by another client (`SessionSharing`): it
        says we were refused and no other process holds our session, or
        names another process, or was written since our last set of it.
        """
        self._guard.written_over(self._nodes.agent)
        self._mark(self._nodes.agent)

    def _refused(self, line: str) -> None:
        """
        An older process on our session (we hold a copy of its state file)
        refused us: stop as a twin does, touching nothing of its session.
        """
        log.error("ZooKeeper conflict: {why}; stopping", why=line)
        self._leave_session(line)
        if self.on_twin is not None:
            self.on_twin(line)

    def _holds_agent_node(self, session: int) -> Deferred[bool]:
        """Whether `session` holds this agent's node now (one read)."""
        d: Deferred[Any] = self.zk.exists(self._nodes.agent.path)
        return d.addCallback(
            lambda stat: stat is not None and stat.ephemeralOwner == session
        )

    def _leave_session(self, line: str) -> None:
        """The session is another process's: stop writing, and never close it."""
        self._halt_superseded(line)
        self.zk.leave_open()

    def _halt_superseded(self, line: str) -> None:
        """Stop writing for good: the nodes are another process's."""
        self.superseded = True
        self.halted = line
        self._nodes.cancel_rechecks()
        self._guard.cancel()
        self._write_watch.cancel()
        self._sweep.abandon()


def _refresh_after(refresh: float, interval: float | None) -> float:
    """
    How long after its last write was acknowledged an unchanged instance
    node is written again by a check, checks coming every `interval`
    (None: unknown): half an interval before the last check that keeps
    rewrites at most `refresh` apart, so that each is written by that check.
    """
    if interval is None:
        return refresh
    # The check due `refresh` after the one written comes that write's
    # latency short of `refresh` after its acknowledgement: judged on
    # `refresh` itself, it would leave the node one interval older than
    # readers are told to expect. Half an interval absorbs the latency and
    # the checks' jitter either way; the epsilon, a quotient such as
    # 0.3 / 0.1 (2.9999999999999996) short of a whole number of intervals.
    intervals = max(1, math.floor(refresh / interval + 1e-9))
    return (intervals - 0.5) * interval


def _refresh_from(node: Node, written_at: float, checked: float | None) -> float:
    """
    When the refresh of an instance node written at `written_at` counts
    from: the ``checked_at`` its data said, if older and a check of ours
    that bears its status out (at `checked`:
    `InstanceHealth.published_checked_at`) is newer; else the write.
    Readers judge the node by its ``checked_at``; a write answered
    seconds after its data was built
    (a start, ZooKeeper's return: the bridge's calls in flight full) was
    counted from the answer, and the node stood that much past refresh:
    a verdict written 5 s after its check stood 35 s, past the 34 s its
    other observers allow it (`Opinions.late_verdicts`), until the
    primary's own timer wrote it again. A node whose data can say no
    newer check (the previous primary's verdict, kept until ours; checks
    that contradict its status, fewer than ``fall`` or ``rise``) is not
    written again for that: counted from a ``checked_at`` that such checks
    leave where it was, a stretch of them longer than `refresh` (``fall``
    intervals past it) wrote the same data at every check.
    """
    built = node.built_checked_at
    if built is None or built >= written_at or checked is None or checked <= built:
        return written_at
    return built


def _saying_previous(node: Node) -> bool:
    """
    Whether an instance node taken over still says the previous primary's
    verdict: a check of ours may be the first newer than it, and our own
    document replaces it then (`GroupRoles.document`), not a refresh later.
    """
    return (
        node.previous is not None and node.owned and not (node.released or node.removed)
    )
