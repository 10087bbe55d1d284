"""
Discovery members (DESIGN.md section 5, "Discovery nodes"): while an
instance is discoverable (`documents.discoverable`: up and ready), one
ephemeral sequential node under ``{discovery_root}/{service}/``, in the
serverset or nerve form that Finagle, Prometheus' ``serverset_sd_configs``
and ``nerve_sd_configs`` and synapse read as they are; absent otherwise.
Several instances may share a service.

ZooKeeper names a sequential node as it creates it, so a create cannot be
repeated blindly: one that failed (a connection loss, a timeout) may have
succeeded, and a second member would be an endpoint listed twice. So a
member's path is remembered while the session lives, and otherwise found
by looking: after such a failure, and in a process that reattached to its
predecessor's session (`sweep`), the members of the parent are read and
ours recognised by their ephemeral owner and what they say they are
(`documents.identity_of`). A new session holds no member, so nothing is
looked for then. The publisher schedules the writes (coalesced, retried,
resynced like every node); this module does them.

A member another session holds for the same instance is replaced, not
joined: a create then deletes it in the same transaction (`Member.replaces`),
so readers find the endpoint neither twice nor missing. So it is for the
member our previous client's session holds (a client replaced while that
session lives on), and for a group's previous primary's member, found by
looking at the parent for that agent's session (`take_from`). The member
replaced is the node of that name that session holds, no other: a
ZooKeeper wiped and started again names members from 0 again, so the name
our old session's member had is, after a wipe, another agent's (a group's
new primary's), and replacing or deleting it by its name alone deleted
that agent's member, which made it again beside ours.

Looking costs a ``get_children`` and a ``get`` per child of the parent
that no member of ours holds and that is named as one (a prefix, then
ZooKeeper's counter), `LOOK_READS` at a time (one at a time, about 1 ms
each: 100,000 nodes of other names that anyone may add there held a
handover's look 53 s, past `takeover.MEMBER_HANDOFF_LIMIT`, and
endpoints went missing): once per parent after a reattach, and
for handovers, one look per parent and previous primary serving every
member handed over within `LOOK_REUSE`, each told once it is done.
After failed creates, one look at a time per parent and session serves
every member waiting for it (a leader's stall failed hundreds at once,
and a look each, with a ``get`` of every child, took minutes and a read
storm). Members wait for either look outside the write slots (`Looking`),
not to hold one for the look's whole length (seconds at thousands of
members), and each look holds one listing of the parent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, cast

from kazoo.exceptions import (
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NoNodeError,
)
from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from sentinel.config import RedisInstance
from sentinel.documents import (
    MemberIdentity,
    identity_of,
    member_identity,
    member_prefix,
)
from sentinel.handednode import HandedNodes
from sentinel.lostanswers import applied_stat, made, remembered_set
from sentinel.ownership import ours
from sentinel.restarts import Stats, ask
from sentinel.sequential import creation_order, split_sequential
from sentinel.zk import MemberMove, ZooKeeper

# Seconds a look for another session's members (`Discovery.take_from`)
# serves the members handed over after it: they come in waves, a look each
# (a ``get`` per member, 6-9 s at 3,000), and the last waves' members were
# replaced some 50 s after the handover, after their previous primary had
# given up waiting (`takeover.MEMBER_HANDOFF_LIMIT`) and deleted them.
LOOK_REUSE = 30.0

# Seconds between looks at a parent where members handed over with their
# instance's node wait for the new primary to replace them (`outlived`): a
# wait that can end sooner than `takeover.MEMBER_HANDOFF_LIMIT` ends within
# this. Each look is one listing of the parent, an ``exists`` per member
# waiting there and a ``get`` of each child of their form (nerve: of their
# name) it has not seen yet, whatever the number of members waiting.
HANDED_OVER_CHECK = 3.0

# Reads a look has in flight at once: one at a time, a look at a service
# of 300 members was 300 round trips in a row, each the slower on a
# loaded machine, while the previous primary waited for it to stop
# (`stopping.LEAVE_HANDOFF_WAIT`); a bound, for anyone may add nodes
# named as members by the thousand.
LOOK_READS = 64

# Members a new primary reads, at most, to find the previous primary's
# member by its prefix (`Discovery._take_successor`): the one that
# replaced the member a verdict named, gone, or the one a verdict listing
# the instance did not name (`Discovery.take_unnamed`). Nerve names a
# member after its instance (one or two there); past this (the serverset
# form's one prefix after a start-up), an unnamed one is read only if the
# look begun ahead of the takeovers is done and found it
# (`Discovery._found_by_look`); otherwise the whole service is looked
# at, after the node.
SUCCESSOR_READS = 16

# Looks begun ahead of the takeovers (`Discovery.look_ahead`) under way at
# once: a view that moves thousands of instances, each in a service of
# its own, would otherwise send a listing and a read for each at once,
# ahead of the takeovers' own calls.
LOOKS_AHEAD = 16

# Reads of a member a verdict names begun ahead of the takeovers
# (`Discovery.read_named_ahead`) kept at once, and for how many seconds
# one serves the takeover: a view change moves its instances' nodes at
# once, and a reading older than this is read again.
NAMED_AHEAD = 4096
NAMED_AHEAD_FOR = 5.0

# Counts a ZooKeeper write by its op ("create", "set", "delete").
Counted = Callable[[str, Deferred[Any]], Awaitable[Any]]


class Member:
    """One instance's member: where it goes, and what ZooKeeper holds of it."""

    __slots__ = (
        "parent",
        "prefix",
        "identity",
        "path",
        "written",
        "version",
        "unanswered",
        "search",
        "found",
        "replaces",
        "session",
        "beside_holder",
        "named",
        "replaces_version",
        "replaces_owner",
        "dropped_at",
    )

    def __init__(self, parent: str, prefix: str, identity: MemberIdentity) -> None:
        self.parent = parent
        self.prefix = prefix
        self.identity = identity
        # The member's node, while this session is known to hold it, and the
        # data last written there on this connection.
        self.path: str | None = None
        self.written: bytes | None = None
        # The node's version as we last wrote it (-1: not known): another
        # version means another client wrote it (`write`).
        self.version = -1
        # Our sets of it that ended with no answer, which ZooKeeper may
        # have applied, with a digest of its data (`sentinel.lostanswers`).
        self.unanswered: tuple[tuple[int, bytes], ...] = ()
        # A create failed and may have succeeded: look before creating.
        self.search = False
        # Members of ours found by a sweep, for this one to keep (the
        # first) or delete.
        self.found: list[str] = []
        # The member another session of ours holds for this instance (our
        # previous client's, which lives until that session expires): ours
        # replaces it in one transaction, never listed beside it.
        self.replaces: str | None = None
        # The session that held `path` when we created or found it.
        self.session: int | None = None
        # Another session holds the instance's node and a member like this
        # one (`Members.held_elsewhere`): this one goes at its next write.
        self.beside_holder = False
        # The member a verdict named, asked about once (`take_named`), and
        # the version it had then if ours replaces it: its transaction
        # goes without asking again.
        self.named: str | None = None
        self.replaces_version: int | None = None
        # The session holding `replaces` when it was chosen: a node of that
        # name another session holds is not it (after a wipe, ZooKeeper
        # names members from 0 again), and is neither replaced nor deleted.
        self.replaces_owner: int | None = None
        # When the member this session held was found gone
        # (`Discovery._gone`), until one is held again or none is meant: a
        # member missing for readers is timed from then in /healthz
        # (`sentinel.zkreport`), not from the first answer that asks.
        self.dropped_at: float | None = None

    @classmethod
    def leftover(cls, found: list[str]) -> Member:
        """
        No instance's member: what a sweep found for an instance removed
        before its first check, to delete.
        """
        member = cls("", "", ("", "", 0, None))
        member.found = list(found)
        return member

    def reconnected(self, same_session: bool) -> None:
        """
        After a reconnection: rewrite; on a new session, nothing is held,
        and the member the old session held is to be replaced.
        """
        self.written = None
        self.version = -1
        if not same_session:
            if self.path is not None:
                self.replaces, self.replaces_owner = self.path, self.session
            self.path = None
            self.search = False
            self.found = []


