"""
Our nodes deleted behind our back, written again within about a second.

Each node this agent holds is watched for its deletion from the moment it
is ours (created, or adopted after a reconnection) with a children watch
on the node itself: ZooKeeper fires it when the node is deleted and never
when its data is written (an ephemeral node has no children), so it costs
one read per create and nothing per write (`tests.test_guard_zookeeper`).
kazoo forgets every watch when its connection drops and does not set
them again: at each connection the resync (`sentinel.resync`) writes
every node again, and each is watched again as it becomes ours. A read
that fails to watch a node while the connection stays up (a timeout) is
made again on a timer (`sentinel.rearming`): opinions and members are
written only on change, and one left unwatched until its next write
stayed deleted as long (for good, for an instance that stays up). What
was seen deleted before is forgotten then too: the resync writes it, and
a session that ended took our nodes with it (nothing behind our back).

A node deleted while this agent still means to hold it (not removed, not
handed to another primary, not stopping) is written again `REWRITE_AFTER`
seconds later, as one that is no longer known to be ours: it is created,
or, if someone else's node stands there by then (a group's new primary
took it over in one transaction, a squatter), its holder is asked as
after any failed write (`sentinel.holders`, `sentinel.takeover`), never
overwritten. An instance node found held by another agent's session by
then (one that holds that agent's node) was taken over (a group's member
whose view is ahead of ours): no deletion, it is logged as such and
counted apart (`taken_early`), so that a group's first start, whose
joiners take their shares from the first agent before its view lists
them, is not reported as nodes deleted in a loop. One held by a session
that holds no agent node (a squatter's) is said to be written by another
client, and counted as deleted. The agent's own node deleted means its
tree was wiped: every node is written again at once, as after a
reconnection. One line says
how many nodes each burst of deletions took, and names the first
`NAMED`; `deleted` counts them. A member this agent deletes itself is no
longer watched from just before its delete (`sentinel.members`):
ZooKeeper tells the watch before the delete's reply, while the member
still looks held.

A write of our node by another client fires no such watch: `overwritten`
asks (an ``exists`` a node) for the nodes whose writes are rare, this
agent's catalog at each heartbeat; instance nodes and this agent's node
are watched for their writes by `sentinel.writewatch` (within
`writewatch.CHECK_AFTER`), or,
with ``zookeeper.watch_writes`` off, found at our next set of them, at
the version we wrote (`written_over`): written again at once, logged,
and named in /healthz for `OVERWRITES_WINDOW`. A set of
ours that ZooKeeper applied while its answer was lost (timed out, a
connection dropped) moves the version too: it is recognised by its data
and version, and is no such write (`sentinel.lostanswers`). Before, a
client writing ``up`` over every instance node 1,200 times a second kept
the instances of a stopped Redis published up, every /healthz 200, and
the nodes said so until their next refresh after it stopped. Within
`TAKEN_OVER_GRACE` of our takeover of a node, a write over it in the
name of the agent we took it from is that agent's late set, counted,
not reported; any other is a meddler's as ever.

Opinions and discovery members are watched for their writes too, with
a data watch (``exists``) in place of the children watch: they are
written only when what they say changes, never at a refresh, and
another client's write of one is read by others as ours. An opinion
moves a node this agent does not write, its primary's verdict (with
replicas 2 and quorum 2, one opinion ``up`` keeps a dead Redis
published up); a member sends Finagle's and Prometheus's readers to the
endpoint it names. Each was found only at a refresh, and named in no
/healthz: a client writing ``up`` over the opinions of a stopped Redis's
instances 450--630 times a second kept 22--23 % of the readers' reads of
them ``up`` for as long as it went on, and a member written over with
another host named it for 28 s, every /healthz 200. A write found (a
version other than ours, our session's) is written over with ours
(a member's by `sentinel.discovery`, which logs it) and named in
/healthz as above; the watch fires at our own writes too, an ``exists``
each, which nodes written on change alone can afford. A fired watch is
set again `REWRITE_AFTER` later, with the others fired meanwhile, so a
client writing in a loop costs at most one read and one write of each
per `REWRITE_AFTER`.

Those reads are the guard's alone: no verdict waits for them, while a
primary's reads of the other observers' opinions, which its verdicts
wait for, go in the bridge's background lane (`sentinel.zk`). A rack
going down changes hundreds of opinions at once, on every observer at
the same time, and each write of ours fires its watch: set again as
ordinary reads, hundreds of them went ahead of those verdict reads.
So they are background reads too, at most `WATCH_READS_IN_FLIGHT` of
them asked at once, the rest waiting here in order: a verdict's read
waits behind that many at most, and a burst of our own writes delays
no verdict (`benchmarks/rack.py`); only the guard's own watches are
set again later, a burst's worth of reads that many at a time.

Bounded: a node is watched once per create (an opinion or a member once
per write of it, and at most once per `REWRITE_AFTER` while others write
it); its
deletion is acted on only after `REWRITE_AFTER`, so a squatter deleting
it in a loop gets at most one create of it per `REWRITE_AFTER`; the
writes themselves go
through the write queue (coalesced per node, in flight at most
`WRITES_IN_FLIGHT`, failures retried every second).

Deletions that keep coming (`LOOP_BURSTS` bursts within `LOOP_WINDOW`)
are a client deleting our nodes in a loop: readers miss them for
`REWRITE_AFTER` each time, so /healthz says so (`unhealthy_reason`)
until a `LOOP_WINDOW` passes without them, and the log says so once
per `LOOP_LOG_EVERY`, with the count since its last line. Before, a
client deleting 30 instance nodes every 10 ms for 15 s made readers
find no node in 31 % of their reads, with two lines logged a second
and every /healthz 200.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel import checks
from sentinel.assignment import ranks_below
from sentinel.documents import stored_document
from sentinel.nodes import LOG_NAMESPACE, Node, Nodes
from sentinel.ownership import ours
from sentinel.pacedreads import PacedReads
from sentinel.rearming import Rearming
from sentinel.writes import Lifecycle, WriteQueue, acting
from sentinel.writewatch import CHECK_AFTER
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# Seconds between a deletion seen and the node written again: a wipe's
# deletions come in one line, and a squatter's loop is paced.
REWRITE_AFTER = 0.5
# Paths a burst's line names, the first seen (a wipe's are thousands).
NAMED = 3
# Bursts of deletions within LOOP_WINDOW seconds that make a loop: a
# wipe (one burst), or one again a while later, is no loop.
LOOP_BURSTS = 3
LOOP_WINDOW = 10.0
# Seconds between two log lines while a loop goes on.
LOOP_LOG_EVERY = 60.0
# The reads that watch opinions and members again after their watch
# fired, asked of the bridge at once at most (module docstring): a
# verdict's read of another observer's opinion waits behind this many.
WATCH_READS_IN_FLIGHT = 8
# Seconds /healthz names a write over one of our nodes after it is found:
# an instance node's within a second (`sentinel.writewatch`), or, with
# ``zookeeper.watch_writes`` off, at our next write of it (a change, or
# its refresh, 30 s by default): a loop of them then is found about once
# a refresh per node.
OVERWRITES_WINDOW = 60.0
# Seconds after a takeover in which a write over the node, if its data
# names the previous primary, is that primary's, not a meddler's (one read
# tells, `Guard.written_over`): its sets sent before it heard of the new
# view (within `membership.LISTING_PACE_LIMIT` and its settle time, 5.5 s)
# land on our node whenever their version is the one ours has reached
# (ours starts again at 0), and a joining member of a group of 3 at 300
# instances named one so for 60 s in /healthz.
TAKEN_OVER_GRACE = 15.0


def _listed(paths: list[str]) -> dict[str, str]:
    """The log fields naming the first `NAMED` of `paths`, and how many more."""
    more = len(paths) - NAMED
    return {
        "paths": ", ".join(paths[:NAMED]),
        "more": f" and {more} more" if more > 0 else "",
    }


async def _asked_once(
    ask: Callable[..., Deferred[Any]], paths: dict[Node, str]
) -> list[tuple[bool, Any]]:
    """
    The answer of `ask` (a background read) at each node's path in
    `paths`, in order, each path asked once: a discovery member and its
    instance's node, deleted together, are both told by that node.
    """
    unique = list(dict.fromkeys(paths.values()))
    answers = await DeferredList(
        [ask(path, background=True) for path in unique], consumeErrors=True
    )
    by_path = dict(zip(unique, answers, strict=True))
    return [by_path[path] for path in paths.values()]


def _writer(data: bytes) -> str | None:
    """The agent an instance node's data names as its writer, or None."""
    document = stored_document(data)
    agent = None if document is None else document.get("agent")
    return (
        agent
        if isinstance(agent, str) and checks.znode_name_problem(agent) is None
        else None
    )


