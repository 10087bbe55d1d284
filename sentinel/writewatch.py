"""
Another client's write over one of our instance nodes, or over our
agent node, found and undone within about a second, not at our next
write of the node.

Without ``auth_file`` any ZooKeeper client may set our instance nodes;
readers (proxies) act on what they say. The deletion watch
(`sentinel.guard`) is a children watch, which a write never fires, so such
a write was found only at our next set of the node, refused at the version
we wrote: a change, or the refresh (30 s by default). A client that wrote
``up`` over the nodes of a stopped Redis had readers read that ``up`` for
up to a refresh after it stopped.

So each instance node we hold is also watched for its writes, with a data
watch (an ``exists``) set after each write of ours. The watch fires at
our own writes too (ZooKeeper does not tell who wrote): one ``exists``
per write of ours, to set it again, is what this costs, and no
transaction carries it, where the refresh's sets go 64 to one: at 3,000
instances, all up, ZooKeeper received 102.7 requests a second in place
of 3.4, and the agent took 15.5 % of a core in place of 12.7 %
(`benchmarks/watchcost.py`; reads, which ZooKeeper answers without its
quorum). ``zookeeper.watch_writes = false`` turns it off; it is off by
default for an agent whose nodes ``auth_file`` keeps other clients from
writing. A fired
watch is set again `CHECK_AFTER` later, with every other fired
meanwhile, in the bridge's background lane (`sentinel.zk`),
`READS_IN_FLIGHT` at a time (`sentinel.pacedreads`): a burst of our own
writes (a rack going down) delays no verdict's read. That read tells:
our session's node at a version other than the one we wrote, while no
write of ours is due or under way, is written by us at once. With no
set of ours left unanswered (`sentinel.lostanswers`) and no takeover of
the node within its grace (`Guard.in_takeover_grace`), nothing but
another client can have written it: named in /healthz and the log here
(`Guard.written_over`), and our set goes at the version the read found,
one call. Before, it went at the version we wrote, was
refused, and a question (an ``exists``) came before the set that
succeeded: three calls a forged node, and with all 1,000 nodes of an
agent forged at once the last was right again 6.8 s after the forger
stopped. Otherwise (a set of ours may have been applied with its answer
lost, or a previous primary's late set may have landed), the set goes
at the version we wrote, and its refusal tells which it was
(`sentinel.writer`).

This agent's node, ``{root}/agents/{id}``, is watched the same way: it
was found written over only at its next heartbeat (10 s), and readers
(operators, tools) read another pid or another list meanwhile. Found at
a version we did not write, it is written again at once by the refused
set's path, which with a ``state_dir`` lets what it says tell another
client from this agent's other process on our session
(`sentinel.sharing`). One read a heartbeat is what it costs. The
group's members never read its data, only which session holds it
(`sentinel.membership`): a forged agent node moves no instance; the
catalog, which they do read, is checked at each heartbeat by the guard.

Bounded whatever the other client does: a node is read at most once per
`CHECK_AFTER`, so a client writing it in a loop costs at most one read
and one rewrite of it a `CHECK_AFTER`, however fast it writes. A node
not ours any more (deleted, taken over, kept for its new primary) is
the deletion watch's and the takeovers' (`sentinel.takeover`) to see:
nothing is done about it here. kazoo forgets every watch when its
connection drops: the resync writes every node again, which watches it
again. A read that fails (a timeout) is tried again at the next pace.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from kazoo.protocol.states import EventType, WatchedEvent
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from sentinel.nodes import Node, Nodes
from sentinel.ownership import ours
from sentinel.pacedreads import PacedReads
from sentinel.writes import Lifecycle, WriteQueue, acting
from sentinel.zk import CONNECTED, ZooKeeper

if TYPE_CHECKING:
    # The guard takes `CHECK_AFTER` from here.
    from sentinel.guard import Guard

# Seconds between a watch fired and the read that sets it again (and tells
# whose write fired it): how long another client's write may stand at most,
# and the pace of our rewrites of a node a client writes in a loop.
CHECK_AFTER = 1.0
# The reads that set fired watches again asked of the bridge at once at
# most, as many as the guard's (`guard.WATCH_READS_IN_FLIGHT`): a
# verdict's read waits behind this many of each at most.
READS_IN_FLIGHT = 8


class WriteWatch:
    """Watches our instance and agent nodes for others' writes (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        nodes: Nodes,
        queue: WriteQueue,
        life: Lifecycle,
        guard: Guard,
    ) -> None:
        self._zk = zk
        self._guard = guard
        self._nodes = nodes
        self._queue = queue
        self._life = life
        self._paced = PacedReads(
            reactor,
            CHECK_AFTER,
            READS_IN_FLIGHT,
            self._read_again,
            self._acting,
            zk.internal_errors,
        )
        # Reads made to watch an instance node, since start: the cost (one
        # a write; the agent node's, one a heartbeat, are not counted).
        self.reads = 0

    def written(self, node: Node) -> None:
        """
        A write of `node` by us ended (`sentinel.writer`): watch it, at the
        next pace, if it is an instance node of ours not watched now.
        """
        if node.write_watched != node.path and self._ours(node):
            # Paced as a fired one: a resync's thousands of writes, each
            # read at once, doubled its calls in flight; the read finds
            # another client's write made meanwhile all the same.
            self._paced.fired(node)

    def state_changed(self, state: str) -> None:
        """
        The bridge's state changed (a `ZooKeeper` state listener, told
        before the resync's): no watch is left; the resync's writes arm
        them again.
        """
        self.cancel()
        for node in self._nodes.instances.values():
            node.write_watched = None
        self._nodes.agent.write_watched = None

    def cancel(self) -> None:
        """Read nothing again from now on (stopping, or halted)."""
        self._paced.cancel()

    def _ours(self, node: Node) -> bool:
        """Whether `node` is our agent node or an instance node, held and meant."""
        return (
            node.owned
            and not (node.removed or node.released)
            and (self._instance(node) or node is self._nodes.agent)
        )

    def _instance(self, node: Node) -> bool:
        return self._nodes.instances.get(node.name) is node

    def _acting(self) -> bool:
        return acting(self._life)

    def _read_again(self, node: Node) -> Deferred[Any] | None:
        """A paced read: none for a node no longer ours, or watched again."""
        if not self._ours(node) or node.write_watched == node.path:
            return None
        return self._read(node)

    def _read(self, node: Node) -> Deferred[Any]:
        """The ``exists`` that watches `node` and tells whose data it has."""
        if node.write_watch is None:
            node.write_watch = partial(self._changed, node)
        path = node.path
        node.write_watched = path
        self.reads += self._instance(node)
        d = self._zk.exists(path, watch=node.write_watch, background=True)
        d.addCallbacks(
            self._answered,
            self._failed,
            callbackArgs=(node, path),
            errbackArgs=(node, path),
        )
        return d

    def _changed(self, node: Node, event: WatchedEvent) -> None:
        if event.path != node.write_watched:
            return
        node.write_watched = None
        if event.type == EventType.CHANGED and self._acting():
            self._paced.fired(node)
        # Deleted (the guard's to see), or a state event: armed again at
        # our next write of it.

    def _answered(self, stat: Any, node: Node, path: str) -> None:
        if stat is None or not ours(stat, self._zk.session_id):
            # Not ours (the guard's, the takeovers'): not watched for writes.
            if node.write_watched == path:
                node.write_watched = None
            return
        if node.dirty or node.writing or not self._ours(node) or not self._acting():
            if stat.version != node.version:
                # A write of ours due or under way finds it: made, not
                # skipped as unchanged (`sentinel.unchanged`).
                node.held = None
            return
        if stat.version != node.version:
            if (
                self._instance(node)
                and not node.unanswered
                and not self._guard.in_takeover_grace(node, stat)
            ):
                # Another client's write for sure (no set of ours is
                # unanswered, no previous primary's late set to tell):
                # named here, and ours set at the version found, one
                # call (module docstring).
                self._guard.written_over(node)
                node.version = stat.version
            else:
                # A late set of the previous primary, or our own set with
                # its answer lost: the set at the version we wrote tells
                # which (`sentinel.writer`). Made even if our bytes did not
                # change, or the node said the previous primary's name and
                # verdict until our refresh.
                node.held = None
            self._queue.mark(node)

    def _failed(self, failure: Failure, node: Node, path: str) -> None:
        # Not armed: read again at the next pace while it is ours (a lost
        # connection's resync arms it anyway).
        if node.write_watched == path:
            node.write_watched = None
        if self._acting() and self._ours(node) and self._zk.state == CONNECTED:
            self._paced.fired(node)
