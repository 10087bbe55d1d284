"""
One write of one node: make ZooKeeper hold the node's newest data as an
ephemeral node of our session, or no node if it was removed, never
overwriting another session's node.

A node we own is set at the version we last wrote: a set at another
version fails, so a node another agent took over is never overwritten (a
failed set makes us ask who holds it now), unless the node is found
ours, at what a set of ours whose answer was lost made of it
(`sentinel.lostanswers`): then it is set again at once at its version. A
node we do not know to own is created; if it exists, its holder is
asked: ours (a reconnection to the same session, or a session inherited
from the previous process) and it is adopted and set (what an instance
node inherited from the previous process says is kept in `Node.kept`, so
that its ``since`` stays when it says the status found now); another
session's and the write ends in `writes.HeldElsewhere`
(`sentinel.holders` parks it), unless this agent, a group's primary,
takes it over (`sentinel.takeover`). A primary in
place of another member that holds the node reads it (a ``get``, sent
with the writes) and takes it over at once: at a member's leave, its
create failed, then a question and the takeover's own read each waited
behind the view change's reads, four round trips before the node was
taken (0.6--1.1 s at 1,000 instances, load 6). One in place of a member
whose session is known to have ended (`Node.holder_gone`: a crash) makes
the node with a create alone. On an inherited
session, and for a node held when last asked, the holder is asked first:
a create would only fail. So it is for a primary's node (every instance
node is one) it lost, or while the last of its creates or questions found
a node held (after a `kill -9` of the previous process, before its
session expired): creates then fail one by one. Otherwise a primary creates at
once: a question before every create, one call that no transaction
carries, made 10,000 new nodes take 35 s to appear instead of 17.
A removed node is deleted only if it is ours; then a removed opinion's
persistent parent, ``{root}/opinions/{name}``, unless another observer's
opinion is still in it (the last observer to go deletes it), so that
ZooKeeper keeps no parent for every instance ever observed. One moved to
another primary is only ever set, until it takes it over
(`Takeovers.keep`).
A set that would write exactly what the node holds is not made, unless
it is the node's refresh (`sentinel.unchanged`).
Discovery members are written by `sentinel.members`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)

from sentinel.clockskew import ClockSkew
from sentinel.documents import (
    said_checked_at,
    said_since,
    stored_document,
    written_by,
)
from sentinel.guard import Guard
from sentinel.holders import Holders
from sentinel.lostanswers import answered, applied_stat, made, remembered_set
from sentinel.members import Members
from sentinel.nodes import Node, Nodes
from sentinel.ownership import ours
from sentinel.sweep import Sweep
from sentinel.takeover import Takeovers
from sentinel.unchanged import unchanged, wrote
from sentinel.writes import UNCHANGED, HeldElsewhere, Unchanged, WriteQueue
from sentinel.writewatch import WriteWatch
from sentinel.zk import ZooKeeper

# What `NodeWriter._written_by` finds of a node no longer ours.
_NOT_OURS = object()


class NodeWriter:
    """The ZooKeeper calls of one write (module docstring)."""

    def __init__(
        self,
        zk: ZooKeeper,
        nodes: Nodes,
        queue: WriteQueue,
        holders: Holders,
        takeovers: Takeovers,
        members: Members,
        sweep: Sweep,
        guard: Guard,
        write_watch: WriteWatch | None,
        clock: ClockSkew,
        previous_verdict: Callable[[str, dict[str, Any]], None],
        agent_written_over: Callable[[bytes, Any], None] | None,
        refresh_due: Callable[[Node], bool],
    ) -> None:
        """
        @param previous_verdict: told of what an instance node inherited
            from the previous process says, before this process's first
            write of it (`sentinel.group`).
        @param agent_written_over: with a state_dir, told what our agent
            node holds (and its stat) when a set of it finds it written
            since, and not by a set of ours (`SessionSharing.written_over`):
            this agent's other processes on our session (a predecessor on
            its way out, a copy) write it too, and what it says tells who
            wrote it. None without one: another client wrote it.
        @param refresh_due: whether a node of ours is due its refresh
            (`ZooKeeperPublisher`'s rule): then it is set even if it holds
            the bytes already (`sentinel.unchanged`).
        """
        self._zk = zk
        self._nodes = nodes
        self._queue = queue
        self._holders = holders
        self._takeovers = takeovers
        self._members = members
        self._sweep = sweep
        self._guard = guard
        self._write_watch = write_watch
        self._clock = clock
        self._previous_verdict = previous_verdict
        self._agent_written_over = agent_written_over
        self._refresh_due = refresh_due
        # Whether the node a primary writes first is likely held already
        # (module docstring): what the last create or question found.
        self._expect_held = False

    async def write(self, node: Node) -> Unchanged | None:
        """
        Write `node` as it is now (the write queue calls it), and watch it
        for its deletion once it is ours (`sentinel.guard`), an instance
        node for other clients' writes too (`sentinel.writewatch`).
        `UNCHANGED` if the node holds those bytes already, and no set was
        made (`sentinel.unchanged`).
        """
        result = await self._write(node)
        if node.owned or node.member is not None:
            self._guard.arm(node)
            if self._write_watch is not None:
                self._write_watch.written(node)
        return result

    async def _write(self, node: Node) -> Unchanged | None:
        zk = self._zk
        counted = self._queue.counted
        if node.member is not None:
            await self._members.write(node, node.member)
            return None
        if node.removed:
            await self.delete_owned(node)
            if node.prune_parent and not node.taken_back:
                await self._delete_if_empty(node.path.rsplit("/", 1)[0])
            return None
        if node.released:
            # Moved to another primary: kept true until it takes it over.
            await self._takeovers.keep(node)
            return None
        data = node.data()
        if data is None and not node.takeover:
            # Nothing to say yet (an opinion before the first check).
            return None
        written_over = False
        if node.owned and data is not None:
            if (
                self._write_watch is not None
                and node is not self._nodes.agent
                and unchanged(node, data)
                and not self._refresh_due(node)
            ):
                # What the node holds already; its write watch tells any
                # other client's write (`sentinel.unchanged`).
                return UNCHANGED
            try:
                sent = self._clock.now()
                stat = await self._set(node, data, node.version)
                if node is self._nodes.agent:
                    # Every heartbeat: this agent's clock against ZooKeeper's.
                    self._clock.written(stat, sent)
                if node.takeover and not ours(stat, zk.session_id):
                    # Applied, but to another member's node: a set sent
                    # before a secondary took the node over (a primary
                    # whose writes hung) that landed on the taker's new
                    # one at a version it happened to reach. Taken for
                    # ours, the node waited for our next set (a refresh,
                    # 30 s later) before it was taken back: ask its holder
                    # now, as after a set refused.
                    node.owned = False
                    node.lost = True
                    node.dirty = True
                return None
            except (NoNodeError, BadVersionError) as e:
                # Gone, or written by someone else: ask who holds it now.
                # At any version, version 0 too: a node made by our create
                # and not written since is a meddler's to write as much as
                # any other (a previous primary's late set, which lands on
                # a node just taken over, is the guard's to tell by the
                # time since the takeover: `Guard.written_over`).
                written_over = isinstance(e, BadVersionError)
                if written_over and node.unanswered:
                    applied = await applied_stat(zk, node.path, node)
                    if applied is not None:
                        # Our own set, its answer lost: ours, set again
                        # at once with the newest data (`lostanswers`).
                        self._guard.own_sets_applied += 1
                        node.version = applied.version
                        await self._set(node, data, applied.version)
                        return None
                node.owned = False
                node.lost = node.takeover
        # Held by another session when last asked, maybe ours on an
        # inherited session, or another agent's that we take over: ask
        # first, a create would only fail.
        stat = None
        read = None
        if node.holding is not None:
            stat = await self._holders.ask(node)
        elif self._sweep.inherited and self._nodes.instances.get(node.name) is node:
            stat = await self._inherit(node)
            # Made again: to keep the since the node says (`Node.kept`),
            # and from the status the checks go on from, which may be the
            # one the node said (`_inherit`).
            data = node.data()
        elif node.takeover and node.held_before:
            # Primary in place of a member that holds it: one read gives
            # the takeover the stat and what the node says. A create first
            # only failed, and the question after it was one more round
            # trip behind a view change's reads (module docstring).
            node.held_before = False
            if node.holder_gone:
                # That member's session ended (a crash): the node went
                # with it, and a create alone makes it (`make_anew`).
                node.holder_gone = False
                await self._takeovers.make_anew(node)
                return None
            read = await self._takeovers.read(node)
            stat = None if read is None else read[1]
        elif self._sweep.inherited or (
            node.takeover and (node.lost or self._expect_held)
        ):
            stat = await zk.exists(node.path)
            if stat is None and node.takeover:
                self._expect_held = False
        if stat is None:
            if data is None:
                return None
            try:
                await counted("create", zk.create(node.path, data, ephemeral=True))
                node.owned = True
                node.version = 0
                made(node)
                node.made_here()
                wrote(node, 0, data)
                if node.standing_in:
                    self._takeovers.stood_in(node)
                return None
            except NodeExistsError:
                if node.takeover:
                    self._expect_held = True
                stat = await self._holders.ask(node)
            if stat is None:
                # Gone in between (its session just ended): try again at once.
                node.dirty = True
                return None
        if not ours(stat, zk.session_id):
            if node.takeover and await self._takeovers.take_over(node, read):
                return None
            raise HeldElsewhere(stat)
        if written_over and node is self._nodes.agent and self._agent_written_over:
            # Our agent node, with a state_dir: who wrote it is for what
            # it says to tell (`sentinel.sharing`), read before our set.
            await self._agent_node_read(node)
        elif written_over and (
            self._nodes.instances.get(node.name) is node or node is self._nodes.agent
        ):
            # An instance node, or our agent node, still our session's, at
            # another version than ours: another client wrote what readers
            # read. (The catalog is checked at each heartbeat.) Soon after
            # a takeover, its data tells the previous primary's late set.
            late_set = False
            if self._guard.in_takeover_grace(node, stat):
                found_by = await self._written_by(node)
                if found_by is _NOT_OURS:
                    # Taken over (or gone) since the question found it
                    # ours: no write over a node of ours, and no set of
                    # ours goes on the taker's node. Asked again.
                    node.dirty = True
                    return None
                late_set = await self._guard.late_set(node, found_by, stat)
            self._guard.written_over(node, late_set)
        node.owned = True
        node.lost = False
        node.version = stat.version
        answered(node, stat.version)
        if data is not None:
            await self._set(node, data, stat.version)
        return None

    async def _written_by(self, node: Node) -> object:
        """
        The agent our instance node, found written by another client,
        says wrote it (`documents.written_by`): one read, only within a
        takeover's grace. `_NOT_OURS` if it is gone, or no longer our
        session's: a member took it over since it was found ours (at a
        group's start, the read came 3 s after the question).
        """
        try:
            stored, stat = await self._zk.get(node.path)
        except NoNodeError:
            return _NOT_OURS
        return written_by(stored) if ours(stat, self._zk.session_id) else _NOT_OURS

    async def _agent_node_read(self, node: Node) -> None:
        """What our agent node, written since our set, holds, to `sharing`."""
        assert self._agent_written_over is not None
        try:
            stored, stat = await self._zk.get(node.path)
        except NoNodeError:
            return
        if ours(stat, self._zk.session_id):
            self._agent_written_over(stored, stat)

    async def _set(self, node: Node, data: bytes, version: int) -> Any:
        """
        Set `node` at `version`: its new stat, taken as the node's version;
        a set that ends with no answer is remembered (`lostanswers`).
        """
        stat = await remembered_set(
            self._zk, self._queue.counted, node, node.path, data, version
        )
        node.version = stat.version
        wrote(node, stat.version, data)
        return stat

    async def _inherit(self, node: Node) -> Any:
        # An instance node on a session inherited from the previous process:
        # its stat, and, if it is ours, the status it says and since when
        # (kept until the first write of this process's own state), and
        # the check it says it was written after. Its verdict, if fresh, is
        # where this process's rise/fall goes on from: a restart is no news
        # of the instance, and the first check (a Redis blip at the deploy,
        # a connect slow while thousands start) made no rise or fall of it.
        try:
            stored, stat = await self._zk.get(node.path)
        except NoNodeError:
            return None
        if ours(stat, self._zk.session_id):
            said = stored_document(stored) or {}
            node.kept = said_since(said)
            node.said_checked_at = said_checked_at(said)
            self._previous_verdict(node.name, said)
        return stat

    async def delete_owned(self, node: Node) -> None:
        """
        Delete the node if it is ours, unless a new node at its path took
        it over meanwhile (`Nodes.take_back`); it is not ours after,
        either way.
        """
        zk = self._zk
        try:
            stat = await zk.exists(node.path)
            if ours(stat, zk.session_id) and not node.taken_back:
                await self._queue.counted("delete", zk.delete(node.path, stat.version))
        except NoNodeError:
            pass
        node.owned = False

    async def delete_leaving(self, node: Node) -> None:
        """
        On a stop's leave of its group: delete the node, ours, at the
        version last written, past every call waiting (`ZooKeeper.delete`,
        urgent), without asking first; at another version (a write of
        ours was in flight), as `delete_owned` does.
        """
        try:
            await self._queue.counted(
                "delete", self._zk.delete(node.path, node.version, urgent=True)
            )
        except NoNodeError:
            pass
        except BadVersionError:
            await self.delete_owned(node)
        node.owned = False

    async def _delete_if_empty(self, path: str) -> None:
        """Delete the persistent node at `path` unless it has children."""
        try:
            await self._queue.counted("delete", self._zk.delete(path))
        except (NotEmptyError, NoNodeError, NoAuthError):
            # Another observer's opinion is still there (the last one to
            # go deletes it), or it is gone already, or not ours to delete.
            # An observer creating its opinion meanwhile makes it again:
            # the bridge creates missing parents.
            pass

    async def delete_now(self, node: Node) -> None:
        """On a deregistering stop: delete the node (or member) if ours."""
        if node.member is not None:
            await self._members.delete(node.member)
        else:
            await self.delete_owned(node)