class Guard:
    """Watches our nodes for their deletion (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        nodes: Nodes,
        queue: WriteQueue,
        life: Lifecycle,
    ) -> None:
        self._reactor = reactor
        self._zk = zk
        self._nodes = nodes
        self._queue = queue
        self._life = life
        # Nodes seen deleted, and the path each was deleted at.
        self._gone: dict[Node, str] = {}
        self._rewrite_call: IDelayedCall | None = None
        # Opinions and members whose data watch fired, watched (and read)
        # again after `REWRITE_AFTER`, in order, `WATCH_READS_IN_FLIGHT`
        # reads at a time.
        self._paced = PacedReads(
            reactor,
            REWRITE_AFTER,
            WATCH_READS_IN_FLIGHT,
            partial(self._watch, again=True),
            self._acting,
            zk.internal_errors,
        )
        # Nodes deleted behind our back and written again, since start;
        # instance nodes seen deleted that another member had taken over.
        self.deleted = 0
        self.taken_early = 0
        # Discovery members seen deleted that went with their instance's
        # node, taken over by another member (`_taken_apart`).
        self.members_moved = 0
        # Deletions in bursts (a loop is LOOP_BURSTS of them within
        # LOOP_WINDOW), and writes over our nodes (each one reported).
        self._deletions = Meddling(reactor, LOOP_WINDOW, LOOP_BURSTS)
        self._overwrites = Meddling(reactor, OVERWRITES_WINDOW, 1)
        self.writes_over = 0
        self.late_sets = 0
        # Sets of ours found applied with their answer lost (`lostanswers`),
        # not reported: many, with no timeouts or drops, would be a bug.
        self.own_sets_applied = 0
        # Nodes whose watching read failed other than for want of the
        # node (a timeout while connected), read again on a timer
        # (`sentinel.rearming`): opinions and members are written only on
        # change, and their next write may never come.
        self.rearming: Rearming[Node] = Rearming(reactor)

    def arm(self, node: Node) -> None:
        """Watch `node` for its deletion, if it is ours and not watched yet."""
        if node in self._paced:
            return  # Its watch fired: watched again when paced (`_rearm`).
        self._watch(node, again=False)

    def _watch(self, node: Node, again: bool) -> Deferred[None] | None:
        """
        Watch `node` (`arm`), `again` after its data watch fired: in the
        background (module docstring). The read's Deferred, if one is asked.
        """
        member = node.member
        path = node.path if member is None else member.path
        if path is None or node.guarded == path or node.removed:
            return None
        if node.guard is None:
            node.guard = partial(self._fired, node)
        node.guarded = path
        self.rearming.asking(node)
        if member is not None or self._is_opinion(node):
            d = self._zk.exists(path, watch=node.guard, background=again)
            d.addCallbacks(
                self._written_read,
                self._not_armed,
                callbackArgs=(node, path),
                errbackArgs=(node, path),
            )
        else:
            d = self._zk.get_children(path, watch=node.guard)
            d.addCallbacks(
                self._armed, self._not_armed, (node,), errbackArgs=(node, path)
            )
        d.addErrback(lambda f: log.failure("watching {path} failed", f, path=path))
        return d

    def _is_opinion(self, node: Node) -> bool:
        # An opinion's path ends in the instance's name, then our agent id.
        return self._nodes.opinions.get(node.path.rsplit("/", 2)[-2]) is node

    def _written_read(self, stat: Any, node: Node, path: str) -> None:
        """
        What the ``exists`` that watches an opinion or a discovery member
        found: no node (as a deletion), or one our session holds at a
        version other than we wrote, while no write of ours is due or
        under way: another client's data, written over with ours.
        """
        if stat is None:
            # Its watch is now one for the node's creation, which our own
            # rewrite fires: watched again then.
            self._not_armed(Failure(NoNodeError()), node, path)
            return
        self._armed(None, node)
        if node.dirty or node.writing or not ours(stat, self._zk.session_id):
            return
        member = node.member
        if member is not None:
            if member.path == path and stat.version != member.version >= 0:
                # Its write finds it (`Discovery.write`), writes ours over
                # it and logs it.
                self._overwrites.record(1, path)
                self._queue.mark(node)
            return
        if node.owned and stat.version != node.version:
            self.written_over(node)
            # Still ours: set at the version found, with our data.
            node.version = stat.version
            self._queue.mark(node)

    async def overwritten(self, nodes: list[Node]) -> bool:
        """
        Whether another client wrote any of `nodes` (ours, written, not
        being written) since we did: one ``exists`` each, its version
        compared with the one we wrote. A node gone is not overwritten
        (its deletion is the watch's to see); a read that fails says no.
        """
        zk = self._zk
        for node in nodes:
            if not node.owned or node.dirty or node.writing:
                continue
            try:
                stat = await zk.exists(node.path)
            except Exception:
                return False
            if (
                stat is not None
                and node.owned
                and not (node.dirty or node.writing)
                and ours(stat, zk.session_id)
                and stat.version != node.version
            ):
                return True
        return False

    def state_changed(self, state: str) -> None:
        """
        The bridge's state changed (a `ZooKeeper` state listener, told
        before the resync's): no watch is left, nothing seen is acted on.
        """
        self.cancel()
        if state == CONNECTED:
            for node in self._nodes:
                node.guarded = None

    def cancel(self) -> None:
        """Write nothing again from now on (stopping, or halted)."""
        self.rearming.cancel()
        self._gone.clear()
        self._paced.cancel()
        if self._rewrite_call is not None and self._rewrite_call.active():
            self._rewrite_call.cancel()
        self._rewrite_call = None

    def _armed(self, _: object, node: Node) -> None:
        self.rearming.armed(node)

    def _not_armed(self, failure: Failure, node: Node, path: str) -> None:
        if node.guarded == path:
            node.guarded = None
        if failure.check(NoNodeError):
            # Deleted before the watch was set: as if it had fired.
            self.rearming.forget(node)
            self._deleted(node, path)
        elif self._acting() and self._held(node, path):
            # Any other error: a lost connection's resync arms it again,
            # but a timeout while connected is followed by no resync.
            self.rearming.failed(node, path, failure, partial(self._rearm_one, node))
        else:
            self.rearming.forget(node)

    def _rearm_one(self, node: Node) -> None:
        """Watch again a node whose watching read failed, if still ours."""
        if self._acting() and self._held(node, None):
            self._watch(node, again=True)
        else:
            self.rearming.forget(node)

    def unarmed(self) -> dict[str, str]:
        """Each of our nodes no read could watch for `UNARMED_LIMIT`: why."""
        return self.rearming.unresolved(partial(self._held, path=None))

    def _fired(self, node: Node, event: WatchedEvent) -> None:
        if event.path != node.guarded:
            return
        node.guarded = None
        if event.type == EventType.DELETED:
            if node.released and node.member is None:
                self._taken_from_keeper(node)
            self._deleted(node, event.path)
        elif event.type == EventType.CHANGED:
            # An opinion's or a member's data watch (module docstring): paced.
            self._paced.fired(node)
        elif event.type != EventType.NONE:
            # Not a deletion (nothing else should fire it): watch again.
            self.arm(node)

    @staticmethod
    def _taken_from_keeper(node: Node) -> None:
        """
        An instance node kept for its new primary (`sentinel.takeover`) is
        deleted: taken over, a delete and a create in one transaction, for
        this agent never deletes a node it keeps. It is not ours from now
        on, whatever its version: the next write of it asks who holds it
        (and lets it go) rather than set it at the version this agent
        wrote, which the taker's new node, its versions begun again at 0,
        may have reached too. Such a set landed: the node said the keeper's
        verdict, which names the keeper's member, gone, in the place of the
        taker's, until the taker's next write; and at the taker's leave its
        next primary found no member to replace by name and looked at the
        whole service: 35 of 343 endpoints unlisted for up to 8.3 s after a
        staggered start at 1,000 instances, load 18--20.
        """
        node.owned = False

    def _acting(self) -> bool:
        """Whether what the watches find is acted on: running, not halted."""
        return acting(self._life)

    def _deleted(self, node: Node, path: str) -> None:
        if not self._acting():
            return
        self._gone[node] = path
        if self._rewrite_call is None:
            self._rewrite_call = self._reactor.callLater(REWRITE_AFTER, self._rewrite)

    def _rewrite(self) -> None:
        self._rewrite_call = None
        gone, self._gone = self._gone, {}
        if not self._acting():
            return
        held = [node for node, path in gone.items() if self._held(node, path)]
        if not held:
            return
        for node in held:
            if node.member is None and not node.writing:
                # Not known to be ours any more: made again, or its new
                # holder asked (`sentinel.writer`), never set blindly.
                node.owned = False
                node.lost = node.takeover
            self._queue.mark(node)
        wiped = self._nodes.agent in held
        if wiped:
            # Those not seen deleted (not watched yet, or their watch lost)
            # are written too: a set finds a node deleted as well.
            for node in self._nodes:
                if node not in gone and self._held(node, None):
                    self._queue.mark(node)
        maybe_taken = {} if wiped else self._maybe_taken(held, gone)
        if not maybe_taken:
            self._report_deleted(held, gone, wiped)
            return
        d = Deferred.fromCoroutine(self._taken_apart(held, gone, maybe_taken))
        d.addErrback(lambda f: log.failure("reporting deleted nodes failed", f))

    def _maybe_taken(self, held: list[Node], gone: dict[Node, str]) -> dict[Node, str]:
        """
        Those of `held` a member of the group may have taken over, each
        with the instance node whose holder tells: an instance node, at
        the path it was deleted at; a discovery member, at its instance's
        node, which a new primary takes over with the member moved along
        in one transaction (`Takeovers.take_over`), or replaces the member
        of after (`Discovery.take_from`): one this agent's view makes the
        primary of, or keeps for the member its view gave it to (the
        member stays ours until the keeper hears of the takeover, behind
        a loaded start's reads).
        """
        instances = self._nodes.instances
        maybe: dict[Node, str] = {}
        for node in held:
            if node.member is not None:
                state = node.state
                instance = None if state is None else instances.get(state.name)
                if instance is not None and (instance.takeover or instance.released):
                    maybe[node] = instance.path
            elif node.takeover and instances.get(node.name) is node:
                maybe[node] = gone[node]
        return maybe

    async def _taken_apart(
        self, held: list[Node], gone: dict[Node, str], maybe_taken: dict[Node, str]
    ) -> None:
        """
        Report the nodes of `held` deleted, but the instance nodes another
        agent's session holds now: taken over by a member whose view makes
        it their primary while this agent's view still does not say so (a
        delete and a create in one transaction: never missing), no deletion
        behind our back (`sentinel.takeover` settles who keeps it). At a
        group's first start, the first agent publishes every instance
        until its listing, behind its own writes, lists the others, and
        the joiners' takeovers of their shares fired its deletion watches:
        3-15 a start were logged as deleted (and counted towards a loop).
        One ``exists`` each; one that fails counts as deleted, as before.
        A holder is a member when its session holds the agent node of the
        agent its node names (`_members_holding`); one that holds none (a
        squatter's) is said to have written it, as another client, and
        counted as deleted. A discovery member goes with its instance's
        node: one whose instance node a member took over was moved along
        by the group's new primary, no deletion either (`members_moved`);
        before, the first agent of a group of three at 1,000 instances
        named its members moved so as deleted in a loop, 503 for 4--5 s at
        each start (`benchmarks/groupoverwrites.py`). Any other, its
        instance node still ours or a squatter's, is deleted as ever.
        """
        answers = await _asked_once(self._zk.exists, maybe_taken)
        session = self._zk.session_id
        held_by = [
            node
            for node, (ok, stat) in zip(maybe_taken, answers, strict=True)
            if ok
            and stat is not None
            and stat.ephemeralOwner
            and not ours(stat, session)
        ]
        taken = await self._members_holding(held_by, maybe_taken)
        moved = [node for node in held if node in taken and node.member is not None]
        if moved:
            self.members_moved += len(moved)
            log.info(
                "{count} discovery member(s) of this agent moved along with"
                " their instance's node by the member that took it over:"
                " {paths}{more}",
                count=len(moved),
                **_listed([gone[node] for node in moved]),
            )
        taken.difference_update(moved)
        held_by = [node for node in held_by if node.member is None]
        squatted = [node for node in held_by if node not in taken]
        if squatted:
            self.deleted += len(squatted)
            paths = [gone[node] for node in squatted]
            log.warn(
                "{count} instance node(s) deleted and written by another client"
                " (no member of the group: its session holds no agent node)"
                " while this agent is their primary; its holder is asked as"
                " after any failed write: {paths}{more}",
                count=len(squatted),
                **_listed(paths),
            )
        if taken:
            self.taken_early += len(taken)
            paths = [gone[node] for node in held if node in taken]
            log.info(
                "{count} instance node(s) taken over by another member while"
                " this agent is their primary in its view (their views of the"
                " group differ for now, as at a start): {paths}{more}",
                count=len(taken),
                **_listed(paths),
            )
        deleted = [node for node in held if node not in held_by and node not in moved]
        if deleted:
            self._report_deleted(deleted, gone, False)

    async def _members_holding(
        self, held_by: list[Node], paths: dict[Node, str]
    ) -> set[Node]:
        """
        Those of `held_by` (nodes whose instance node, at their path in
        `paths`, another session holds) held by a member of the group: the
        session that holds that node holds the agent node under
        ``{root}/agents`` of the agent it names as its writer. A ``get`` of
        each and an ``exists`` of that agent node; one that fails counts as
        a member's, as every holder did before.
        """
        reads = await _asked_once(self._zk.get, {node: paths[node] for node in held_by})
        agents = self._nodes.agent.path.rpartition("/")[0]
        taken: set[Node] = set()
        asked: list[tuple[Node, int, str]] = []
        for node, (ok, answer) in zip(held_by, reads, strict=True):
            if not ok:
                taken.add(node)
                continue
            data, stat = answer
            writer = _writer(data)
            if writer is not None:
                asked.append((node, stat.ephemeralOwner, writer))
        looks = await DeferredList(
            [
                self._zk.exists(f"{agents}/{writer}", background=True)
                for _, _, writer in asked
            ],
            consumeErrors=True,
        )
        for (node, owner, _), (ok, stat) in zip(asked, looks, strict=True):
            if not ok or (stat is not None and stat.ephemeralOwner == owner):
                taken.add(node)
        return taken

    def _report_deleted(
        self, held: list[Node], gone: dict[Node, str], wiped: bool
    ) -> None:
        """Count and log the nodes `held` deleted behind our back."""
        self.deleted += len(held)
        paths = [gone[node] for node in held]
        unlogged = self._deletions.seen(len(held), paths[0])
        if unlogged is None:
            return
        log.warn(
            "{count} nodes deleted behind the agent's back, written again{wiped}:"
            " {paths}{more}{since}",
            count=len(held),
            wiped=" (its own node too: every node written again)" if wiped else "",
            **_listed(paths),
            since=f" ({unlogged} more since the last such line)" if unlogged else "",
        )

    def in_takeover_grace(self, node: Node, stat: Any = None) -> bool:
        """
        Whether `node` was taken over from another agent less than
        `TAKEN_OVER_GRACE` ago, or, by the stamps of `stat` (the node
        found written over), the write landed within `TAKEN_OVER_GRACE`
        of the node's create, our takeover's: a write over it may be that
        agent's late set, which its data tells (`written_over`). Before,
        only our clock at the finding counted: on a loaded machine (load
        20--35 on 2 cores, ZooKeeper's answers 10 s late) a group member
        found a late set that landed 5 s after its takeover 16 s after it,
        and named it in /healthz for 60 s (`benchmarks/groupoverwrites.py`).
        """
        now: float = self._reactor.seconds()
        if now - node.taken_at < TAKEN_OVER_GRACE:
            return True
        # A write stamped before the node's create says ZooKeeper's servers'
        # clocks differ (a leader ahead made the node), not when it landed:
        # named, as before, not a late set for as long as the node lives.
        return (
            stat is not None
            and node.taken_from_agent is not None
            and 0 <= stat.mtime - stat.ctime < TAKEN_OVER_GRACE * 1000
        )

    async def late_set(self, node: Node, written_by: object, found: Any = None) -> bool:
        """
        Whether a write over `node` found within `TAKEN_OVER_GRACE` of our
        takeover of it, its data saying it was `written_by` that agent, is
        a group member's late set (`written_over`): the agent we took it
        from, or an earlier holder of it. Before, only the agent we took
        it from was: a node a group's start moved twice (``g0`` to ``g1``
        to ``g2``) took a set of ``g0``'s, sent at the version its own node
        had, on ``g2``'s new node, and ``g2`` named it in /healthz for 60 s
        (`benchmarks/groupoverwrites.py`). So is a node whose data named
        another agent than its holder's when we took it (``g0``'s late set
        had landed on ``g1``'s node): ``g1``'s next set was named. A late
        set here names a member of the group, not this agent, whose agent
        node a live session holds now (one ``exists``): the session we took
        the node from, or one that ranks below the agent we took it from, or
        below this agent, in the instance's rendezvous order (a primary
        takes a node from the members its view ranks below it,
        `sentinel.assignment`; our takeover may have gone by an earlier
        reading of the node, and deleted, at the same version, the node a
        member below us had taken over since, whose set then lands on
        ours). A client naming a member that outranks this agent, this
        agent, or no member is named as ever. `found`: the node's stat as
        found written over (`in_takeover_grace`).
        """
        taken_from = node.taken_from_agent
        if taken_from is None or not self.in_takeover_grace(node, found):
            return False
        if written_by == taken_from:
            return True
        agents, _, own = self._nodes.agent.path.rpartition("/")
        if (
            not isinstance(written_by, str)
            or checks.znode_name_problem(written_by) is not None
            or written_by == own
        ):
            return False
        try:
            stat = await self._zk.exists(f"{agents}/{written_by}", background=True)
        except Exception:
            return False  # Unknown: named, as any other write over it.
        if stat is None or not stat.ephemeralOwner or ours(stat, self._zk.session_id):
            return False  # No member of the group now.
        return (
            stat.ephemeralOwner == node.taken_from_session
            or ranks_below(written_by, taken_from, node.name)
            or ranks_below(written_by, own, node.name)
        )

    def written_over(self, node: Node, late_set: bool = False) -> None:
        """
        A set of ours found `node`, still our session's, at another version
        than we wrote: another client wrote its data (`sentinel.writer`,
        which writes ours again at once). Within `TAKEN_OVER_GRACE` of our
        takeover of it, data that names the agent we took it from, or an
        earlier holder of it, is that agent's `late_set`: counted apart
        (`late_sets`), not reported. Any other is reported: before, every
        write within the grace passed as a late set, so a client writing
        over a node just taken over (every node of a member that left,
        at once) was named in no /healthz.
        """
        if late_set:
            self.late_sets += 1
            return
        self.writes_over += 1
        unlogged = self._overwrites.seen(1, node.path)
        if unlogged is not None:
            log.warn(
                "{path} was written by another ZooKeeper client since this "
                "agent wrote it; written again{since}",
                path=node.path,
                since=f" ({unlogged} more since the last such line)"
                if unlogged
                else "",
            )

    def unhealthy_reason(self) -> str | None:
        """
        Why /healthz fails on this account: our nodes deleted in a loop,
        or written by another client lately.
        """
        reasons = []
        if deleted := self._deletions.reported():
            count, path = deleted
            reasons.append(
                f"zookeeper: {count} node(s) of this agent deleted behind its "
                f"back in the last {LOOP_WINDOW:.0f} s (the last {path}), each "
                f"written again {REWRITE_AFTER} s after: readers miss them "
                "meanwhile"
            )
        if written := self._overwrites.reported():
            count, path = written
            reasons.append(
                f"zookeeper: {count} node(s) of this agent written by another "
                f"client in the last {OVERWRITES_WINDOW:.0f} s (the last {path}),"
                " each written again once found (an instance node or this"
                f" agent's node within about {CHECK_AFTER:g} s, at its next write"
                " with zookeeper.watch_writes false; an opinion or a discovery"
                f" member within {REWRITE_AFTER:g} s): readers saw the other"
                " client's data until then"
            )
        return "; ".join(reasons) or None

    def _held(self, node: Node, path: str | None) -> bool:
        """Whether we still hold `node`, at `path` if given, and mean to."""
        if node.removed or node.released:
            return False
        member = node.member
        nodes = self._nodes
        if member is not None:
            state = node.state
            return (
                member.path is not None
                and path in (None, member.path)
                and state is not None
                and nodes.members.get(state.name) is node
            )
        if not (node.owned or node.writing):
            return False
        if node is nodes.agent or node in nodes.catalog:
            return True
        return nodes.instances.get(node.name) is node or self._is_opinion(node)


class Meddling:
    """
    Another client's deletions or writes of our nodes, as this agent
    finds them: reported while at least `reported_from` were found within
    the last `window` seconds, and logged once per `LOOP_LOG_EVERY` while
    they are (`seen`), so that a loop costs neither the log nor memory
    more than a line a minute and a window's events.
    """

    def __init__(self, reactor: Any, window: float, reported_from: int) -> None:
        self._reactor = reactor
        self._window = window
        self._reported_from = reported_from
        # Each time some were found: when, how many, the first path.
        self._found: deque[tuple[float, int, str]] = deque()
        self._logged_at = float("-inf")
        self._unlogged = 0

    def seen(self, count: int, path: str) -> int | None:
        """
        Some found (`count`, the first at `path`): None if not to be
        logged now, else how many went unlogged since the last line.
        """
        now = self.record(count, path)
        if self.reported() and now - self._logged_at < LOOP_LOG_EVERY:
            self._unlogged += count
            return None
        unlogged, self._unlogged, self._logged_at = self._unlogged, 0, now
        return unlogged

    def record(self, count: int, path: str) -> float:
        """Some found, logged by the caller's own line: when."""
        now: float = self._reactor.seconds()
        self._found.append((now, count, path))
        return now

    def reported(self) -> tuple[int, str] | None:
        """How many within the window and the last path, if enough to report."""
        found = self._found
        while found and found[0][0] <= self._reactor.seconds() - self._window:
            found.popleft()
        if len(found) < self._reported_from:
            return None
        return sum(count for _, count, _ in found), found[-1][2]