class Looking(Exception):
    """
    The member waits for a look at its parent (`Discovery.write` is tried
    again after it): for the member its failed create may have made, or
    for the previous primary's, which it replaces (`Discovery.take_from`).
    """

    def __init__(
        self, parent: str, sought: str = "the member a failed create may have made"
    ) -> None:
        super().__init__(f"looking under {parent} for {sought}")
        self.parent = parent
        self.sought = sought


# A member found by a look: its path, the session holding it, what it says.
_Seen = tuple[str, int, MemberIdentity | None]


class _Search:
    """The members waiting for a look at one parent, for one session."""

    def __init__(self) -> None:
        self.waiting: dict[Member, None] = {}
        self.running = False


class _Handed:
    """A member handed over, waiting under its parent (`Discovery.outlived`)."""

    __slots__ = ("node_path", "until", "gone_counts", "done")

    def __init__(
        self,
        node_path: str,
        until: float,
        forget: Callable[[], None],
        gone_counts: Callable[[], bool],
    ) -> None:
        self.node_path = node_path
        self.until = until
        # Whether the instance's node gone ends the wait (`Discovery.outlived`),
        # asked at each look.
        self.gone_counts = gone_counts

        def cancelled(done: Deferred[bool]) -> None:
            # No longer waited for: forgotten, and it fires False.
            forget()
            done.callback(False)

        self.done: Deferred[bool] = Deferred(cancelled)


