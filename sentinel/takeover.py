"""
An instance node moving from one primary of a group to the next (DESIGN.md
section 8, "Groups"), seen from both ends.

The new primary takes the node over in one ZooKeeper transaction (a delete
at the version it read, then a create), so that readers never find it
missing (a reading kept as an observer is checked first: the node may
be a third member's since, at the same version, `_still_as_read`), and
keeps the previous agent's verdict as its own until it has one
(`take_over`); with one replica, its checks go on from that verdict,
if fresh: a rise or fall of theirs, not the first of them, changes it
(`sentinel.group`). While it holds the node it watches it: another agent
taking it over is noticed at once, not at the next write
(`check_still_ours`). A node taken from an agent that still thinks itself
primary is left to the taker for `YIELD_SECONDS`, within which their views
of the group agree again. The ``since`` the node said stays, if the new
primary's document says the same status: a move is not a change.

The old primary keeps the node, and keeps it true, until the new one
takes it over (`hand_off`): it goes on checking the instance and writing
the node as before (`keep`: a set at the version it wrote, so the
taker's transaction, at the version it read, is tried again if a write
came between), watches it, and lets it go once another session holds it
(`handed_over`; it makes it again if it is gone, with a session of its
own that expired, say, once its view is current if a reload removed the
instance here); then likewise for the instance's discovery
member, which the new primary replaces in the node's own transaction
when the verdict names it (`Members.along`), or else once it holds the
node. It never
deletes a node it keeps: its new primary is a live member of the group,
which may take it over at any moment. A member frozen just after joining,
or restarting in a loop, never took over the nodes handed to it, and they
were deleted after a limit, missing until its session ended, or for as
long as the loop went on. A node kept for `HANDOFF_LIMIT` is reported
instead (`late`: /healthz fails), until it is taken over or its new
primary leaves the group (its role then moves on). It never takes the
node from anyone; a set of its own that lands on the taker's new node
(versions start again at 0 there, and the set left before the keeper
heard of the takeover) is found by the taker, which writes its own again
(`check_still_ours`, or its next set). A stop that leaves the group waits
for its nodes to be taken over (`taken_over`), and once stopping no
takeover starts.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import (
    BadVersionError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
)
from kazoo.protocol.states import EventType, WatchedEvent
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.checks import printable
from sentinel.config import RedisInstance
from sentinel.discovery import Discovery
from sentinel.documents import (
    carried_verdict,
    previous_presence,
    previous_verdict,
    said_checked_at,
    said_member,
    said_since,
    written_by,
)
from sentinel.holders import RECHECK_MIN, Holders
from sentinel.lostanswers import made
from sentinel.nodes import LOG_NAMESPACE, Node, Nodes, encode
from sentinel.ownership import ours
from sentinel.rearming import Rearming
from sentinel.unchanged import wrote
from sentinel.writes import Lifecycle, WriteQueue
from sentinel.zk import MemberRefused, ZooKeeper

if TYPE_CHECKING:
    from sentinel.members import MemberAlong, Members

log = Logger(namespace=LOG_NAMESPACE)

# Seconds an instance node moved away may wait for its new primary to take
# it over before /healthz says so; a member that joined takes its nodes
# over within a second.
HANDOFF_LIMIT = 5.0
# Seconds the instance's discovery member then waits for the new primary,
# which holds the node, to replace it, before it goes (deleted if still
# ours): the new primary finds it by a look at the service's members, a
# ``get`` each (measured: 7-9 s at 3,000 members on a loaded machine; at
# 5 s, 1,450 of 3,000 endpoints were deleted before they were replaced and
# went missing for 10 s). Past this, the new primary missed it (two
# instances on one endpoint: it replaced the other's), and it would be
# listed twice.
MEMBER_HANDOFF_LIMIT = 30.0
# Seconds a primary lets another agent keep a node it took from it, unless
# the membership changes first: two settle times, within which the two
# agents' views of the group agree again.
YIELD_SECONDS = 1.0
# Seconds a reading of a node to take over, answered, is as new as a
# question about it would be (`Takeovers._still_as_read`): its own round
# trip is the window either way.
FRESH_READ = 0.05
# What a watch of an instance node is for (`sentinel.rearming`'s keys): a
# node kept for its new primary, one we hold as primary, a stop's wait.
_HANDOFF = "handoff"
_STILL_OURS = "still ours"
_TAKEN_OVER = "taken over"


class Takeovers:
    """
    This agent's instance nodes as they move to and from other primaries;
    `remove(name)` deletes an instance's node (and member) for good.
    """

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        nodes: Nodes,
        queue: WriteQueue,
        holders: Holders,
        life: Lifecycle,
        agent_id: str,
        remove: Callable[[str], None],
        contested: Callable[[str], bool],
        handed_over: Callable[[str], None],
        inherit: Callable[[str, dict[str, Any]], None],
        discovery: Discovery | None = None,
        verdict_node: Callable[[str], tuple[bytes, Any] | None] = lambda name: None,
        verdict_node_seen: Callable[[str], tuple[bytes, Any] | None] = (
            lambda name: None
        ),
        named_before_missing: Callable[[str], str | None] = lambda name: None,
    ) -> None:
        """
        @param contested: whether another member of the group could take
            an instance's node over now (`sentinel.group`).
        @param handed_over: told of an instance whose node, kept for its
            new primary, is another's now (`sentinel.roles`).
        @param inherit: told of the verdict a node said when this agent
            takes it over, before it writes its own (`sentinel.group`);
            never raises.
        @param discovery: the members' side, when members are published.
        @param verdict_node: an instance's node (data and stat) as this
            agent last read it as an observer, if it did; forgotten once
            asked (`Opinions.verdict_node`).
        @param named_before_missing: the discovery member an instance's
            node named before it went, as this agent last read it as an
            observer (`Opinions.named_before_missing`).
        """
        self._reactor = reactor
        self._zk = zk
        self._nodes = nodes
        self._queue = queue
        self._holders = holders
        self._life = life
        self._agent_id = agent_id
        self._remove = remove
        self._contested = contested
        self._handed_over = handed_over
        self._inherit = inherit
        self._discovery = discovery
        self._verdict_node = verdict_node
        self._verdict_node_seen = verdict_node_seen
        self._named_before_missing = named_before_missing
        self.takeovers = 0
        self.handoffs = 0
        # Nodes made anew in place of a member whose session had ended
        # (`make_anew`), for /debug/stats beside the takeovers.
        self.made_anew = 0
        # Takeovers that went by a reading kept as an observer, found older
        # than the node (`_still_as_read`): read again, not sent.
        self.read_again = 0
        # The instances' members, which move with their nodes (set once
        # they exist: they are made after this).
        self.members: Members | None = None
        # Whether this agent's view of the group is from before its new
        # session (`Membership.returning`), or holds members not listed
        # since (`Membership.absent`): who else knows an instance may have
        # changed unseen.
        self.view_stale: Callable[[], bool] = lambda: False
        # The watches below whose ``exists`` failed, asked again on a
        # timer (`sentinel.rearming`), by purpose and node.
        self.rearming: Rearming[tuple[str, Node]] = Rearming(reactor)

    @property
    def keeping(self) -> bool:
        """Whether a node moved away is kept for its new primary (not stopping)."""
        return bool(self._life.running)

    @property
    def handing_off(self) -> list[str]:
        """The instances whose node waits for its new primary."""
        return sorted(n for n, node in self._nodes.instances.items() if node.released)

    def unarmed(self) -> dict[str, str]:
        """
        Each watch of a node this agent holds as primary or keeps for its
        new primary that no call could arm for `UNARMED_LIMIT`: why.
        """
        return self.rearming.unresolved(self._still_wanted)

    def _still_wanted(self, key: tuple[str, Node]) -> bool:
        purpose, node = key
        if purpose == _HANDOFF:
            return self._keeps(node)
        return purpose == _STILL_OURS and self._holds(node)

    def _holds(self, node: Node) -> bool:
        """Whether `node` is an instance node we hold as its primary."""
        return (
            node.takeover
            and node.owned
            and not node.removed
            and self._nodes.instances.get(node.name) is node
        )

    def late(self) -> dict[str, str]:
        """
        Each node kept for a new primary that has not taken it over for
        `HANDOFF_LIMIT` or more: to whom, and since when.
        """
        now = self._reactor.seconds()
        return {
            node.path: f"handed to {node.handed_to or 'another member'} "
            f"{now - node.handed_at:.1f} s ago, not taken over"
            for node in self._nodes.instances.values()
            if node.released and now - node.handed_at >= HANDOFF_LIMIT
        }

    # The new primary's end

    def coming(self, instance: RedisInstance) -> None:
        """
        This agent is `instance`'s primary now, in place of another member
        whose session holds its node: the look for that member's discovery
        member starts at once (`Discovery.look_ahead`), beside the takeover,
        and so does the read of the member its verdict names, which the
        takeover's transaction replaces (`Discovery.read_named_ahead`).
        """
        if self._discovery is None:
            return
        self._discovery.look_ahead(self._discovery.parent_of(instance))
        known = self._verdict_node_seen(instance.name)
        previous = None if known is None else previous_verdict(known[0])
        named = None if previous is None else said_member(previous)
        if named is not None and self.members is not None:
            self._discovery.read_named_ahead(named)

    async def read(self, node: Node) -> tuple[bytes, Any] | None:
        """
        What a node this agent is to take over says, and its stat (None
        if there is none): as this agent, an observer of the instance,
        last read it (with replicas above 1, the member that leaves
        wrote it last at least a refresh ago), or else read with the
        writes, ahead of other reads (`ZooKeeper.get`), and watched as
        `Holders.ask` watches it. At a leave, 1,000 new primaries' reads
        took 1-2 s at 3,000 instances, and the transactions waited
        behind them.

        The reading serves only if it is of the node of the member this
        agent takes it from (`Node.held_by`, the primary in its previous
        view): one read before that member had taken the node over (a
        start-up, a join: its previous primary keeps it meanwhile) is
        another's node, and versions start again at 0 at each takeover,
        so the member's node may have the version read. The transaction
        then deleted it as the one read, and the discovery member looked
        for was the one of the session read, not of the session that held
        the node: none was found, and this agent's was listed beside the
        member's until its session ended (9 endpoints for 3.44 s at a
        leave at 3,000 instances whose start-up had moved 350 nodes).
        A reading kept may also be older than another member's takeover
        of the node since: the transaction asks whether it still is the
        node read first (`Node.read_at`, `_still_as_read`).
        """
        known = self._verdict_node(node.name)
        node.read_at = None
        if known is not None and written_by(known[0]) == node.held_by:
            return known
        try:
            found = await self._zk.get(node.path, watch=node.watcher, ahead=True)
            node.read_at = self._reactor.seconds()
            return found
        except NoNodeError:
            return None
        except NoAuthError:
            # A node we may not read is no agent's (an agent's nodes are
            # readable by anyone): a squatter's, as garbage is. Its stat,
            # for which ZooKeeper asks no permission, names its holder
            # for `Holders` to judge. Before, the failed read was retried
            # as a failed write, and /healthz named only its staleness,
            # 5 s later, where a readable squatter is named at once.
            stat = await self._zk.exists(node.path, watch=node.watcher)
            return None if stat is None else (b"", stat)

    async def take_over(
        self, node: Node, read: tuple[bytes, Any] | None = None
    ) -> bool:
        """
        Take a node held by another agent's session over, in one
        transaction, if we are its primary and it is another agent's (not
        our own predecessor's, and not one taken from us in this view).
        `read` is what `read(node)` found, if the writer asked already.
        Return whether the write is done (taken over, or to be tried again
        at once: `node.dirty`).
        """
        zk = self._zk
        if read is None:
            read = await self.read(node)
            if read is None:
                node.dirty = True
                return True
        raw, stat = read
        if ours(stat, zk.session_id):
            return False
        if node.standing_in:
            # In place of an absent primary, only where its node is
            # missing: one there is a live session's of the new ZooKeeper,
            # the absent member's most likely (`sentinel.standins`).
            return False
        previous = previous_verdict(raw)
        if previous is None:
            return False
        if previous["agent"] == self._agent_id and not self._nodes.agent.owned:
            # Written by this agent, in another session: our predecessor's
            # (a process killed before its session ended), which goes with
            # that session. But while our session holds our agent node, a
            # predecessor's session is over (its nodes went with it): the
            # holder is another member, on whose node a write of ours
            # landed (a set at the version our own node had, after it was
            # taken over and made again at version 0). Waiting for it would
            # wait for good.
            return False
        if not self._life.running:
            # Stopping: no takeover starts, the stop would hand it back.
            return True
        now = self._reactor.seconds()
        if node.lost:
            # Taken from us while we thought we were its primary: the taker
            # may see a newer membership than ours. Let it be for a while:
            # within it, the group's views agree again (ours changes, or
            # the taker's does and it hands the node back to us).
            node.lost = False
            node.yielded = now + YIELD_SECONDS
        if now < node.yielded:
            return False
        self._adopt(node, previous)
        data = node.data() or encode({**previous, "agent": self._agent_id})
        # The member that lists the instance moves in the same transaction,
        # unless the node was taken from us lately: while two agents' views
        # differ, each takes it back in turn, and which member stays is for
        # the holder's rule (`Members.held_elsewhere`), which a member made
        # at each take-back outran (the endpoint listed twice for as long).
        along = None
        listed = previous_presence(previous)[0]
        if self.members is not None and node.yielded == 0.0:
            along = await self.members.along(node, stat.ephemeralOwner, listed)
        read_at = node.read_at
        node.read_at = None
        if (
            read_at is None or self._reactor.seconds() - read_at > FRESH_READ
        ) and not await self._still_as_read(node, stat, along):
            return self._read_again(node)
        try:
            if along is not None:
                try:
                    member_path = await self._queue.counted(
                        "create",
                        zk.replace_with_member(
                            node.path, stat.version, data, along.move
                        ),
                    )
                except MemberRefused:
                    # The member was written or went since it was read:
                    # the node goes alone, at once, and its member after it.
                    assert self.members is not None
                    self.members.not_moved_along(along)
                    along = None
            if along is None:
                await self._queue.counted(
                    "create", zk.replace(node.path, stat.version, data)
                )
        except (BadVersionError, NoNodeError) as e:
            # Written meanwhile (or since this agent last read it): read it
            # again, at once. Gone (its holder's session ended: a crash):
            # made anew at once, with no read first.
            if along is not None and self.members is not None:
                self.members.not_moved_along(along)
            node.held_before = isinstance(e, BadVersionError)
            return self._read_again(node)
        except Exception:
            # No answer (a timeout, a lost connection): applied, maybe.
            if along is not None and self.members is not None:
                self.members.not_moved_along(along, unanswered=True)
            raise
        node.owned = True
        node.version = 0
        made(node)
        wrote(node, 0, data)
        node.taken_from = stat.ephemeralOwner
        node.taken_at = self._reactor.seconds()
        node.taken_from_agent = previous["agent"]
        node.taken_from_session = stat.ephemeralOwner
        node.taken_listed_by = printable(previous["agent"], 64) if listed else None
        self.takeovers += 1
        if along is not None and self.members is not None:
            self.members.moved_along(node, along, member_path)
        log.info(
            "took {path} over from agent {agent} (session {session})",
            path=node.path,
            agent=printable(previous["agent"], 64),  # Node data: anyone's.
            session=f"{stat.ephemeralOwner:#x}",
        )
        return True

    async def _still_as_read(
        self, node: Node, stat: Any, along: MemberAlong | None
    ) -> bool:
        """
        Whether `node`, read as this agent kept it as an observer, or read
        more than `FRESH_READ` ago (the look for the member to move along
        took that long: seconds at a loaded start), is still the node
        read: the same session's, at the same version, asked right before
        the transaction. Else it is read again at once (`node.dirty`;
        made anew if gone), and the member to move along stays.

        The transaction's delete goes by the version read alone, and
        versions start again at 0 on each new node: one made since by
        another member's takeover (its view of the group differs from
        ours for a settle time, at a start-up or a join) has the version
        read, and the delete removed it as the node read. The taker's
        sets then landed on our node, its discovery member was listed
        beside ours (no member of the session read to replace) for up to
        `MEMBER_HANDOFF_LIMIT`, and ours was named as taken from the
        member read (`benchmarks/groupoverwrites.py`, 3 agents at 1,000
        instances: ZooKeeper's log showed such a delete at a loaded
        start). A window of one round trip is left, from this question's
        answer to the transaction's arrival: ZooKeeper cannot close it,
        since a transaction's ``check`` compares versions alone, and no
        version, nor anything else a transaction can check, tells one
        node from the next. A node this agent just read is as new
        as that already, and is not asked about again.
        """
        try:
            now = await self._zk.exists(node.path, ahead=True)
        except Exception:
            if along is not None and self.members is not None:
                self.members.not_moved_along(along)
            raise
        if (
            now is not None
            and now.ephemeralOwner == stat.ephemeralOwner
            and now.version == stat.version
        ):
            return True
        if along is not None and self.members is not None:
            self.members.not_moved_along(along)
        self.read_again += 1
        node.held_before = now is not None
        return False

    def _read_again(self, node: Node) -> bool:
        """
        `node` was found changed since the reading its takeover went by
        (`node.held_before`), or gone: read again, or made anew, at once
        (`node.dirty`; True, as `take_over` returns). But a second change
        since a reading within `RECHECK_MIN` leaves it to `Holders`
        (False: held elsewhere), as any holder that keeps writing: one
        question a `RECHECK_MIN` at most. Before, a client that rewrote
        its node each time the primary read it (in an agent's name) had
        it read and sent a transaction every round trip, for as long as
        it went on (166 transactions in 0.5 s at a round trip of 1 ms).
        """
        if node.held_before:
            now = self._reactor.seconds()
            repeated = now - node.changed_since_read_at < RECHECK_MIN
            node.changed_since_read_at = now
            if repeated:
                return False
        node.dirty = True
        return True

    async def make_anew(self, node: Node) -> None:
        """
        Make a node whose holder's session is known to have ended
        (`Node.holder_gone`: a crash's expiry, which deleted every node of
        that session at once, before the membership heard of it), from
        what this agent last read of it as an observer, if that member
        wrote it: a create alone. The transaction a takeover sends could
        only be refused for want of the node, and at a crash at 3,000
        instances the survivors sent one per node (953), all at once,
        each a round trip before the create behind it. Found held after
        all (that session was alive, or another member made the node
        first), it is read and taken over at once, as `take_over` does.
        """
        if not self._life.running:
            return  # Stopping: no takeover starts, nor this one.
        previous = None
        known = self._verdict_node(node.name)
        if known is not None and written_by(known[0]) == node.held_by:
            previous = previous_verdict(known[0])
        if previous is not None:
            self._adopt(node, previous)
        data = node.data()
        if data is None and previous is not None:
            data = encode(carried_verdict(previous, self._agent_id))
        if data is None:
            return  # Nothing to say yet: written at the first check.
        try:
            await self._queue.counted(
                "create", self._zk.create(node.path, data, ephemeral=True)
            )
        except NodeExistsError:
            node.held_before = True
            node.dirty = True
            return
        node.owned = True
        node.version = 0
        made(node)
        node.made_here()
        wrote(node, 0, data)
        self.made_anew += 1

    def stood_in(self, node: Node) -> None:
        """
        This agent made `node` where it was missing, in place of its
        primary (`Node.standing_in`: a cover of a listed primary slow to
        write, `sentinel.covers`, or a stand-in for an absent one): the
        discovery member the node named before it went, if a live session
        still holds it (the primary, alive, whose node another client
        deleted), is replaced by ours in one transaction
        (`Members.write`, `Discovery.take_named`), as a takeover replaces
        it. Made beside it, the endpoint was listed twice until the
        primary wrote again (11 of 11 in the fakes). One gone with its
        session (the primary's session ended: the case covers are for)
        costs one ``get`` more, and ours is made.
        """
        if self.members is None or node.taken_member is not None:
            return
        node.taken_member = self._named_before_missing(node.name)

    def _adopt(self, node: Node, previous: dict[str, Any]) -> None:
        """What `node` said (`previous`) is ours now, as its new primary."""
        # Its since stays if our document says the same status
        # (`Node.kept`), so it is made again.
        node.previous = previous
        # The member it names lists the instance until ours replaces it,
        # also where the node is made anew (`Members.write`).
        node.taken_member = said_member(previous)
        node.kept = said_since(previous)
        node.said_checked_at = said_checked_at(previous)
        # Before our document is built: the status our checks go on from
        # is what the node said (a takeover is no news of the instance).
        self._inherit(node.name, previous)

    def check_still_ours(self, node: Node) -> None:
        """
        Whether a node we hold as primary still is ours (watched again): a
        takeover by another agent is noticed at once, not at our next write.

        Only a node another member could take over now is watched
        (`contested`: another member knows the instance, and the membership
        changed lately, `sentinel.group`), and only once until the watch
        fires: our own writes fire it too, and an ``exists`` after each
        write tripled the requests of a refresh (measured: 219 against 122
        µs of CPU per check at 1,000 instances).
        """
        key = (_STILL_OURS, node)
        if node.watching or not self._contested(node.name):
            if not node.watching:
                self.rearming.forget(key)
            return
        node.watching = True
        zk = self._zk
        self.rearming.asking(key)

        def failed(failure: Failure) -> None:
            # Not armed: asked again on a timer while we hold it.
            node.watching = False
            self._retry(failure, key, node, self.check_still_ours)

        def answered(stat: Any) -> None:
            self.rearming.armed(key)
            if not (node.owned and node.takeover) or node.writing:
                return
            if not ours(stat, zk.session_id):
                node.owned = False
                node.lost = True
                self._queue.mark(node)
            elif stat.version != node.version:
                # Written by another agent that still took itself for the
                # primary (a set at a version that happened to match: a
                # node taken over starts again at version 0): ours again.
                self._queue.mark(node)

        # In the background (`sentinel.zk`): one per node at each view change.
        d = zk.exists(node.path, watch=node.watcher, background=True)
        d.addCallbacks(answered, failed)
        d.addErrback(lambda f: log.failure("checking {path} failed", f, path=node.path))

    def view_changed(self) -> None:
        """
        The group's view changed: a node we let another primary have is
        asked about again (we may be its primary in this view).
        """
        for node in self._nodes.instances.values():
            if node.takeover and node.holding is not None:
                node.yielded = 0.0
                self._holders.recheck_soon(node)
        self.watch_contested()

    def watch_contested(self) -> None:
        """Watch each node we hold as primary that another may take over now."""
        for node in self._nodes.instances.values():
            if node.takeover and node.owned and not node.removed:
                self.check_still_ours(node)

    # The old primary's end

    def hand_off(self, node: Node, to: str | None) -> None:
        """
        `node` moved to another primary (`to`, if this agent knows which)
        that has not taken it over: this agent keeps it meanwhile (module
        docstring), watching it.
        """
        node.takeover = False
        node.cancel_recheck()
        if node.holding is not None:
            self._holders.release(node, "it moved to another agent")
        if not node.released:
            self.handoffs += 1
        if not node.released or node.handed_to != to:
            node.handed_at = self._reactor.seconds()
        node.released = True
        node.handed_to = to
        self.watch_handoff(node)

    def drop(self, name: str, node: Node) -> None:
        """`name` moved away and no other member will take its node: it goes."""
        node.takeover = False
        self._remove(name)

    async def keep(self, node: Node) -> None:
        """
        One write of a node kept for its new primary: set at the version
        this agent wrote while it is ours, never taken from another
        session, which it is let go to; made again if it is gone (with a
        session of ours that expired, say), as its primary would, but not
        for an instance no longer configured here (`Node.unconfigured`)
        while the group's view is from before this session (`view_stale`).
        """
        zk = self._zk
        counted = self._queue.counted
        if not self._keeps(node):
            return  # Let go meanwhile: another's.
        data = node.data()
        if data is None:
            return
        if node.owned:
            try:
                stat = await counted("set", zk.set(node.path, data, node.version))
            except (BadVersionError, NoNodeError):
                # Taken over (a delete and a create at once), or gone.
                node.owned = False
            else:
                if ours(stat, zk.session_id):
                    node.version = stat.version
                    return
                # Applied, but to the taker's new node (its versions begun
                # again at 0 had reached ours), as the writer's own sets
                # check (`sentinel.writer`): taken over, let go. Taken
                # for a success, it was set again at each change until
                # the guard heard of the deletion, each one a late set
                # the taker counted (`benchmarks/groupoverwrites.py`).
                node.owned = False
                self._let_go(node)
                return
        stat = await zk.exists(node.path)
        if ours(stat, zk.session_id):
            # Ours still (after a reconnection): written again at once.
            node.owned = True
            node.version = stat.version
            node.dirty = True
        elif stat is not None:
            self._let_go(node)
        elif node.unconfigured and self.view_stale():
            # Gone (a ZooKeeper wiped, a session of ours expired) while
            # kept for a member that, in a view from before, knows the
            # instance a reload removed here: made again now, the removal
            # came back for as long as the others' catalogs took to be
            # read. The view applied next keeps it (made then) or drops it.
            log.info(
                "{path} is gone, and its instance no longer configured here:"
                " not made again before the group's view is current",
                path=node.path,
            )
        else:
            try:
                await counted("create", zk.create(node.path, data, ephemeral=True))
            except NodeExistsError:
                # Made first by its new primary, whose it is.
                self._let_go(node)
                return
            node.owned = True
            node.version = 0
            made(node)
            node.made_here()

    def watch_handoff(self, node: Node) -> None:
        """
        Watch a node kept for its new primary: let go once another session
        holds it, made again if it is gone. A failed call is made again
        on a timer while the node is kept (`sentinel.rearming`).
        """
        key = (_HANDOFF, node)
        if not self._keeps(node):
            self.rearming.forget(key)
            return
        self.rearming.asking(key)

        def answered(stat: Any) -> None:
            self.rearming.armed(key)
            self._handoff_seen(stat, node)

        d = self._zk.exists(node.path, watch=node.watcher)
        d.addCallbacks(answered, self._retry, errbackArgs=(key, node))
        d.addErrback(lambda f: log.failure("watching {path} failed", f, path=node.path))

    def _retry(
        self,
        failure: Failure,
        key: tuple[str, Node],
        node: Node,
        again: Callable[[Node], None] | None = None,
    ) -> None:
        """
        The ``exists`` arming a watch of `node` for `key` failed: made
        again later (`again`, by default `watch_handoff`), while running
        and the watch is still wanted.
        """
        if self._acting(key):
            ask = self.watch_handoff if again is None else again
            self.rearming.failed(
                key, node.path, failure, partial(self._again, ask, key)
            )
        else:
            self.rearming.forget(key)

    def _again(self, ask: Callable[[Node], None], key: tuple[str, Node]) -> None:
        """A failed call's retry is due: made, if its watch is still wanted."""
        if self._acting(key):
            ask(key[1])
        else:
            self.rearming.forget(key)

    def _acting(self, key: tuple[str, Node]) -> bool:
        """Whether the watch `key` is wanted, running and not halted."""
        life = self._life
        return bool(life.running) and life.halted is None and self._still_wanted(key)

    def handoff_watched(self, node: Node, event: WatchedEvent) -> None:
        """
        A watch on a node kept for its new primary fired: changed (by our
        own write, most often), taken over (a delete and a create at
        once), or gone. Asked again, and watched again.
        """
        if self._keeps(node) and event.type != EventType.NONE:
            self.watch_handoff(node)

    def taken_over(self, nodes: list[Node]) -> Deferred[None]:
        """Fires once none of `nodes` is ours (taken over, or gone)."""
        left = set(nodes)
        zk = self._zk
        rearming = self.rearming

        def given_up(_: Deferred[None]) -> None:
            # The stop waits no more: no call is made again.
            for node in left:
                rearming.forget((_TAKEN_OVER, node))

        done: Deferred[None] = Deferred(given_up)

        def ask(node: Node) -> None:
            key = (_TAKEN_OVER, node)
            rearming.asking(key)
            d = zk.exists(node.path, watch=partial(fired, node))
            d.addCallbacks(answered, unasked, (node,), errbackArgs=(key, node))
            d.addErrback(
                lambda f: log.failure("asking about {path} failed", f, path=node.path)
            )

        def unasked(failure: Failure, key: tuple[str, Node], node: Node) -> None:
            # Made again later, until the stop's wait ends: a failed call
            # kept it waiting for a node already taken over.
            if node in left and not done.called:
                rearming.failed(key, node.path, failure, partial(ask, node))

        def fired(node: Node, event: WatchedEvent) -> None:
            if event.type != EventType.NONE and node in left:
                ask(node)

        def answered(stat: Any, node: Node) -> None:
            rearming.armed((_TAKEN_OVER, node))
            if not ours(stat, zk.session_id) and node in left:
                node.owned = False
                left.discard(node)
                if not left and not done.called:
                    done.callback(None)

        for node in nodes:
            ask(node)
        return done

    def _keeps(self, node: Node) -> bool:
        """
        Whether `node` is kept for its new primary: moved away, and not
        let go. A node let go is forgotten, but its watch stays armed and a
        write of it may be queued: answered as a kept one, it made the node
        again once its taker's session ended, with what it said when this
        agent last had it, a takeover ago.
        """
        return node.released and self._nodes.instances.get(node.name) is node

    def _handoff_seen(self, stat: Any, node: Node) -> None:
        if not self._keeps(node) or ours(stat, self._zk.session_id):
            return
        if stat is None:
            self._queue.mark(node)
        else:
            # Another's (now, or ever): nothing to keep.
            self._let_go(node)

    def _let_go(self, node: Node) -> None:
        """
        A node kept for its new primary is another's now: forgotten,
        deleting it not; its member waits; the instance's roles follow
        the group's view again.
        """
        name = node.name
        if not self._keeps(node):
            return
        node.cancel_recheck()
        self.rearming.forget((_HANDOFF, node))
        del self._nodes.instances[name]
        member = self._nodes.members.get(name)
        if member is not None:
            self._release_member(name, member, node.path)
        self._handed_over(name)

    def _release_member(self, name: str, node: Node, node_path: str) -> None:
        """
        The instance's new primary takes its member over too, in one
        transaction, once it holds the instance node: until then the
        member stays, unwritten, watched, `MEMBER_HANDOFF_LIMIT` at most,
        then goes (deleted if still ours). Deleting it at once, or before
        the new primary's look found it, left the endpoint missing until
        the new primary made its own. It goes sooner once nothing is left
        to wait for (`Discovery.outlived`): the instance's node gone, or a
        member like it made by another session beside it. Before, a
        reload renaming an instance, applied by the group's agents a few
        tenths of a second apart, listed its endpoint twice, or kept the
        old name's member, for the whole limit (30 s). The node gone counts
        only once this agent observes the instance no more: while it does,
        its primary is listed and the node is made again (another client
        deleted it under a primary that cannot write, and a cover makes
        it, `sentinel.covers`), and the member lists the endpoint until a
        member made with the node replaces it (`Discovery.take_live`).
        Let go, the endpoint was listed by none until the cover's member
        was made (7 of 17 for 2.5 s with real agents,
        `benchmarks/coverdup.py --settle 0`). The node saying the instance
        down or not ready ends the wait at once (`down_counts`): its new
        primary makes no member then, and the kept one listed a dead
        endpoint for the whole limit (`benchmarks/keptdown.py`).
        """
        member = node.member
        assert member is not None
        node.released = True

        def done(_: object = None) -> None:
            if node.released and self._nodes.members.get(name) is node:
                node.cancel_recheck()
                del self._nodes.members[name]
                self._queue.retire(node)

        def fired(event: WatchedEvent) -> None:
            if event.type != EventType.NONE:
                done()

        if member.path is None:
            done()
            return
        node.recheck = self._reactor.callLater(MEMBER_HANDOFF_LIMIT, done)
        d = self._zk.exists(member.path, watch=fired)
        d.addCallback(lambda stat: None if ours(stat, self._zk.session_id) else done())
        d.addErrback(lambda _: None)
        if self._discovery is not None and self._nodes.members.get(name) is node:
            # Last: the wait may end at once (the node read says down),
            # and the member with it.
            outlived = self._discovery.outlived(
                member,
                node_path,
                MEMBER_HANDOFF_LIMIT,
                lambda: name not in self._nodes.opinions,
                down_counts=True,
            )
            outlived.addCallback(lambda gone: done() if gone else None)