class Discovery:
    """Writes and finds the members of one form under one root."""

    def __init__(
        self,
        zk: ZooKeeper,
        form: str,
        root: str,
        counted: Counted,
        record_parent: Callable[[str], Deferred[None]],
        clock: IReactorTime,
    ) -> None:
        self.zk = zk
        self._clock = clock
        self.form = form
        self.root = root
        self._counted = counted
        self._record_parent = record_parent
        # Sets of ours found applied with their answer lost, not reported
        # (`sentinel.lostanswers`).
        self.own_sets_applied = 0
        # The paths a member holds, was given by a sweep or replaces:
        # another member on the same endpoint must not take them.
        self._claimed: set[str] = set()
        # The looks under a parent for other sessions' members
        # (`take_from`) in progress, and what to call once each is done,
        # for the members that wait for it.
        self._looking: set[str] = set()
        self._look_waiters: dict[str, list[Callable[[], None]]] = {}
        # The looks for members whose create may have succeeded, by parent
        # and session: one at a time for each.
        self._searches: dict[tuple[str, int], _Search] = {}
        # The looks done lately (`LOOK_REUSE`), for the members handed over
        # after them: when each began (its listing), what it found (each
        # member, whose session holds it, and what it says it is), and
        # which of those are replaced by now.
        self._looked: dict[str, tuple[float, list[_Seen], set[str]]] = {}
        # The members handed over with their instance's node, by parent,
        # each waiting for the new primary to replace it (`outlived`); the
        # next look at each such parent; and what each child of it seen
        # there says it is, and whose it is (a ``get`` each, once).
        self._handed: dict[str, dict[Member, _Handed]] = {}
        self._handed_looks: dict[str, IDelayedCall] = {}
        self._seen: dict[str, dict[str, tuple[int, MemberIdentity | None]]] = {}
        # The reads of named members begun ahead of their takeovers
        # (`read_named_ahead`): when each began, and its answer or failure.
        self._named_ahead: dict[str, tuple[float, Deferred[Any]]] = {}
        # The listings under way for `_take_successor`, by parent, and the
        # Deferreds of the members that wait for each's answer.
        self._listings: dict[str, list[Deferred[list[str]]]] = {}
        # The nodes those members were handed over with, watched while they
        # wait if their saying down ends the wait (`sentinel.handednode`).
        self.handed_nodes = HandedNodes(zk, clock)

    def parent_of(self, instance: RedisInstance) -> str:
        """Where the instance's member goes."""
        return f"{self.root}/{instance.discovery_service}"

    def member_for(self, instance: RedisInstance) -> Member:
        """A member for `instance`, not yet written."""
        return Member(
            self.parent_of(instance),
            member_prefix(self.form, instance),
            member_identity(self.form, instance),
        )

    def moves(self, member: Member, instance: RedisInstance) -> bool:
        """Whether `instance` (changed by a reload) needs another member."""
        return (member.parent, member.prefix, member.identity) != (
            self.parent_of(instance),
            member_prefix(self.form, instance),
            member_identity(self.form, instance),
        )

    def new_session(self) -> None:
        """
        A new session holds no member: every claim is void, and no member
        is looked for (a look in progress ends with nothing to share).
        """
        self._claimed.clear()
        self._named_ahead.clear()
        self._searches = {k: s for k, s in self._searches.items() if s.running}
        self._forget_old_looks()
        for parent in list(self._handed):
            self._stop_waiting(parent)

    async def write(
        self,
        member: Member,
        data: bytes | None,
        replaced: Callable[[], Awaitable[bool]] | None = None,
    ) -> str | None:
        """
        Make ZooKeeper hold `data` as the member, or no member if None.
        Returns what another client had done to the member we held
        (``"deleted"``, ``"overwritten"``), now repaired, or None.

        A member unchanged since we wrote it is asked about (a read, not a
        write: a refresh would otherwise cost ZooKeeper a write per member
        for nothing): one deleted or written by another client is made
        again, as an instance node is at its refresh.

        @param replaced: asked of a member we held and find deleted, before
            it is made again: True if another agent replaced it with its
            own (`Members.write`); it is then forgotten, not made beside
            that one. It may choose the member ours replaces as it is
            made again (`Member.replaces`).
        @raise Looking: a create of the member may have succeeded, and it
            waits for a look at its parent.
        """
        self._forget_old_looks()
        if member.search:
            # Looked for outside the write slots, with the other members
            # waiting: this write ends (a retry comes), not to hold a slot
            # for the look's whole length.
            self._search(member)
            if member.search:  # Not served by a look that ended at once.
                raise Looking(member.parent)
        session = self.zk.session_id
        await self._settle_found(member, keep=data is not None)
        if data is None:
            if member.path is not None:
                await self._delete_if_ours(member.path)
            self._drop(member)
            member.dropped_at = None
            if member.replaces is not None:
                await self._delete_if_there(member.replaces, member.replaces_owner)
                self._claimed.discard(member.replaces)
                member.replaces = None
            return None
        damage = None
        if member.path is not None:
            # With a set of ours unanswered, what it holds is not known to
            # be what we wrote last: set, not only looked at.
            if data == member.written and not member.unanswered:
                damage = await self._damage(member)
                if damage is None:
                    return None
            if damage != "deleted":
                known = member.written is not None
                try:
                    await self._set(member, data)
                    return damage
                except BadVersionError:
                    # Written since we last did: by a set of ours whose
                    # answer was lost, or by another client.
                    applied = None
                    if member.unanswered:
                        applied = await applied_stat(self.zk, member.path, member)
                    if applied is None:
                        member.version = -1
                    else:
                        self.own_sets_applied += 1
                        member.version = applied.version
                    await self._set(member, data)
                    return damage if applied is not None else "overwritten"
                except NoNodeError:
                    # Gone: deleted by another client, if we knew it there.
                    damage = "deleted" if known else None
            self._same_session(session, member.session)
            if damage == "deleted":
                self._gone(member)
            else:
                self._drop(member)
            # Gone, whether or not we knew what it held (a reconnection
            # forgets that): replaced by another agent's, maybe, or to be
            # made in the place of one.
            if replaced is not None and await replaced():
                # Another agent's lists it: not missing.
                member.dropped_at = None
                return None
        self._same_session(session)
        await self._record_parent(member.parent)
        path = await self._create(member, data)
        self._hold(member, path)
        member.written, member.version = data, 0
        made(member)
        return damage

    def _same_session(self, *sessions: int | None) -> None:
        """
        A write begun on a session that has ended since (its calls queued
        while cut off are answered on the new one), or of a member held on
        another session (begun before the resync forgot it), creates
        nothing: the member went with the session, not by another
        client's hand, and the write queued by the resync
        (`Member.reconnected`) decides anew, in a group not before the
        instance's node is ours. Made on the new session, it listed the
        endpoint twice beside the one the instance's primary made
        meanwhile.
        """
        if any(session != self.zk.session_id for session in sessions):
            raise ConnectionLoss("the ZooKeeper session changed")

    async def _damage(self, member: Member) -> str | None:
        """What another client did to the member we hold, if anything."""
        assert member.path is not None
        zk = self.zk
        stat = await zk.exists(member.path)
        if not ours(stat, zk.session_id):
            return "deleted"
        if stat.version != member.version:
            member.version = stat.version
            return "overwritten"
        return None

    async def _set(self, member: Member, data: bytes) -> None:
        assert member.path is not None
        stat = await remembered_set(
            self.zk, self._counted, member, member.path, data, member.version
        )
        member.written, member.version = data, stat.version

    async def _create(self, member: Member, data: bytes) -> str:
        """
        Create the member: in one transaction with the deletion of the one
        it replaces (`Member.replaces`) if that one is still there, so that
        readers find the endpoint neither missing nor listed twice.
        """
        zk = self.zk
        prefix = f"{member.parent}/{member.prefix}"
        # The version read just now (`take_named`): the transaction goes
        # with no question first.
        known, member.replaces_version = member.replaces_version, None
        # Whether a refusal for want of a node was asked about again once.
        asked_again = False
        while True:
            replaced, version = member.replaces, known
            if replaced is not None and version is None:
                stat = await zk.exists(replaced)
                version = (
                    None
                    if stat is None or stat.ephemeralOwner != member.replaces_owner
                    else stat.version
                )
            if replaced is None or version is None:
                member.replaces = None
                call = zk.create(prefix, data, ephemeral=True, sequence=True)
            else:
                call = zk.replace(replaced, version, data, sequential=prefix)
            try:
                path: str = await self._counted("create", call)
                break
            except (BadVersionError, NoNodeError) as e:
                if known is None and (asked_again or not isinstance(e, NoNodeError)):
                    # The replaced member was written or deleted meanwhile:
                    # nothing was created; the retry asks again.
                    raise
                # Written or gone since it was read (its session closed
                # meanwhile), or gone since it was asked about (with its
                # service: an operator's ``deleteall``): asked again now,
                # once, not at the retry a second later while the endpoint
                # is missing; gone, ours is made with its parents.
                asked_again = asked_again or known is None
                known = None
            except (NoAuthError, NoChildrenForEphemeralsError):
                # Refused (`sentinel.refusals` names why): nothing was
                # created, so nothing is looked for; a look each retry also
                # logged its own failure in turn with the refusal's.
                raise
            except Exception:
                # It may have been created all the same: look before
                # creating, in a look that starts after this failure.
                member.search = True
                self._search_later(member)
                raise
        if replaced is not None:
            self._claimed.discard(replaced)
        member.replaces = None
        return path

    def _hold(self, member: Member, path: str) -> None:
        member.path, member.written = path, None
        member.dropped_at = None
        member.session = self.zk.session_id
        self._claimed.add(path)

    def _drop(self, member: Member) -> None:
        if member.path is not None:
            self._claimed.discard(member.path)
        member.path = member.written = None

    def _gone(self, member: Member) -> None:
        """The member we held was found gone (or another session's): dropped."""
        self._drop(member)
        member.dropped_at = self._clock.seconds()

    async def _settle_found(self, member: Member, keep: bool) -> None:
        """Keep the first member found if `keep` and none is known; delete the rest."""
        while member.found:
            path = member.found[0]
            if keep and member.path in (None, path):
                self._hold(member, path)
            elif path != member.path:
                await self._delete_if_ours(path)
                self._claimed.discard(path)
            member.found.pop(0)

    async def _delete_if_there(self, path: str, owner: int | None) -> None:
        """
        Delete a member another session of ours (`owner`) left, if it is
        still there: a node of that name another session holds is not it.
        """
        try:
            stat = await self.zk.exists(path)
            if stat is not None and stat.ephemeralOwner == owner:
                await self._counted("delete", self.zk.delete(path, stat.version))
        except NoNodeError:
            pass

    async def _delete_if_ours(self, path: str) -> None:
        zk = self.zk
        try:
            stat = await zk.exists(path)
            if ours(stat, zk.session_id):
                await self._counted("delete", zk.delete(path, stat.version))
        except NoNodeError:
            pass

    def _search_later(self, member: Member) -> None:
        """Have the member looked for by the next look to start."""
        session = self.zk.session_id
        if session is not None:
            key = (member.parent, session)
            self._searches.setdefault(key, _Search()).waiting[member] = None

    def _search(self, member: Member) -> None:
        """
        Have the member's parent looked at for it, by the next look to
        start: one at a time for each parent and session, for every member
        waiting when it starts (their creates failed before it).
        """
        session = self.zk.session_id
        if session is None:
            return  # Looked for once connected.
        key = (member.parent, session)
        search = self._searches.setdefault(key, _Search())
        search.waiting[member] = None
        if not search.running:
            search.running = True
            d = Deferred.fromCoroutine(self._look(key, search))
            d.addErrback(self._bug, member.parent)

    async def _look(self, key: tuple[str, int], search: _Search) -> None:
        """
        Look at the parent for the members waiting, until none is: each
        gets (in `found`) our unclaimed members of its identity, oldest
        first; the first of an identity gets those left over, to delete
        (two instances may share an endpoint). Memory: one listing.
        """
        parent, session = key
        try:
            while search.waiting and self.zk.session_id == session:
                # Those served meanwhile by the look before wait no more.
                serving = [m for m in search.waiting if m.search]
                search.waiting = {}
                if not serving:
                    break
                try:
                    found = await self._members_in(parent)
                except Exception:
                    # Looked for again at their next retry.
                    continue
                if self.zk.session_id == session:
                    self._share(found, [m for m in serving if m.search])
        finally:
            search.running = False
            stale = self.zk.session_id != session
            if self._searches.get(key) is search and (stale or not search.waiting):
                del self._searches[key]

    def _bug(self, failure: Failure, parent: str) -> None:
        self.zk.internal_errors.record("looking for members", parent, failure)

    def _share(
        self, found: list[tuple[str, MemberIdentity | None]], members: list[Member]
    ) -> None:
        by_identity: dict[MemberIdentity | None, list[str]] = {}
        for path, says in found:
            if path not in self._claimed:
                by_identity.setdefault(says, []).append(path)
        for member in members:
            member.search = False
            paths = by_identity.get(member.identity)
            if paths:
                member.found.append(paths.pop(0))
                self._claimed.add(member.found[-1])
        for member in members:
            leftover = by_identity.pop(member.identity, None)
            if leftover:
                member.found += leftover
                self._claimed.update(leftover)

    async def settle_replaced(self, member: Member) -> None:
        """
        Forget the member ours replaces (`Member.replaces`) if it is gone
        (its session expired): ours is then a member like any other, not
        one that may be created before its instance's node is ours.
        """
        replaced = member.replaces
        if replaced is None:
            return
        stat = await self.zk.exists(replaced)
        if stat is None or stat.ephemeralOwner != member.replaces_owner:
            self._claimed.discard(replaced)
            member.replaces = None

    async def lost(self, member: Member) -> bool:
        """
        Whether the member we hold is another session's or gone (a group's
        new primary replaced it): if so, it is forgotten, not repaired.
        """
        assert member.path is not None
        stat = await self.zk.exists(member.path)
        if ours(stat, self.zk.session_id):
            return False
        self._gone(member)
        return True

    def take_from(
        self,
        member: Member,
        session: int,
        since: float = float("-inf"),
        looked_at: Callable[[], None] = lambda: None,
    ) -> None:
        """
        The instance's node was taken over from the agent of `session` (a
        group's previous primary), at `since`: its member of the instance,
        if any, is the one ours replaces (`Member.replaces`), in one
        transaction. It is found by a look at the parent for that session,
        made outside the write slots, one at a time per parent and
        session, whose listing serves every member handed over within
        `LOOK_REUSE`; but a member it does not list, handed over after it
        began, is looked for again: that agent may have made it since. (A
        member that agent made after the look, for an instance that came
        up meanwhile, say, was taken for none, and ours listed beside it
        until that agent's session ended: 48 endpoints for up to 1 s at a
        clean stop traced, three agents sharing 300 instances.) If that
        agent holds none, even by a look begun since, ours replaces
        another session's member like it: the one handed to that agent,
        which took the node over and stopped before replacing it, and
        which the agent before it keeps until the node's holder holds
        one (`outlived`).

        @param looked_at: called once the look the member waits for is
            done, for its write to be tried again then: at the write
            queue's next retry, up to a second later, a member a new
            primary took over waited that long after its look, while the
            previous primary, stopping, waited for it to stop.
        @raise Looking: the member waits for that look (`write` is tried
            again after it).
        """
        parent = member.parent
        self._forget_old_looks()
        if parent not in self._looked and parent not in self._looking:
            self._look_at(parent)
        looked = self._looked.get(parent)
        if looked is None:  # Not served by a look that ended at once.
            self._look_waiters.setdefault(parent, []).append(looked_at)
            raise Looking(parent, "the previous primary's member")
        began, found, taken = looked
        handed: tuple[str, int] | None = None
        for path, owner, says in found:
            if says != member.identity or path in self._claimed or path in taken:
                continue
            if owner == session:
                self._replace(member, path, owner, taken)
                return
            if handed is None and owner != self.zk.session_id:
                handed = (path, owner)
        if began < since:
            # Not listed, maybe made since the look began: look again (or
            # wait for the look under way, begun since, maybe).
            del self._looked[parent]
            self.take_from(member, session, since, looked_at)
        elif handed is not None:
            # That agent made none: the member still listing the endpoint
            # is one handed to it that it had not replaced yet (it took the
            # node over, then stopped before its member was made), kept by
            # the agent before it until its holder holds one
            # (`outlived`). Ours replaces that one: made beside it, the
            # endpoint was listed twice until that agent's next look (up
            # to `HANDED_OVER_CHECK`), about 500 endpoints at a leave
            # after a loaded start-up, three agents sharing 3,000.
            self._replace(member, *handed, taken)

    async def take_named(self, member: Member, path: str, session: int | None) -> bool:
        """
        The instance's node was taken over from the agent of `session`,
        or made anew once that agent's session had ended (None), and the
        verdict it said named the discovery member that lists the
        instance (`path`, `documents.said_member`). If that member is
        there, under the member's parent and with its prefix, lists the
        same endpoint and is held by that agent's session (with None, by
        any other than ours: that agent's went with its session, and a
        member still there is one handed to it that it had not replaced,
        which the agent before it keeps for it), ours replaces it
        (`Member.replaces`) in one transaction, with no look at the
        service. Returns whether it does; if not, `take_from` looks, as
        without a name (or, made anew, ours is made). One ``get``, asked
        once, with the writes: a look reads every member of the service,
        and at a service of 1,000 under a load of 12 to 28 it ended after
        the previous primary, stopping, had closed its session, and the
        endpoints it listed went missing for the 8.5 s watched; and a
        node made anew after that close brought no previous primary to
        look for, and ours was made beside the member handed to the one
        that left (417 to 490 of 3,000 endpoints twice, up to 7.2 s).
        """
        parent, _, child = path.rpartition("/")
        if (
            member.named == path
            or parent != member.parent
            or not child.startswith(member.prefix)
            or not _sequential(child)
            or path in self._claimed
        ):
            return False
        try:
            data, stat = await self._named_read(path)
        except NoNodeError:
            member.named = path
            if session is None:
                return False
            return await self._take_successor(member, path, session)
        except NoAuthError:
            member.named = path
            return False
        member.named = path
        owner = stat.ephemeralOwner
        if (
            (
                owner != session
                if session is not None
                else owner in (0, self.zk.session_id)
            )
            or identity_of(data) != member.identity
            or path in self._claimed  # Taken by another member meanwhile.
        ):
            return False
        looked = self._looked.get(parent)
        self._replace(member, path, owner, set() if looked is None else looked[2])
        member.replaces_version = stat.version
        return True

    def read_named_ahead(self, path: str) -> None:
        """
        Read the member a verdict names as this agent begins to take the
        instance's node over, for `take_named` (one ``get``, bounded by
        the bridge's timeout): the takeover's transaction, which replaces
        it, then waits for no read of its own. (Read in the takeover, the
        nodes moved at a leave at 1,000 instances were taken p50 0.75 to
        2.05 s after the signal, against 0.27 to 2.46 s before.)
        """
        now = self._clock.seconds()
        if len(self._named_ahead) >= NAMED_AHEAD:
            # Past serving: those whose takeover never asked (it went
            # without a member, or another agent took the node first).
            self._named_ahead = {
                p: kept
                for p, kept in self._named_ahead.items()
                if now - kept[0] <= NAMED_AHEAD_FOR
            }
        if path in self._named_ahead or len(self._named_ahead) >= NAMED_AHEAD:
            return
        read: Deferred[Any] = self.zk.get(path, ahead=True)
        # Kept as a value either way: a read nobody takes logs nothing.
        read.addCallbacks(lambda answer: (answer, None), lambda f: (None, f))
        self._named_ahead[path] = (now, read)

    async def _named_read(self, path: str) -> tuple[bytes, Any]:
        """The named member, as read ahead lately, or read now."""
        began, read = self._named_ahead.pop(path, (0.0, None))
        if read is None or self._clock.seconds() - began > NAMED_AHEAD_FOR:
            found: tuple[bytes, Any] = await self.zk.get(path, ahead=True)
            return found
        answer, failure = await read
        if failure is not None:
            failure.raiseException()
        return cast(tuple[bytes, Any], answer)

    def move(self, member: Member, data: bytes) -> MemberMove | None:
        """
        The replacement `take_named` chose, for the transaction that takes
        the instance's node over (`sentinel.takeover`), or None if none
        was chosen with the version read.
        """
        if member.replaces is None or member.replaces_version is None:
            return None
        return MemberMove(
            member.replaces,
            member.replaces_version,
            f"{member.parent}/{member.prefix}",
            data,
        )

    def moved(self, member: Member, path: str, data: bytes) -> None:
        """The node's transaction made our member at `path`, holding `data`."""
        if member.replaces is not None:
            self._claimed.discard(member.replaces)
        member.replaces = member.replaces_version = None
        self._hold(member, path)
        member.written, member.version = data, 0
        made(member)

    def not_moved(self, member: Member) -> None:
        """
        The node's transaction was refused: the member it was to replace
        is asked about again at the next takeover, not taken for known.
        """
        if member.replaces is not None:
            self._claimed.discard(member.replaces)
        member.replaces = member.replaces_version = member.named = None

    async def take_unnamed(self, member: Member, session: int) -> bool:
        """
        The instance's node is taken over from the agent of `session`,
        whose verdict had the instance listed but named no member: that
        agent took the node over from one whose verdict named none (written
        before its member was made, at a group's start), made its own
        member after the node, and left before its rewrite of the node
        naming it went. Ours replaces that agent's member, found among the
        children of its prefix (`_take_successor`), in the node's own
        transaction. Before, with no name, the node went alone and the
        member after it, once a look at the service found it: at a leave
        a second after such a move (three agents, ``replicas = 2``, nerve),
        the member came 12 zxids after its node, and the leaver, which
        waits for its nodes only, could close its session first (the
        endpoint then missing until ours was made). Returns whether it
        does; if not, `take_from` looks, after the node, as before.
        """
        return await self._take_successor(member, None, session)

    async def take_live(self, member: Member, agent_nodes: Collection[str]) -> bool:
        """
        A member made where its instance's node was missing (a cover of a
        live primary slow to write, `sentinel.covers`, or a stand-in),
        whose agent knows of no member the node named that is there to
        replace: it had not read the node since the primary's member was
        made (a group younger than a refresh: its first reading came after
        the node went, or named none, or an older member). Ours replaces
        the member like it that the session of one of `agent_nodes` (the
        instance's other observers') holds, found among the children of
        its prefix as `_take_successor` finds one, in one transaction:
        made beside it, the endpoint was listed twice until the primary
        took its node back (10 to 17 of 17 covers with real agents,
        `benchmarks/coverdup.py --settle 0`). A member of the endpoint
        another live session holds (a tool that registers it too, an
        agent of another group) is left: replaced, it was deleted for
        good. None found (the primary's member went with its session),
        ours is made. An ``exists`` of each agent node (one with
        ``replicas = 2``), one listing and a ``get`` or two (nerve, or a
        serverset service each), at a cover only.
        """
        stats: Stats = {}
        await ask(self.zk, agent_nodes, stats, ahead=True)
        sessions = frozenset(
            stat.ephemeralOwner
            for stat in stats.values()
            if stat is not None and stat.ephemeralOwner
        )
        if not sessions:
            return False
        return await self._take_successor(member, None, sessions)

    async def _take_successor(
        self, member: Member, named: str | None, session: int | frozenset[int]
    ) -> bool:
        """
        The member the verdict named is gone: the agent of `session`,
        which held the instance's node, replaced it with its own, in one
        transaction (so a member of the same prefix, made since: a later
        counter), and left before its rewrite of the node naming its own
        went (queued behind a start-up's writes). Ours replaces that one,
        found among the children of its prefix made since (any, with
        `named` None: `take_unnamed`; held by any of a set of sessions but
        ours, with `session` a set: `take_live`), a ``get`` each, if there
        are `SUCCESSOR_READS` at most (nerve names a member after its
        instance: one or two); more (serverset's one prefix, after a
        start-up), and `take_from` looks at the whole service, as when no
        member can be found so. Looked for at the whole service (a
        ``get`` of each member), 31 of 310 endpoints were unlisted from the
        leaver's close until the look ended, 3.6 s, at 1,000 instances,
        load 9--10. One listing of the parent, shared by the members that
        ask while it is under way.
        """
        parent = member.parent
        # Made since the named one (a later counter); with none named, any.
        after = None if named is None else _counter(named)
        try:
            children = await self._listing(parent)
        except NoNodeError:
            return False
        made_since = [
            f"{parent}/{child}"
            for child in children
            if (parsed := split_sequential(child)) is not None
            and parsed[0] == member.prefix
            and (after is None or creation_order(parsed[1]) > creation_order(after))
            and f"{parent}/{child}" not in self._claimed
        ]
        if named is None and len(made_since) > SUCCESSOR_READS:
            made_since = self._found_by_look(parent, session, member, made_since)
        if not made_since or len(made_since) > SUCCESSOR_READS:
            return False
        for path, owner, says, version in await self._read(made_since, ahead=True):
            if (
                self._held_by(owner, session)
                and says == member.identity
                and path not in self._claimed
            ):
                looked = self._looked.get(parent)
                taken = set() if looked is None else looked[2]
                self._replace(member, path, owner, taken)
                member.replaces_version = version
                return True
        return False

    def _held_by(self, owner: int, session: int | frozenset[int]) -> bool:
        """
        Whether a member held by `owner` is `session`'s, or with a set, one
        of those sessions' other than ours (`take_live`).
        """
        if isinstance(session, frozenset):
            return owner in session and owner != self.zk.session_id
        return owner == session

    def _found_by_look(
        self,
        parent: str,
        session: int | frozenset[int],
        member: Member,
        listed: list[str],
    ) -> list[str]:
        """
        Of `listed`, those a look at `parent` that is done (the one begun
        ahead of the takeovers, `look_ahead`) found held by `session` and
        saying `member`'s endpoint: at a serverset service, whose one
        prefix holds every member, the unnamed one among thousands, read
        again (its version) to go in the node's transaction. None found
        (no look done yet, or the member made after it began): the member
        follows its node after a look, as before. Without this, past
        `SUCCESSOR_READS` it always did: listed twice, or missing, until
        that look ended.
        """
        looked = self._looked.get(parent)
        if looked is None:
            return []
        found = {
            path
            for path, owner, says in looked[1]
            if self._held_by(owner, session) and says == member.identity
        }
        return [path for path in listed if path in found]

    async def _listing(self, parent: str) -> list[str]:
        """
        The children of `parent`: one listing at a time, its answer shared
        by every member that asks while it is under way (at a leave,
        hundreds at once), each ended with it (the bridge times it out).
        """
        waiting = self._listings.get(parent)
        if waiting is not None:
            shared: Deferred[list[str]] = Deferred()
            waiting.append(shared)
            return await shared
        waiting = self._listings[parent] = []
        try:
            children: list[str] = await self.zk.get_children(parent)
        except Exception:
            failure = Failure()
            del self._listings[parent]
            for shared in waiting:
                shared.errback(failure)
            raise
        del self._listings[parent]
        for shared in waiting:
            shared.callback(children)
        return children

    def _replace(self, member: Member, path: str, owner: int, taken: set[str]) -> None:
        member.replaces, member.replaces_owner = path, owner
        self._claimed.add(path)
        taken.add(path)

    def look_ahead(self, parent: str) -> None:
        """
        A node is about to be taken over from another member, whose
        discovery member for it may be under `parent`: the look that
        `take_from` needs starts now, beside the takeover, rather than
        once the node is ours. (It began after the first takeover, and
        took 0.6 s at a service of 300 members, load 7, while the previous
        primary, stopping, waited for it.) A look under way serves; past
        `LOOKS_AHEAD` looks under way, the parent is looked at once a
        member needs it, as before.
        """
        if parent not in self._looking and len(self._looking) < LOOKS_AHEAD:
            self._look_at(parent)

    def outlived(
        self,
        member: Member,
        node_path: str,
        wait: float,
        gone_counts: bool | Callable[[], bool] = True,
        down_counts: bool = False,
    ) -> Deferred[bool]:
        """
        A member handed over with its instance's node (`sentinel.takeover`)
        waits for the new primary to replace it, `wait` seconds at most.
        Fires True as soon as it has no more reason to: the instance's
        node is gone (the instance removed by all who knew it), or the
        session holding it holds a member of the same identity too (made
        beside ours: the node moved on again before the member was found,
        the create of one of the two landed after the new primary's look,
        or one was made again on a new session), which lists the endpoint
        twice; both waited the whole limit before. Only the holder's
        member counts: two agents each taking the other for the primary
        never both let theirs go. Fires False when the wait ends otherwise (`until`,
        the member handed over again, a new session).

        @param gone_counts: False for a member whose agent makes the node
            again if it is gone (its primary, in that agent's view, whose
            node another session took: `Members.held_elsewhere`): only a
            member of the node's holder then ends the wait. A callable is
            asked at each look (`Takeovers._release_member`).
        @param down_counts: whether the node saying the instance is out of
            discovery (down, or not ready) ends the wait too, as soon as
            it says so (`sentinel.handednode`: a ``get`` with a watch now,
            another at each change of the node while it waits): its holder
            makes no member then, and nothing would replace this one.
        """
        parent = member.parent
        waiting = self._handed.setdefault(parent, {})
        previous = waiting.pop(member, None)
        if previous is not None:
            previous.done.callback(False)
        until = self._clock.seconds() + wait

        def forget() -> None:
            if waiting.get(member) is handed:
                del waiting[member]

        counts = gone_counts if callable(gone_counts) else lambda: gone_counts
        handed = waiting[member] = _Handed(node_path, until, forget, counts)
        if down_counts:

            def undiscoverable() -> None:
                forget()
                handed.done.callback(True)

            self.handed_nodes.watch(
                node_path, lambda: not handed.done.called, undiscoverable
            )
        if parent not in self._handed_looks:
            self._handed_looks[parent] = self._clock.callLater(
                HANDED_OVER_CHECK, self._look_at_handed, parent
            )
        return handed.done

    def _look_at_handed(self, parent: str) -> None:
        del self._handed_looks[parent]
        d = Deferred.fromCoroutine(self._check_handed(parent))
        d.addErrback(self._bug, parent)
        d.addBoth(lambda _: self._next_look_at_handed(parent))

    def _next_look_at_handed(self, parent: str) -> None:
        if self._handed.get(parent) and parent not in self._handed_looks:
            self._handed_looks[parent] = self._clock.callLater(
                HANDED_OVER_CHECK, self._look_at_handed, parent
            )
        elif not self._handed.get(parent):
            self._stop_waiting(parent)

    def _stop_waiting(self, parent: str) -> None:
        """No member waits under `parent` any more: forget what was seen."""
        look = self._handed_looks.pop(parent, None)
        if look is not None and look.active():
            look.cancel()
        self._seen.pop(parent, None)
        for handed in self._handed.pop(parent, {}).values():
            handed.done.callback(False)

    async def _check_handed(self, parent: str) -> None:
        """One look at `parent` for every member handed over there."""
        waiting = self._handed.get(parent, {})
        now = self._clock.seconds()
        for member, handed in list(waiting.items()):
            if now >= handed.until:
                del waiting[member]
                handed.done.callback(False)
        if not waiting:
            return
        zk = self.zk
        session = zk.session_id
        try:
            try:
                children = await zk.get_children(parent)
            except NoNodeError:
                children = []
            seen = self._seen.setdefault(parent, {})
            for gone in set(seen) - set(children):
                del seen[gone]
            for member, handed in list(waiting.items()):
                if zk.session_id != session:
                    return
                node = await zk.exists(handed.node_path)
                outlived = (node is None and handed.gone_counts()) or (
                    node is not None
                    and node.ephemeralOwner not in (0, zk.session_id)
                    and await self._held_by_holder(
                        member, node.ephemeralOwner, children, seen
                    )
                )
                if outlived and waiting.get(member) is handed:
                    del waiting[member]
                    handed.done.callback(True)
        except (KazooException, TimeoutError, CancelledError):
            # Cut off, or stopped: they wait on, until the next look or
            # their limit.
            return

    async def _held_by_holder(
        self,
        member: Member,
        holder: int,
        children: list[str],
        seen: dict[str, tuple[int, MemberIdentity | None]],
    ) -> bool:
        """
        Whether the session `holder`, which holds the instance's node,
        holds a member like `member` under its parent too.
        """
        zk = self.zk
        for child in children:
            path = f"{member.parent}/{child}"
            if (
                not child.startswith(member.prefix)
                or not _sequential(child)
                or path in self._claimed
            ):
                continue  # Another instance's, or ours, or no member at all.
            if child not in seen:
                try:
                    data, stat = await zk.get(path)
                except NoNodeError:
                    continue
                except NoAuthError:
                    # A squatter's we may not read: no agent's member.
                    seen[child] = (0, None)
                    continue
                seen[child] = (stat.ephemeralOwner, identity_of(data))
            if seen[child] == (holder, member.identity):
                return True
        return False

    def _forget_old_looks(self) -> None:
        # A look's listing (a tuple per member of a service: megabytes at
        # tens of thousands) is kept only while it may serve.
        if self._looked:
            now = self._clock.seconds()
            for old in [
                k for k, (at, _, _) in self._looked.items() if now - at >= LOOK_REUSE
            ]:
                del self._looked[old]

    def _look_at(self, parent: str) -> None:
        self._looking.add(parent)
        d = Deferred.fromCoroutine(self._look_for(parent))
        d.addErrback(self._bug, parent)

    async def _look_for(self, parent: str) -> None:
        """
        Look at the parent for the members of other sessions (`take_from`);
        a look that fails is made again by the next member to ask.
        """
        began = self._clock.seconds()
        try:
            found = await self._members_of(parent)
        except Exception:
            # Looked for again at the members' next retry (not at once: a
            # ZooKeeper failing every look would be asked in a loop).
            self._look_waiters.pop(parent, None)
            return
        finally:
            self._looking.discard(parent)
        previous = self._looked.get(parent)
        taken = set() if previous is None else previous[2]
        self._looked[parent] = (began, found, taken)
        for looked_at in self._look_waiters.pop(parent, ()):
            looked_at()

    async def _members_in(
        self, parent: str, session: int | None = None
    ) -> list[tuple[str, MemberIdentity | None]]:
        """
        Every node of our session (or of `session`) under `parent`, oldest
        first, and what each says it is.
        """
        owner = self.zk.session_id if session is None else session
        found = await self._members_of(parent)
        return [(path, says) for path, holder, says in found if holder == owner]

    async def _members_of(self, parent: str) -> list[_Seen]:
        """
        Every node under `parent` named as a member, oldest first, whose
        session holds it, and what each says it is.
        """
        zk = self.zk
        try:
            children = await zk.get_children(parent)
        except NoNodeError:
            return []
        found = []
        # Only a sequential node can be a member of ours: anything else
        # there (another tool's nodes, a squatter's) costs no read.
        paths = [
            f"{parent}/{child}"
            for child in sorted(filter(_sequential, children), key=_sequence)
        ]
        for start in range(0, len(paths), LOOK_READS):
            # Not those held by a member of ours, or by another it replaces.
            chunk = [
                p for p in paths[start : start + LOOK_READS] if p not in self._claimed
            ]
            found += [
                (path, owner, says)
                for path, owner, says, _ in await self._read(chunk)
                if owner
            ]
        return found

    async def _read(
        self, paths: list[str], ahead: bool = False
    ) -> list[tuple[str, int, MemberIdentity | None, int]]:
        """
        Each of `paths` read at once: whose session holds it, what it says
        it is, and its version; those gone or not readable left out.
        """
        reads = [self.zk.get(path, ahead=ahead) for path in paths]
        answers = await DeferredList(reads, consumeErrors=True)
        seen = []
        for path, (read, answer) in zip(paths, answers, strict=True):
            if not read:
                # Gone, or not ours: we can read every node we make. One
                # we may not read (a squatter's ACL) failed every look for
                # as long as it stayed, and no member was ever made.
                cast(Failure, answer).trap(NoNodeError, NoAuthError)
                continue
            data, stat = answer
            seen.append((path, stat.ephemeralOwner, identity_of(data), stat.version))
        return seen

    async def sweep(
        self, parents: Iterable[str], watched: Mapping[str, RedisInstance]
    ) -> dict[str, list[str]]:
        """
        In a process that reattached to its predecessor's session: under
        `parents` (the predecessor's and ours), the members of the session,
        one for each `watched` instance (by name) that has one (instances
        on one endpoint share its members out, oldest first); the others
        (duplicates, instances removed meanwhile, a changed service or
        form) are deleted at once.
        """
        wanted: dict[tuple[str, MemberIdentity, str], list[str]] = {}
        for name in sorted(watched):
            instance = watched[name]
            key = (
                self.parent_of(instance),
                member_identity(self.form, instance),
                member_prefix(self.form, instance),
            )
            wanted.setdefault(key, []).append(name)
        kept: dict[str, list[str]] = {}
        for parent in sorted(set(parents)):
            for path, says in await self._members_in(parent):
                names = wanted.get((parent, says, _prefix(path)), []) if says else []
                owner = next((n for n in names if n not in kept), None)
                if owner is None:
                    await self._delete_if_ours(path)
                else:
                    kept[owner] = [path]
                    self._claimed.add(path)
        return kept


async def delete_members(
    zk: ZooKeeper, parents: Iterable[str], counted: Counted
) -> None:
    """
    Delete every member of our session under `parents`: in a process that
    reattached to its predecessor's session with discovery turned off since,
    nobody keeps them, and the session lives on with each restart, so each
    stayed listed, a dead Redis's as ``ALIVE`` too, until the agent stopped.
    """
    for parent in sorted(set(parents)):
        try:
            children = await zk.get_children(parent)
        except NoNodeError:
            continue
        for child in sorted(filter(_sequential, children), key=_sequence):
            path = f"{parent}/{child}"
            try:
                stat = await zk.exists(path)
                if ours(stat, zk.session_id):
                    await counted("delete", zk.delete(path, stat.version))
            except NoNodeError:
                pass


def _prefix(path: str) -> str:
    # The member's name without ZooKeeper's counter (`sentinel.sequential`).
    parsed = split_sequential(path.rsplit("/", 1)[-1])
    return "" if parsed is None else parsed[0]


def _counter(path: str) -> int | None:
    # ZooKeeper's counter at the end of a member's name, or None.
    parsed = split_sequential(path.rsplit("/", 1)[-1])
    return None if parsed is None else parsed[1]


def _sequential(child: str) -> bool:
    # Ours end in ZooKeeper's counter after a prefix ending in "_"
    # (`documents.member_prefix`), negative once the counter wrapped.
    return split_sequential(child) is not None


def _sequence(child: str) -> tuple[tuple[bool, int], str]:
    # ZooKeeper's counter ends the name: oldest first.
    counter = _counter(child)
    return creation_order(0 if counter is None else counter), child
